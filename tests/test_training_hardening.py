"""Training runs as an attacker or a cluster scheduler sees them (issue 11, rows 1 and 7-11):
no code runs from a state file, one live run per folder, SIGTERM saves, bad inputs are one-line errors,
and nothing already saved is damaged."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from napari_textsr.checkpoints import load_checkpoint, read_metadata
from napari_textsr.cli import main
from napari_textsr.durable import atomic_write, load_torch_state
from napari_textsr.models import model_from_config
from napari_textsr.synthetic import synthetic_dataset
from napari_textsr.training.data import DataError, load_captioned_folder
from napari_textsr.training.pretrain_encoder import PretrainConfig, iter_pretrain, train_state_path
from napari_textsr.training.runlock import RunLock, RunLockedError
from napari_textsr.training.trainer import STATE_NAME, TrainConfig, Trainer, _load_state
from trainer_support import run_all

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "training_runs").glob("*/train_state.pt"))
TRAIN = ["train", "--data", "synthetic:6:0:64", "--method", "pdn", "--preset", "tiny", "--batch-size", "4",
         "--patch", "8", "--threads", "1", "--no-progress"]  # fmt: skip


class _RunsCode:
    """A pickle payload that creates ``marker`` when unpickled (what an attacker would put in a state file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _crafted_state(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "napari-textsr-train-state", "version": 1, "payload": _RunsCode(marker)}, path)
    return path


