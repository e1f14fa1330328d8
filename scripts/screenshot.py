"""Screenshots of the plugin at work in a 1280x720 napari window: both docks, after a run each.

    xvfb-run -a -s "-screen 0 1280x720x24" python scripts/screenshot.py
    xvfb-run -a -s "-screen 0 1280x720x24" python scripts/screenshot.py --model path/to/model.textsr.safetensors

Opens napari at 1280x720 (a laptop screen), loads a sample through the
plugin's manifest, docks the "Text-guided super-resolution" and "Train /
fine-tune" widgets, runs super-resolution the way a user would (caption
pre-filled from the sample's metadata, Run clicked) and saves the window to
``docs/screenshot.png``: the canvas in grid mode shows the input, the output,
the first attention map and the consistency map, all in the same world
coordinates. Then it trains a tiny PDN for ``--train-steps`` steps on the
sample (Start clicked), shows the curves and previews and saves
``docs/screenshot-train.png``.
Without ``--model`` it uses the first bundled model, or an untrained
``random:pdn:4:tiny`` if none is bundled (the status line then says UNTRAINED).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (before Qt)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's plugin, not another installed copy


def default_model() -> str:
    from napari_textsr.inference import list_models

    bundled = [m for m in list_models() if m.scale == 4]
    return bundled[0].name if bundled else "random:pdn:4:tiny"


def wait(app, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", default="fluorescence", choices=["fluorescence", "photograph", "text"])
    parser.add_argument("--model", default=None, help="model spec (default: a bundled x4 model, else untrained PDN x4)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--train-out", default=str(ROOT / "docs" / "screenshot-train.png"))
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--size", default="1280x720", help="window size WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        parser.error("needs a display with OpenGL: run it under xvfb-run")

    # Fresh napari settings (default layout), kept out of the user's own, and
    # no toast notifications over the canvas (e.g. napari's PyQt5 notice).
    import tempfile

    settings_dir = tempfile.mkdtemp(prefix="napari-textsr-screenshot-")
    os.environ["NAPARI_CONFIG"] = os.path.join(settings_dir, "settings.yaml")
    import warnings

    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    get_settings().application.gui_notification_level = "none"
    warnings.filterwarnings("ignore", message="napari support for the PyQt5 backend")
    viewer = napari.Viewer(title="napari-textsr")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    app = QApplication.instance()

    [input_layer] = viewer.open_sample("napari-textsr", args.sample)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-textsr", "Text-guided super-resolution")
    train_dock, train = viewer.window.add_plugin_dock_widget("napari-textsr", "Train / fine-tune")
    widget.select_layer(input_layer)
    widget.select_model(args.model or default_model())
    wait(app, lambda: widget.model_info.text() not in ("", "loading…"), 300)
    widget.device_combo.setCurrentText("auto")
    widget.consistency_check.setChecked(True)
    widget.run_button.click()
    wait(app, lambda: not widget.is_running, 600)
    if not widget.last_layers:
        raise SystemExit(f"the run failed: {widget.status_label.text()}")
    output, *maps = widget.last_layers

    # Grid: input, output, first attention map, consistency map; the other maps are removed.
    consistency = [m for m in maps if m.name.endswith(" consistency")]
    attention = [m for m in maps if m not in consistency]
    shown = [input_layer, output] + attention[:1] + consistency
    for layer in list(viewer.layers):
        if layer not in shown:
            viewer.layers.remove(layer)
    for layer in shown:
        layer.visible = True
        if layer in maps:
            layer.blending = "translucent"  # alone in its grid cell
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9 / older
    grid.enabled = True
    grid.shape = (2, 2) if len(shown) > 3 else (1, len(shown))
    grid.spacing = 0.03
    viewer.layers.selection.active = output
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)

    def save(path: str) -> None:
        for toast in app.allWidgets():  # notifications would cover the canvas
            if type(toast).__name__ == "NapariQtNotification":
                toast.close()
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(out), canvas_only=False, flash=False)

    from qtpy.QtCore import Qt

    qt_window = viewer.window._qt_window
    qt_window.resizeDocks([dock, train_dock], [height - 230, 150], Qt.Vertical)  # the SR dock in front
    save(args.out)
    print(f"{args.out}: {widget.status_label.text()}")

    if args.train_steps > 0:
        train.use_layer(input_layer)  # its caption from the metadata
        train.method_combo.setCurrentIndex(train.method_combo.findData("pdn"))
        train.preset_combo.setCurrentText("tiny")
        train.scale_combo.setCurrentIndex(train.scale_combo.findData(4))
        train.steps_spin.setValue(args.train_steps)
        train.batch_spin.setValue(4)
        train.patch_spin.setValue(16)
        train.preview_spin.setValue(max(1, args.train_steps // 3))
        train.out_edit.setText(tempfile.mkdtemp(prefix="napari-textsr-screenshot-run-"))
        train.start_button.click()
        wait(app, lambda: not train.is_running, 1800)
        train.sections["Preview"].set_collapsed(False)
        qt_window.resizeDocks([dock, train_dock], [150, height - 230], Qt.Vertical)  # now the Train dock
        app.processEvents()
        train.scroll.ensureWidgetVisible(train.sections["Curves"])
        train.scroll.ensureWidgetVisible(train.preview_caption)  # the loss curve and the previews below it
        save(args.train_out)
        print(f"{args.train_out}: {train.status_label.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
