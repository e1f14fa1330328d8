"""What napari itself spends on the GUI thread to insert the layers an SR run adds.

    xvfb-run -a -s "-screen 0 1280x720x24" python benchmarks/bench_layer_insertion.py

Opens a real napari window (1280x720), inserts a ``--size``² RGB uint8 output
layer, then ``--maps`` hidden float32 map layers of a quarter the side (on a
layer scale of 4, linear interpolation, additive blending: how the SR widget adds
attention maps), and prints for each: building the layer object, napari's
insertion into the layer list (layer controls and vispy visuals, on the GUI
thread) and the first paint. With ``--plain-first``, the first map is added
with nearest interpolation and translucent blending instead, to tell a cost of
those settings from a cost of being the first map. Not a test: the figures
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the RGB output layer (px)")
    parser.add_argument("--maps", type=int, default=5, help="number of map layers after it")
    parser.add_argument("--plain-first", action="store_true", help="first map: nearest, translucent")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        parser.error("needs a display with OpenGL: run it under xvfb-run")

    import napari
    import numpy as np
    from napari.layers import Image
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="layer insertion")
    viewer.window._qt_window.resize(1280, 720)
    app = QApplication.instance()

    def settle() -> None:
        for _ in range(20):
            app.processEvents()
            time.sleep(0.01)

    def insert(name: str, build) -> None:
        t0 = time.perf_counter()
        layer = build()
        t1 = time.perf_counter()
        viewer.layers.append(layer)
        t2 = time.perf_counter()
        app.processEvents()
        t3 = time.perf_counter()
        print(
            f"{name}: build {1e3 * (t1 - t0):.0f} ms, insert {1e3 * (t2 - t1):.0f} ms, paint {1e3 * (t3 - t2):.0f} ms"
        )
        settle()

    rng = np.random.default_rng(0)
    settle()
    output = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    insert("output (RGB)", lambda: Image(output, rgb=True, name="output", contrast_limits=(0, 255)))
    side = args.size // 4
    for i in range(args.maps):
        data = rng.random((side, side)).astype(np.float32)
        plain = args.plain_first and i == 0
        insert(
            f"map {i}" + (" (plain)" if plain else ""),
            lambda data=data, plain=plain, i=i: Image(
                data,
                name=f"map {i}",
                colormap="magma",
                blending="translucent" if plain else "additive",
                interpolation2d="nearest" if plain else "linear",
                opacity=0.6,
                visible=False,
                scale=(4, 4),
                translate=(1.5, 1.5),
                contrast_limits=(0, 1),
            ),
        )
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, napari {napari.__version__}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