# ---------------------------------------------------------------- row 1
def test_a_crafted_train_state_never_runs_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    _crafted_state(out / STATE_NAME, marker)
    with pytest.raises(ValueError, match="cannot be read as a training state.*UnpicklingError"):
        TrainConfig.from_run(out)
    assert main(["train", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("textsr train: error: ") and "cannot be read as a training state" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    # pretrain-encoder --resume reads its state the same way
    weights = tmp_path / "enc.safetensors"
    _crafted_state(train_state_path(weights), marker)
    config = PretrainConfig(arch="textsr-tiny", out=weights, steps=2, batch_size=4, resume=True, num_threads=1)
    items = [(item, "synthetic") for item in synthetic_dataset(6, seed=0, size=64)]
    with pytest.raises(ValueError, match="cannot be read as a training state"):
        list(iter_pretrain(config, items))
    assert not marker.exists()


@pytest.mark.parametrize("state_path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_shipped_train_states_load_under_the_safe_loader(state_path):
    state = _load_state(state_path)
    config = TrainConfig.from_dict(state["config"])
    model = model_from_config(config.method, state["model_config"])
    model.load_state_dict(state["model"])  # strict: every tensor present, every shape right
    moments = [t for entry in state["optimizer"]["state"].values() for t in entry.values() if torch.is_tensor(t)]
    assert moments and all(bool(torch.isfinite(t).all()) for t in moments)
    assert state["step"] > 0 and len(state["loss_history"]) == state["step"]


@pytest.mark.slow
def test_a_shipped_run_resumes_one_more_step(tmp_path):
    """training_runs/tgsr-x8-v2 continues from step 3000 (on synthetic images: its photographs are not in the repo)."""
    run = tmp_path / "tgsr-x8-v2"
    shutil.copytree(REPO / "training_runs" / "tgsr-x8-v2", run)
    config = TrainConfig.from_run(run)
    config.resume, config.steps, config.num_threads, config.val_max_images, config.val_crop = True, 3001, 1, 1, 64
    events, _ = run_all(Trainer(config, items=synthetic_dataset(4, seed=0, size=256)))
    assert events[0].message.endswith("resumed from step 3000") and events[-1].step == 3001
    assert _load_state(run / STATE_NAME)["step"] == 3001
    assert read_metadata(run / "model.textsr.safetensors").training.steps == 3001


# ---------------------------------------------------------------- row 7
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_run_holds_its_folder_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TRAIN + ["--steps", "1", "--out", str(out)]) == 0
    saved = (out / STATE_NAME).read_bytes()
    holder = RunLock.for_folder(out, "textsr train --out run")
    holder.acquire()  # a live run: this very process
    try:
        for args in (
            TRAIN + ["--steps", "2", "--out", str(out), "--overwrite"],
            ["train", "--out", str(out), "--resume", "--steps", "2"],
        ):
            assert main(args) == 1
            err = capsys.readouterr().err
            assert f"is in use by another training run: pid {os.getpid()} on " in err and "started 20" in err
            assert "(textsr train --out run)" in err
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock.for_folder(out).acquire()
        assert (out / STATE_NAME).read_bytes() == saved  # the live run's files are untouched
    finally:
        holder.release()
    assert not (out / "run.lock").exists()
    # A lock left by a killed run (its pid is gone) is stale: the next run takes it over.
    stale = RunLock.for_folder(out)
    stale.path.write_text(
        f'{{"pid": {_dead_pid()}, "host": "{os.uname().nodename}", "started": "2020-01-01T00:00:00+00:00"}}'
    )
    assert main(["train", "--out", str(out), "--resume", "--steps", "2", "--threads", "1", "--no-progress"]) == 0
    assert not stale.path.exists() and _load_state(out / STATE_NAME)["step"] == 2


def test_pretrain_encoder_locks_its_output(tmp_path):
    weights = tmp_path / "enc.safetensors"
    items = [(item, "synthetic") for item in synthetic_dataset(6, seed=0, size=64)]
    with RunLock(weights.with_name(weights.name + ".lock")):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            list(iter_pretrain(PretrainConfig(arch="textsr-tiny", out=weights, steps=1, batch_size=4), items))
    assert not weights.exists()


def test_temporary_files_are_unique_per_writer(tmp_path):
    target = tmp_path / "model.textsr.safetensors"
    with atomic_write(target) as first, atomic_write(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("one")
        second.write_text("two")
    assert target.read_text() == "one"  # the last to finish wins, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


# ---------------------------------------------------------------- row 8
def _send_sigterm_once_handled(delay: float = 0.3) -> threading.Thread:
    """SIGTERM to this process as soon as a handler is installed (never to pytest's default handler)."""

    def send():
        deadline = time.monotonic() + 60
        while signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if callable(signal.getsignal(signal.SIGTERM)):
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM on this platform")
def test_sigterm_saves_a_checkpoint_like_ctrl_c(tmp_path, capsys):
    out = tmp_path / "run"
    thread = _send_sigterm_once_handled()
    code = main(
        TRAIN + ["--steps", "100000", "--checkpoint-every", "100000", "--val-every", "100000", "--out", str(out)]
    )
    thread.join()
    captured = capsys.readouterr()
    assert code == 130 and "SIGTERM: stopping after this step and saving" in captured.err
    step = _load_state(out / STATE_NAME)["step"]
    assert 1 <= step < 100000 and f"stopped at step {step}/100000" in captured.out
    assert load_checkpoint(out / "model.textsr.safetensors").metadata.training.steps == step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM on this platform")
def test_sigterm_stops_pretrain_encoder_with_a_resumable_state(tmp_path, capsys):
    weights = tmp_path / "enc.safetensors"
    thread = _send_sigterm_once_handled()
    code = main(["pretrain-encoder", "--synthetic", "12", "--synthetic-size", "64", "--arch", "textsr-tiny",
                 "--steps", "100000", "--checkpoint-every", "100000", "--batch-size", "4", "--out", str(weights),
                 "--no-progress", "--threads", "1"])  # fmt: skip
    thread.join()
    assert code == 130
    step = load_torch_state(train_state_path(weights))["step"]
    assert 1 <= step < 100000 and f"stopped at step {step}/100000" in capsys.readouterr().out
    assert weights.is_file() and not weights.with_name(weights.name + ".lock").exists()


# ---------------------------------------------------------------- row 9
@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            'a.png,"close-up of a cat\nb.png,a dog\nc.png,a bird\n',
            r"line 2: malformed CSV \(unexpected end of data; an unterminated quote\?\)",
        ),
        ('a.png,a cat\nb.png,"two\nlines"\nc.png,a bird\n', "line 3: a quoted field runs over lines 3-4"),
        ('a.png,a cat\nb.png,"a dog" brown\n', r"line 3: malformed CSV \(',' expected after '\"'\)"),
        ("a.png,a cat\nb.png,a dog, brown\n", r"line 3: expected 2 fields \(file,caption\), got 3"),
    ],
)
def test_malformed_captions_csv_names_the_line(tmp_path, rows, message):
    from PIL import Image

    for name in "abc":
        Image.new("RGB", (16, 16)).save(tmp_path / f"{name}.png")
    (tmp_path / "captions.csv").write_text("file,caption\n" + rows)
    with pytest.raises(DataError, match=message):
        load_captioned_folder(tmp_path)


