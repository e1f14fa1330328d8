"""The README's scripted napari examples run as written; ``textsr demo`` without a display says what to do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    [block] = [b for b in blocks if containing in b]
    return block


def test_readme_headless_example_runs_without_a_display():
    from napari_textsr.loading import list_models

    if not any(m.scale == 4 for m in list_models()):
        pytest.skip("needs a bundled x4 model")
    code = readme_block("ViewerModel()")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the 128 x 128 sample at x4, with the bundled default x4 model (PDN)
    assert done.stdout.strip() == "nuclei (low-res) x4 (512, 512) pdn-x4"


def test_demo_without_a_display_points_at_headless(monkeypatch, capsys):
    from napari_textsr.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "textsr demo --headless out/" in err and "xvfb-run" in err
