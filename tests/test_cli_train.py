"""``textsr train``: training, resuming and fine-tuning from the command line."""

from __future__ import annotations

import argparse

from napari_textsr.checkpoints import read_metadata
from napari_textsr.prompts import PromptEncoder, save_encoder_state
from napari_textsr.training.trainer import TrainConfig, Trainer
from trainer_support import DATA, run_all, tiny_config


def test_cli_trains_and_resumes(tmp_path, capsys):
    from napari_textsr.cli import main

    out = tmp_path / "cli"
    common = ["--threads", "1", "--no-progress"]
    args = ["train", "--data", DATA, "--method", "pdn", "--preset", "tiny", "--steps", "3", "--batch-size", "4",
            "--patch", "8", "--val-every", "3", "--out", str(out), "--loss-weights", "kernel_temperature_every=5",
            "--blur-sigma", "1.3", "--noise", "none:0.01"]  # fmt: skip
    assert main(args + common) == 0
    text = capsys.readouterr().out
    assert "val PSNR-Y" in text and "finished at step 3/3" in text
    assert main(["train", "--out", str(out), "--resume", "--steps", "5"] + common) == 0
    meta = read_metadata(out / "model.textsr.safetensors")
    record = meta.training
    assert record.steps == 5
    assert record.degradation["blur_sigma"] == 1.3 and record.degradation["noise_gaussian_sigma"] == 0.01
    assert record.extra["losses"]["kernel_temperature_every"] == 5
    assert record.command.startswith("textsr train --data synthetic:6:0:64 --method pdn")
    assert record.extra["resume_commands"] and "psnr_y" in record.validation
    resumed = TrainConfig.from_run(out)  # options not typed on --resume keep the run's values, not the defaults
    assert (resumed.steps, resumed.batch_size, resumed.lr_patch, resumed.val_every) == (5, 4, 8, 3)
    assert main(["train", "--out", str(tmp_path / "x"), "--data", DATA]) == 1  # no --method: a clear error
    assert "--method is required" in capsys.readouterr().err