# ---------------------------------------------------------------- row 10
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x02}q\x00."])
def test_corrupt_or_empty_state_is_a_one_line_error(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / STATE_NAME).write_bytes(content)
    assert main(["train", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"textsr train: error: {out / STATE_NAME} cannot be read as a training state")
    assert err.count("\n") == 1
    assert (out / STATE_NAME).read_bytes() == content  # not touched


def test_disk_full_while_saving_keeps_what_was_saved(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(TRAIN + ["--steps", "2", "--checkpoint-every", "1", "--out", str(out)]) == 0
    state_before = (out / STATE_NAME).read_bytes()
    model_before = (out / "model.textsr.safetensors").read_bytes()
    capsys.readouterr()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # part of the data reached the disk...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then it filled up

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--threads", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == (
        f"textsr train: error: [Errno 28] cannot save the checkpoint of step 3 in {out}: No space left on device; "
        "the checkpoint saved before (step 2) is intact"
    )
    assert (out / STATE_NAME).read_bytes() == state_before
    assert (out / "model.textsr.safetensors").read_bytes() == model_before
    assert sorted(p.name for p in out.iterdir()) == ["model.textsr.safetensors", STATE_NAME]  # no temp, no lock


def test_out_is_a_file_and_unknown_device_are_one_line_errors(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert main(TRAIN + ["--steps", "1", "--out", str(a_file)]) == 1
    assert (
        capsys.readouterr().err
        == f"textsr train: error: --out {a_file} is a file; give a folder for the checkpoint and training state\n"
    )
    assert a_file.read_text() == "keep me"
    assert main(TRAIN + ["--steps", "1", "--out", str(tmp_path / "run"), "--device", "gpu"]) == 1
    assert capsys.readouterr().err == "textsr train: error: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps\n"
    folder = tmp_path / "encdir"
    (folder / "dir.safetensors").mkdir(parents=True)
    assert main(["pretrain-encoder", "--synthetic", "8", "--arch", "textsr-tiny", "--out", str(folder / "dir.safetensors"),
                 "--steps", "1", "--no-progress"]) == 1  # fmt: skip
    assert "is a folder; give the weights file to write" in capsys.readouterr().err


# ---------------------------------------------------------------- row 11
def test_a_fresh_run_does_not_overwrite_a_model_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TRAIN + ["--steps", "1", "--out", str(out)]) == 0
    first = (out / "model.textsr.safetensors").read_bytes()
    capsys.readouterr()
    assert main(TRAIN + ["--steps", "1", "--out", str(out), "--seed", "5"]) == 1
    assert (
        "already holds a training run (train_state.pt); resume it (--resume / resume=True), replace it (--overwrite)"
        in capsys.readouterr().err
    )
    (out / STATE_NAME).unlink()  # only the model is left: still refused
    assert main(TRAIN + ["--steps", "1", "--out", str(out), "--seed", "5"]) == 1
    assert "already holds a model (model.textsr.safetensors)" in capsys.readouterr().err
    assert (out / "model.textsr.safetensors").read_bytes() == first
    assert main(TRAIN + ["--steps", "1", "--out", str(out), "--seed", "5", "--overwrite"]) == 0
    assert (out / "model.textsr.safetensors").read_bytes() != first
    assert TrainConfig.from_run(out).seed == 5
