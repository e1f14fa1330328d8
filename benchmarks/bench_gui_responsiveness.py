"""How responsive napari stays while the plugin works: the largest gap between GUI-thread ticks.

    xvfb-run -a -s "-screen 0 1280x720x24" python benchmarks/bench_gui_responsiveness.py
    xvfb-run -a -s "-screen 0 1280x720x24" python benchmarks/bench_gui_responsiveness.py --model random:pdn:4:tiny --size 256

Opens a real napari window (1280x720) with both dock widgets, starts a 50 ms
QTimer on the GUI thread and records when each tick arrives. Then, as a user
would: super-resolves a ``--size``² RGB image (default 512², with the bundled
x4 model: 2048² output plus its attention maps), and trains a tiny PDN for
``--steps`` steps with the default (bundled) prompt encoder. For each phase it
prints the largest gap between ticks (50 ms = never blocked), the number of
gaps over 0.5 s and the mean tick interval. Not a test: the figures depend on
the machine and its load (the docs quote one run with its machine).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch  # noqa: F401  (before Qt)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK_MS = 50


def thread_stack(dump: str, ident: int | None) -> list[tuple[str, int, str]]:
    """Thread ``ident``'s frames (file, line, function), innermost last, from a
    ``faulthandler.dump_traceback(all_threads=True)`` text (which lists innermost first)."""
    frames: list[tuple[str, int, str]] = []
    inside = False
    for line in dump.splitlines():
        if line.startswith(("Thread 0x", "Current thread 0x")):
            inside = ident is not None and int(line.split("0x", 1)[1].split()[0], 16) == ident
        elif inside and line.startswith('  File "'):
            path, rest = line[len('  File "') :].split('", line ', 1)
            number, _, name = rest.partition(" in ")
            frames.append((path, int(number), name.strip()))
    return frames[::-1]


class StackSampler:
    """Samples the GUI thread's Python stack every ``interval`` s from a daemon thread (``--why``).

    A sample is (time, frames innermost last). A gap with no samples means the
    GUI thread held the GIL in native code the whole time.

    The stack is read with ``faulthandler.dump_traceback``, which walks the
    frames in C and keeps no reference to them. ``sys._current_frames()`` did:
    a sampled frame kept its locals alive, among them napari's icon-painting
    ``QPainter``, which then ended in the sampler thread ("QBackingStore::endPaint()
    called with active painter" in 22 of 32 runs with ``--why``, none in 3 without,
    and two segmentation faults in napari's layer-icon painting).
    """

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        self.interval = interval
        self.samples: list[tuple[float, list[tuple[str, int, str]]]] = []
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import tempfile

        with tempfile.TemporaryFile() as dump:
            fd = dump.fileno()
            while not self._stop.wait(self.interval):
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                faulthandler.dump_traceback(fd, all_threads=True)
                os.lseek(fd, 0, os.SEEK_SET)
                stack = thread_stack(os.read(fd, 1 << 20).decode(errors="replace"), self._main)
                if stack:
                    self.samples.append((time.perf_counter(), stack))

    def explain(self, begin: float, end: float, top: int = 3) -> str:
        """The most frequent innermost plugin/napari/vispy frames sampled between ``begin`` and ``end``."""
        from collections import Counter

        counts: Counter[str] = Counter()
        n = 0
        for when, stack in self.samples:
            if begin <= when <= end:
                n += 1
                line = " <- ".join(f"{Path(f[0]).name}:{f[1]} {f[2]}" for f in reversed(stack[-4:]))
                counts[line] += 1
        if not n:
            return "    no samples (native code holding the GIL)"
        return "\n".join(f"    {c}/{n} samples: {line}" for line, c in counts.most_common(top))


class GcRecorder:
    """Python's garbage-collection pauses (``gc.callbacks``): (generation, start, end) each (``--why``)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((int(info["generation"]), self._start, time.perf_counter()))

    def within(self, begin: float, end: float, longer_than: float = 0.01) -> list[str]:
        return [
            f"gen {g} {1000 * (b - a):.0f} ms" for g, a, b in self.pauses if begin <= a <= end and b - a > longer_than
        ]


@dataclass
class GapRecorder:
    """Arrival times of a 50 ms timer's ticks on the GUI thread, split into named phases."""

    ticks: list[float] = field(default_factory=list)
    phases: list[tuple[str, int, int]] = field(default_factory=list)

    def tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def phase(self, name: str, start: int) -> None:
        self.phases.append((name, start, len(self.ticks)))

    def report(self, name: str, start: int, end: int) -> str:
        times = self.ticks[max(start - 1, 0) : end]
        gaps = [b - a for a, b in zip(times, times[1:])]
        if not gaps:
            return f"{name}: no ticks"
        worst = max(gaps)
        over = sum(g > 0.5 for g in gaps)
        mean = sum(gaps) / len(gaps)
        return (
            f"{name}: largest GUI-thread gap {worst * 1000:.0f} ms; "
            f"{over} of {len(gaps)} gaps > 500 ms; mean tick {mean * 1000:.0f} ms"
        )

    def long_gaps(self, start: int, end: int, threshold: float) -> list[tuple[float, float]]:
        times = self.ticks[max(start - 1, 0) : end]
        return [(a, b) for a, b in zip(times, times[1:]) if b - a > threshold]


def wait(app, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        app.processEvents()
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="SR model spec (default: the bundled x4 default)")
    parser.add_argument("--size", type=int, default=512, help="side of the RGB input image (px)")
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument(
        "--why",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also print where the GUI thread was during every gap longer than this (stack samples)",
    )
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash in Qt or vispy prints every thread's Python stack
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        parser.error("needs a display with OpenGL: run it under xvfb-run")

    os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="textsr-bench-"), "settings.yaml")
    import napari
    import numpy as np
    from napari.settings import get_settings
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_textsr.napari.model_store import ModelStore, default_model_name
    from napari_textsr.napari.sr_widget import SuperResolutionWidget
    from napari_textsr.napari.train_widget import TrainingWidget

    get_settings().application.gui_notification_level = "none"
    viewer = napari.Viewer(title="napari-textsr responsiveness")
    viewer.window._qt_window.resize(1280, 720)
    app = QApplication.instance()
    store = ModelStore()
    sr = SuperResolutionWidget(viewer, store=store)
    train = TrainingWidget(viewer, store=store)
    viewer.window.add_dock_widget(sr, name="Text-guided super-resolution")
    viewer.window.add_dock_widget(train, name="Train / fine-tune")

    rng = np.random.default_rng(0)
    y, x = np.mgrid[: args.size, : args.size]
    image = ((np.sin(x / 7.0) * np.cos(y / 11.0) * 0.4 + 0.5)[..., None] * [200, 150, 90]).astype(np.uint8)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    layer = viewer.add_image(image, name="photo", rgb=True, metadata={"caption": "a striped wooden fence"})
    spec = default_model_name(4) if args.model == "default" else args.model
    sr.select_model(spec)
    wait(app, lambda: sr.model_info.text() not in ("", "loading…"), 600)
    sr.select_layer(layer)
    sr.device_combo.setCurrentText("cpu")
    sr.attention_check.setChecked(True)

    recorder = GapRecorder()
    inserts: list[tuple[str, float, float]] = []  # (layer, start, end) of each insertion into the layer list
    viewer.layers.events.inserting.connect(lambda event: inserts.append(("", time.perf_counter(), 0.0)))
    viewer.layers.events.inserted.connect(
        lambda event: inserts.__setitem__(-1, (event.value.name, inserts[-1][1], time.perf_counter()))
    )
    sampler = StackSampler() if args.why else None
    collections = GcRecorder()
    if sampler is not None:
        import gc

        gc.callbacks.append(collections)
        sampler.start()
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(recorder.tick)
    timer.start()
    wait(app, lambda: len(recorder.ticks) > 5, 30)

    start = len(recorder.ticks)
    t0 = time.perf_counter()
    sr.run_button.click()
    wait(app, lambda: not sr.is_running, 1800)
    sr_seconds = time.perf_counter() - t0
    recorder.phase("super-resolution (run + adding its layers)", start)
    n_maps = len(sr.last_layers) - 1
    out_shape = sr.last_layers[0].data.shape if sr.last_layers else None
    for _ in range(20):  # let napari draw the new layers
        app.processEvents()
        time.sleep(0.01)

    train.use_layer(layer, "a striped wooden fence")
    train.method_combo.setCurrentIndex(train.method_combo.findData("pdn"))
    train.preset_combo.setCurrentText("tiny")
    train.scale_combo.setCurrentIndex(train.scale_combo.findData(4))
    train.steps_spin.setValue(args.steps)
    train.batch_spin.setValue(4)
    train.patch_spin.setValue(16)
    train.preview_spin.setValue(max(1, args.steps // 4))
    train.device_combo.setCurrentText("cpu")
    train.out_edit.setText(tempfile.mkdtemp(prefix="textsr-bench-run-"))
    start = len(recorder.ticks)
    t0 = time.perf_counter()
    train.start_button.click()
    wait(app, lambda: not train.is_running, 1800)
    train_seconds = time.perf_counter() - t0
    recorder.phase("training", start)
    timer.stop()

    print(
        f"machine: {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, Qt {os.environ.get('QT_QPA_PLATFORM', 'xcb')}"
    )
    print(f"SR: {args.size}x{args.size} RGB with {spec} -> {out_shape} + {n_maps} map layers in {sr_seconds:.1f} s")
    print(f"training: {args.steps} steps of tiny PDN x4 ({train.encoder_combo.currentData()}) in {train_seconds:.1f} s")
    for name, begin, end in recorder.phases:
        print(recorder.report(name, begin, end))
        if sampler is not None:
            for a, b in recorder.long_gaps(begin, end, args.why):
                print(f"  gap of {(b - a) * 1000:.0f} ms at {a - recorder.ticks[0]:.1f} s:")
                within = [f"{name} {1000 * (e - s):.0f} ms" for name, s, e in inserts if a <= s <= b]
                if within:
                    print(f"    layers inserted in it (napari's own insertion time): {'; '.join(within)}")
                pauses = collections.within(a, b)
                if pauses:
                    print(f"    garbage collections in it (> 10 ms): {'; '.join(pauses)}")
                print(sampler.explain(a, b))
    if sampler is not None:
        sampler.stop()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