def test_cli_fine_tune_takes_the_init_checkpoints_encoder(tmp_path, capsys):
    from napari_textsr.cli import main

    # A base trained with a non-default encoder: leaving --encoder out must take it, not textsr-tiny:none.
    weights = save_encoder_state(PromptEncoder.from_spec("textsr-tiny:none", seed=1), tmp_path / "enc.safetensors")
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=1, encoder=f"textsr-tiny:{weights}")))
    args = ["train", "--init", str(base.checkpoint), "--data", DATA, "--method", "pdn", "--steps", "1",
            "--batch-size", "4", "--patch", "8", "--val-every", "1", "--out", str(tmp_path / "ft"),
            "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    meta = read_metadata(tmp_path / "ft" / "model.textsr.safetensors")
    assert meta.encoder_spec == f"textsr-tiny:{weights}"
    assert [stage["steps"] for stage in meta.training.stages()] == [1, 1]


def _train_parser() -> argparse.ArgumentParser:
    from napari_textsr.cli import build_parser

    sub = next(a for a in build_parser(["train"])._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_cli_defaults_are_train_configs(tmp_path):
    from napari_textsr.cli.train import build_config

    parser = _train_parser()
    args = parser.parse_args(["--out", str(tmp_path / "run"), "--method", "pdn", "--data", DATA])
    # Nothing typed beyond the data: the config is TrainConfig's defaults, field for field.
    assert build_config(args) == TrainConfig(method="pdn", data=[DATA], out_dir=tmp_path / "run")
    defaults = TrainConfig(method="pdn")
    assert (defaults.scale, defaults.steps, defaults.batch_size) == (4, 1000, 16)
    # Every option that sets a field shows that field's default in its help.
    shown = {a.dest: a.help for a in parser._actions if a.dest in args.config_fields}
    assert set(shown) == set(args.config_fields) and {"scale", "lr_patch", "learning_rate", "workers"} <= set(shown)
    for field, text in shown.items():
        default = getattr(defaults, field)
        if default is not None and "(default " in text:
            assert text.endswith(f"(default {default})"), (field, text)
    assert shown["learning_rate"].endswith(f"(default {defaults.learning_rate})")
    # A typed option reaches its field.
    typed = parser.parse_args(["--out", str(tmp_path / "b"), "--method", "pdn", "--data", DATA, "--patch", "12",
                               "--workers", "2", "--lr", "1e-3", "--scale", "8", "--ema", "0.999"])  # fmt: skip
    config = build_config(typed)
    assert (config.lr_patch, config.workers, config.learning_rate, config.scale) == (12, 2, 1e-3, 8)
    assert config.ema_decay == 0.999 and defaults.ema_decay == 0.0
    assert config.degradation.scale == 8 and config.steps == defaults.steps
    # The degradation presets are named, with what each draws, from the one table the trainer uses.
    from napari_textsr.training.degradations import DEFAULT_PRESET, DEGRADATION_PRESET_TITLES, DEGRADATION_PRESETS

    assert set(DEGRADATION_PRESET_TITLES) == set(DEGRADATION_PRESETS) and DEFAULT_PRESET in DEGRADATION_PRESETS
    help_text = next(a.help for a in parser._actions if a.dest == "degradations")
    for name, title in DEGRADATION_PRESET_TITLES.items():
        assert f"'{name}'{' (default)' if name == DEFAULT_PRESET else ''}: {title}" in help_text


def test_cli_init_takes_a_bundled_name_and_its_method_and_scale(tmp_path):
    """`--init pdn-x2` fine-tunes the bundled model, as `--model pdn-x2` names it elsewhere; method and scale follow it."""
    import pytest

    from napari_textsr.cli.train import build_config
    from napari_textsr.loading import list_models

    bundled = {m.name: m.path for m in list_models()}
    parser = _train_parser()
    config = build_config(parser.parse_args(["--out", str(tmp_path / "a"), "--data", DATA, "--init", "pdn-x2"]))
    assert (config.init, config.method, config.scale) == (bundled["pdn-x2"], "pdn", 2)
    assert config.degradation.scale == 2
    config = build_config(parser.parse_args(["--out", str(tmp_path / "b"), "--data", DATA, "--init", "default",
                                             "--scale", "8"]))  # fmt: skip
    assert (config.init, config.scale) == (bundled["pdn-x8"], 8)
    with pytest.raises(ValueError, match="--init nonesuch: no model 'nonesuch'"):
        build_config(parser.parse_args(["--out", str(tmp_path / "c"), "--data", DATA, "--init", "nonesuch"]))
    with pytest.raises(ValueError, match="not a random model"):
        build_config(parser.parse_args(["--out", str(tmp_path / "d"), "--data", DATA, "--init", "random:pdn:2"]))


def test_recipe_from_takes_the_last_stages_training_settings_and_typed_options_win(tmp_path):
    """`--recipe-from init` rebuilds every recorded setting of the --init checkpoint's last stage."""
    import dataclasses

    import pytest

    from napari_textsr.cli.train import build_config
    from napari_textsr.training.captions import CaptionPolicy
    from napari_textsr.training.config import RECIPE_FIELDS, recipe_of
    from napari_textsr.training.degradations import DegradationFamily

    family = dataclasses.replace(DegradationFamily.preset_family("realistic", 4), p_jpeg=0.7, p_blur=0.5)
    policy = dataclasses.replace(CaptionPolicy(), p_other_content=0.3, p_empty_keeps_blur=0.6)
    base_config = tiny_config(tmp_path / "base", steps=2, encoder="textsr-tiny:none", degradation=family,
                              captions=policy, ema_decay=0.9, warmup_steps=1, grad_clip=0.5, min_lr_ratio=0.1)  # fmt: skip
    _, base = run_all(Trainer(base_config))
    recipe = recipe_of(base.checkpoint, method="pdn", scale=4)
    assert recipe == {name: getattr(base_config, name) for name in RECIPE_FIELDS}

    parser = _train_parser()
    common = ["--data", DATA, "--init", str(base.checkpoint), "--recipe-from", "init"]
    config = build_config(parser.parse_args(["--out", str(tmp_path / "a"), *common, "--lr", "5e-4",
                                             "--degradation-option", "p_blur=0"]))  # fmt: skip
    assert config.learning_rate == 5e-4 and config.captions == policy
    assert (config.batch_size, config.lr_patch, config.steps, config.ema_decay) == (4, 8, 2, 0.9)
    # The option changes the recorded family, not its preset: p_jpeg stays 0.7.
    assert config.degradation == dataclasses.replace(family, p_blur=0.0)
    # --degradations PRESET starts again from the preset.
    config = build_config(parser.parse_args(["--out", str(tmp_path / "b"), *common, "--degradations", "realistic"]))
    assert config.degradation == DegradationFamily.preset_family("realistic", 4)

    with pytest.raises(ValueError, match="give --init too"):
        build_config(parser.parse_args(["--out", str(tmp_path / "c"), "--data", DATA, "--recipe-from", "init",
                                        "--method", "pdn"]))  # fmt: skip
    with pytest.raises(ValueError, match="is an x4 model; its recipe does not fit an x2 run"):
        build_config(parser.parse_args(["--out", str(tmp_path / "d"), "--data", DATA, "--recipe-from",
                                        str(base.checkpoint), "--scale", "2"]))  # fmt: skip
    for out in (tmp_path / "base" / "run", tmp_path / "new"):  # with or without a run to resume there
        with pytest.raises(ValueError, match="--resume continues one with its own recipe"):
            build_config(parser.parse_args(["--out", str(out), "--resume", "--recipe-from", "init"]))
    with pytest.raises(ValueError, match="--recipe-from init: .* is an x4 model; its recipe does not fit an x2 run"):
        build_config(parser.parse_args(["--out", str(tmp_path / "e"), *common, "--init-transfer", "--scale", "2"]))
    not_a_checkpoint = tmp_path / "notes.safetensors"
    not_a_checkpoint.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match="^--recipe-from .*notes.safetensors: "):
        build_config(parser.parse_args(["--out", str(tmp_path / "f"), "--data", DATA, "--recipe-from",
                                        str(not_a_checkpoint)]))  # fmt: skip
    # With --init the model, and so its prompt encoder, is the --init checkpoint's, not the recipe's.
    config = build_config(parser.parse_args(["--out", str(tmp_path / "g"), "--data", DATA, "--init",
                                             str(base.checkpoint), "--recipe-from", "pdn-x4"]))  # fmt: skip
    assert config.encoder is None and config.captions == recipe_of_bundled_x4()["captions"]


def recipe_of_bundled_x4():
    from napari_textsr.loading import list_models
    from napari_textsr.training.config import recipe_of

    return recipe_of(next(m.path for m in list_models() if m.name == "pdn-x4"))


def test_recipe_of_a_bundled_model_is_its_recorded_last_stage(tmp_path):
    from napari_textsr.checkpoints import read_metadata
    from napari_textsr.cli.train import build_config
    from napari_textsr.loading import list_models

    bundled = {m.name: m.path for m in list_models()}
    record = read_metadata(bundled["pdn-x4"]).training
    config = build_config(_train_parser().parse_args(["--out", str(tmp_path / "a"), "--data", DATA,
                                                      "--recipe-from", "pdn-x4"]))  # fmt: skip
    assert (config.method, config.scale, config.init) == ("pdn", 4, None)
    assert config.degradation.to_dict() == record.degradation
    assert config.captions.to_dict() == record.extra["captions"] and config.captions.p_empty_keeps_blur == 0.7
    assert (config.encoder, config.batch_size, config.learning_rate, config.steps, config.ema_decay) == (
        "textsr-clip-s:bundled:textsr-clip-s-words2", 16, 1e-4, 4000, 0.999)  # fmt: skip


def test_resumed_family_options_change_the_runs_family_not_its_preset(tmp_path):
    import dataclasses

    from napari_textsr.cli.train import _build_degradation
    from napari_textsr.training.degradations import DegradationFamily

    run = dataclasses.replace(DegradationFamily.preset_family("realistic", 2), p_jpeg=0.9)
    changed = _build_degradation({"degradation_option": "p_noise=0"}, run, 2, None)
    assert (changed.p_jpeg, changed.p_noise, changed.preset) == (0.9, 0.0, "realistic")


def test_gpu_stage_script_continues_each_bundled_model_with_its_own_recipe(tmp_path):
    """scripts/gpu_train.sh's commands (DRY_RUN) are valid `textsr train` commands carrying each model's recipe."""
    import os
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from napari_textsr.cli.train import build_config
    from napari_textsr.loading import list_models
    from napari_textsr.training.config import recipe_of

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_train.sh"
    env = dict(os.environ, DRY_RUN="1", CPUS="16", PYTHON=sys.executable, DATA=str(tmp_path / "data"),
               MODELS="pdn-x2 pdn-x8-jpeg", EXTRA="--model-option n_feats=48")  # fmt: skip
    done = subprocess.run(["bash", str(script), str(tmp_path / "out"), "300"], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    lines = [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 4 and all(line[:4] == [sys.executable, "-m", "napari_textsr", "train"] for line in lines)
    assert [line[line.index("--init") + 1] for line in lines] == ["pdn-x2", "pdn-x8-jpeg"] * 2
    probes, stages = lines[:2], lines[2:]  # the stages' steps come from the probes' speeds
    assert all(line[line.index("--steps") + 1] == "STEPS" for line in stages)
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    bundled = {m.name: m.path for m in list_models()}
    parser = _train_parser()
    for line in probes:
        args = parser.parse_args(line[4:])
        config = build_config(args)
        assert config.init == bundled[config.name] and config.name in ("pdn-x2", "pdn-x8-jpeg")
        recipe = recipe_of(config.init)
        for name in ("degradation", "captions", "losses", "lr_patch", "learning_rate", "ema_decay"):
            assert getattr(config, name) == recipe[name], name
        assert config.encoder is None  # the --init checkpoint's own, which its recipe names
        # 16 cores, 2 runs: one core each to train, 7 batch workers each.
        assert (config.batch_size, config.workers, config.warmup_steps, config.device) == (128, 7, 100, "cuda")
        assert config.model_overrides == {"n_feats": 48}


def test_a_fine_tune_on_another_recipe_says_what_differs_and_how_to_keep_its_own(tmp_path):
    import dataclasses

    from napari_textsr.training.captions import CaptionPolicy
    from napari_textsr.training.config import recipe_changes, recipe_of

    policy = dataclasses.replace(CaptionPolicy(), p_empty_keeps_blur=0.7)
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", steps=1, captions=policy)))
    recipe = recipe_of(base.checkpoint)
    other = tiny_config(tmp_path / "other", steps=1, init=base.checkpoint, learning_rate=1e-4)
    assert recipe_changes(other, recipe) == [
        "captions.p_empty_keeps_blur 0.7 -> 0"
    ]  # the learning rate is not behaviour
    events, _ = run_all(Trainer(other))
    notes = [e.message for e in events if e.message and "another recipe" in e.message]
    assert len(notes) == 1 and "(captions.p_empty_keeps_blur 0.7 -> 0)" in notes[0] and "--recipe-from init" in notes[0]
    same = tiny_config(tmp_path / "same", init=base.checkpoint, **recipe)  # recipe["steps"] == 1
    assert recipe_changes(same, recipe) == []
    events, _ = run_all(Trainer(same))
    assert not any(e.message and "another recipe" in e.message for e in events)
