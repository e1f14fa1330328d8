"""The training engine: losses, the event generator, cancel/resume, fine-tuning, torchrun and the CLI.

Tiny presets, the random ``textsr-tiny`` encoder and a few 64x64 synthetic
scenes at x4 with 8x8 LR patches, so that each run takes a second or two.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_textsr._generators import drive
from napari_textsr.checkpoints import load_checkpoint, read_metadata
from napari_textsr.models import create_model
from napari_textsr.models.base import SROutput
from napari_textsr.prompts import PromptEncoder, save_encoder_state
from napari_textsr.synthetic import synthetic_dataset
from napari_textsr.training import losses as L
from napari_textsr.training.data import PatchSampler
from napari_textsr.training.degradations import Degradation
from napari_textsr.training.trainer import STATE_NAME, TrainConfig, Trainer

DATA = "synthetic:6:0:64"


def tiny_config(tmp_path: Path, method: str = "pdn", **changes) -> TrainConfig:
    values = dict(
        method=method,
        scale=4,
        preset="tiny",
        data=[DATA],
        steps=4,
        batch_size=4,
        lr_patch=8,
        learning_rate=2e-3,
        val_every=2,
        checkpoint_every=100,
        preview_every=100,
        val_max_images=1,
        val_crop=64,
        out_dir=tmp_path / "run",
        num_threads=1,
    )
    values.update(changes)
    return TrainConfig(**values)


def run_all(trainer: Trainer):
    """All events and the summary of a run."""
    events = []
    summary = drive(trainer.run(), events.append)
    return events, summary


def step_events(events):
    return [e for e in events if e.losses]


def fixed_batch(scale: int = 4):
    items = synthetic_dataset(4, seed=123, size=64)
    sampler = PatchSampler(items, Degradation(scale=scale), lr_patch=8)
    return sampler.batch(8, np.random.default_rng(7))


# --------------------------------------------------------------------- losses
def test_tar_weights_from_word_attention(tiny_encoder):
    criterion = L.TGSRCriterion(L.TGSRLossWeights(), tiny_encoder, scale=4)
    prompt = tiny_encoder.encode(["red dots"])
    words = prompt.whole_words(0)
    assert [w for w, _ in words] == ["red", "dots", "<sentence>"]
    attention = torch.zeros(1, prompt.tokens.shape[1], 4, 4)
    attention[0, words[0][1][0], 0, 0] = 1.0  # "red" on one pixel
    attention[0, words[1][1][0]] = 1.0  # "dots" on all the others
    attention[0, words[1][1][0], 0, 0] = 0.0
    attention[0, words[2][1][0]] = 5.0  # the end-of-text token is not a keyword
    output = SROutput(image=torch.zeros(1, 3, 16, 16), aux={"word_attention": attention})
    weights = criterion.tar_weights(output, prompt)
    # Each word's map is scaled to mean 1, then the words are averaged.
    expected = torch.full((1, 1, 4, 4), 8 / 15)
    expected[0, 0, 0, 0] = 8.0
    assert torch.allclose(weights, expected)
    assert float(weights.mean()) == pytest.approx(1.0)
    # An empty caption has only the end-of-text token: its map is used.
    empty = tiny_encoder.encode([""])
    attention = torch.zeros(1, 1, 4, 4)
    attention[0, 0, :2] = 1.0
    weights = criterion.tar_weights(SROutput(image=torch.zeros(1, 3, 16, 16), aux={"word_attention": attention}), empty)
    assert torch.allclose(weights[0, 0, :2], torch.full((2, 4), 2.0)) and float(weights[0, 0, 2:].abs().sum()) == 0


def test_damsm_prefers_matching_captions(tiny_encoder):
    captions = ["red circle", "blue stripes", "green dots", "yellow star"]
    prompt = tiny_encoder.encode(captions)
    # Regions that are the words themselves match their own caption best.
    regions = prompt.tokens.clone()
    pooled = prompt.pooled.clone()
    matched = L.damsm_loss(regions, pooled, prompt, captions)
    shuffled = L.damsm_loss(regions.roll(1, 0), pooled.roll(1, 0), prompt, captions)
    assert float(matched) < float(shuffled)
    # Samples sharing a caption are not negatives of each other.
    same = ["red circle"] * 4
    assert float(L.damsm_loss(regions, pooled, tiny_encoder.encode(same), same)) == pytest.approx(0.0, abs=1e-5)


def test_pdn_kernel_temperature_schedule():
    criterion = L.PDNCriterion(L.PDNLossWeights())
    model = create_model("pdn", 4, "tiny", prompt_dim=32)
    criterion.prepare(model)
    assert criterion.temperature_at(0, steps_per_epoch=5) == 34.0
    assert criterion.temperature_at(49, steps_per_epoch=5) == 34.0  # epoch 9
    assert criterion.temperature_at(50, steps_per_epoch=5) == pytest.approx(34 / 3)  # epoch 10
    assert criterion.temperature_at(100, steps_per_epoch=5) == pytest.approx(34 / 9)
    criterion.schedule(model, 100, steps_per_epoch=5)
    assert float(model.dcms[0].temperature) == pytest.approx(34 / 9)
    # Fine-tuning starts from the model's (annealed) temperature, not from 34.
    again = L.PDNCriterion(L.PDNLossWeights())
    again.prepare(model)
    assert again.temperature_at(0, 5) == pytest.approx(34 / 9)


def test_loss_settings_parse_and_reject_unknown_names():
    weights = L.default_loss_weights("tgsr").replace(**L.parse_loss_overrides("tic=0, cgan=0.2,adversarial=true"))
    assert (weights.tic, weights.cgan, weights.adversarial) == (0.0, 0.2, True)
    assert L.default_loss_weights("clipsr").generator_betas() == (0.9, 0.999)
    assert L.default_loss_weights("clipsr").replace(adversarial=True).generator_betas() == (0.0, 0.9)
    with pytest.raises(ValueError, match="no loss setting"):
        L.default_loss_weights("pdn").replace(adversarial=True)
    paper = L.paper_loss_weights("tgsr")
    assert paper.adversarial and paper.consistency and paper.tic == 0.5 and paper.cgan == 0.1
    assert L.paper_loss_weights("pdn") == L.default_loss_weights("pdn")


def test_vgg_perceptual_from_a_local_file_and_fallback(tmp_path, tiny_encoder):
    from napari_textsr._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    with torch.device("meta"):  # shapes only: random values are drawn below, without VGG's slow init
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"]).state_dict().items()}
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": torch.randn(shape) * 0.05 for k, shape in shapes.items()}, path)
    criterion = L.CLIPSRCriterion(L.CLIPSRLossWeights(vgg_weights=str(path)), tiny_encoder)
    assert criterion.perceptual is not None and not criterion.notes
    hr = torch.rand(1, 3, 16, 16)
    assert float(criterion.perceptual(hr, hr)) == 0.0
    assert float(criterion.perceptual(hr.flip(-1), hr)) > 0.0
    # Without a file and without the torch hub cache the term is off, and says so.
    if L.vgg19_weights_path(None) is None:
        fallback = L.CLIPSRCriterion(L.CLIPSRLossWeights(), tiny_encoder)
        assert fallback.perceptual is None and "perceptual loss off" in fallback.notes[0]


# -------------------------------------------------------------------- training
@pytest.mark.parametrize("method", ["pdn", "tgsr", "clipsr"])
def test_short_run_lowers_the_loss(tmp_path, method, tiny_encoder):
    config = tiny_config(tmp_path, method, steps=25, val_every=25)
    events, summary = run_all(Trainer(config))
    assert summary.steps_completed == 25 and not summary.cancelled
    assert [e.step for e in step_events(events)] == list(range(1, 26))

    batch = fixed_batch()
    prompt = tiny_encoder.encode(batch.captions)
    criterion = L.build_criterion(L.default_loss_weights(method), tiny_encoder, 4)

    def loss_of(model):
        model.eval()
        with torch.no_grad():
            return float(criterion.generator_loss(model(batch.lr, prompt), batch.hr, prompt, batch.captions)[0])

    torch.manual_seed(config.seed)  # the trainer initialises a new model from the seed
    initial = create_model(method, 4, "tiny", prompt_dim=tiny_encoder.embed_dim)
    trained = load_checkpoint(summary.checkpoint, encoder=tiny_encoder).model
    assert loss_of(trained) < 0.9 * loss_of(initial)
    validation = summary.validation
    assert validation is not None and validation.n_images == 1
    assert 5 < validation.psnr < 60 and 0 < validation.ssim <= 1 and validation.psnr_bicubic > 5
    preview = events[-1].preview  # for the napari widget
    assert preview is not None and preview.lr.shape == (16, 16, 3)
    assert preview.output.shape == preview.target.shape == preview.bicubic.shape == (64, 64, 3)
    assert preview.output.dtype == np.float32 and 0 <= preview.output.min() <= preview.output.max() <= 1
    if method != "clipsr":  # (CLIP-SR's maps are per refinement iteration)
        assert preview.attention


def test_training_on_napari_layer_arrays(tmp_path):
    from napari_textsr.training.data import captioned_images_from_arrays

    rng = np.random.default_rng(0)
    grey = (rng.random((2, 48, 48)) * 65535).astype(np.uint16)  # a 2-plane uint16 stack
    rgb = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    items = captioned_images_from_arrays([grey, rgb], ["nuclei", "a photo"], names=["stack", "photo"])
    config = tiny_config(tmp_path, "pdn", data=[], steps=2)
    _, summary = run_all(Trainer(config, items=items))
    record = read_metadata(summary.checkpoint).training
    assert "<3 images from napari layers>" in record.command
    assert record.data[0].startswith("3 images given directly")


def test_cancel_leaves_a_loadable_checkpoint_and_resume_is_exact(tmp_path):
    # TGSR draws noise in its conditioning augmentation, so this also checks the RNG.
    full_events, _ = run_all(Trainer(tiny_config(tmp_path / "a", "tgsr", steps=6)))
    full = [e.losses for e in step_events(full_events)]

    config = tiny_config(tmp_path / "b", "tgsr", steps=6)
    generator = Trainer(config).run()
    first = []
    while len(first) < 3:
        event = next(generator)
        if event.losses:  # (the first event may be a message)
            first.append(event)
    generator.close()  # cancel after step 3
    assert [e.losses for e in first] == full[:3]
    meta = read_metadata(config.checkpoint_path)
    assert meta.training.steps == 3
    assert torch.load(config.state_path, weights_only=False)["step"] == 3
    loaded = load_checkpoint(config.checkpoint_path)
    assert loaded.model.method == "tgsr"

    with pytest.raises(ValueError, match="already holds a training run"):
        next(Trainer(config).run())
    resumed_config = tiny_config(tmp_path / "b", "tgsr", steps=6, resume=True)
    events, summary = run_all(Trainer(resumed_config))
    assert "resumed from step 3" in events[0].message
    assert [e.losses for e in step_events(events)] == full[3:]
    final_a = load_checkpoint(tmp_path / "a" / "run" / "model.textsr.safetensors").model.state_dict()
    final_b = load_checkpoint(summary.checkpoint).model.state_dict()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    with pytest.raises(ValueError, match="settings differ"):
        next(Trainer(tiny_config(tmp_path / "b", "tgsr", steps=8, batch_size=2, resume=True)).run())


def test_fine_tune_from_a_checkpoint(tmp_path):
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=2)))
    config = tiny_config(tmp_path / "ft", "pdn", steps=1, learning_rate=1e-12, init=base.checkpoint, encoder=None)
    events, summary = run_all(Trainer(config))
    assert "fine-tuning" in events[0].message
    init_state = load_checkpoint(base.checkpoint).model.state_dict()
    tuned = load_checkpoint(summary.checkpoint)
    for name, value in tuned.model.state_dict().items():
        assert torch.allclose(value, init_state[name], atol=1e-6), name
    record = tuned.metadata.training
    assert record.extra["init"] == str(base.checkpoint) and "--init" in record.command
    # The starting point's own recipe travels with the fine-tune.
    base_record = load_checkpoint(base.checkpoint).metadata.training
    assert record.extra["init_training"]["command"] == base_record.command
    assert record.extra["init_training"]["steps"] == 2


def test_mismatched_init_is_refused(tmp_path):
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=1)))
    with pytest.raises(ValueError, match="pdn checkpoint and this run trains tgsr"):
        next(Trainer(tiny_config(tmp_path / "m", "tgsr", init=base.checkpoint)).run())
    with pytest.raises(ValueError, match="upscales x4 and this run trains x2"):
        next(Trainer(tiny_config(tmp_path / "s", "pdn", scale=2, init=base.checkpoint)).run())
    other = PromptEncoder.from_spec("textsr-tiny:none", seed=1)
    weights = save_encoder_state(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="was trained with prompt encoder"):
        next(Trainer(tiny_config(tmp_path / "e", "pdn", init=base.checkpoint, encoder=f"textsr-tiny:{weights}")).run())


def test_adversarial_and_tic_terms_train(tmp_path, tiny_encoder):
    # TIC needs aligned towers: with the random encoder it stays off and says why ...
    random_tic = L.TGSRCriterion(L.paper_loss_weights("tgsr"), tiny_encoder, 4)
    assert random_tic.clip_features is None and "randomly initialised" in random_tic.notes[0]
    # ... and a file-based encoder counts as pretrained, so there the TIC term is on.
    weights = save_encoder_state(tiny_encoder, tmp_path / "enc.safetensors")
    encoder = f"textsr-tiny:{weights}"
    for method in ("tgsr", "clipsr"):
        losses = L.paper_loss_weights(method)
        config = tiny_config(tmp_path / method, method, steps=2, encoder=encoder, losses=losses)
        events, summary = run_all(Trainer(config))
        terms = set(step_events(events)[-1].losses)
        if method == "tgsr":
            assert {"tic", "cgan", "d_fine", "d_coarse", "tar", "l2_coarse"} <= terms
        else:
            assert {"adv", "d_hinge", "d_gp", "l1"} <= terms
        assert all(np.isfinite(v) for v in step_events(events)[-1].losses.values())
        state = torch.load(config.state_path, weights_only=False)
        assert state["discriminator"] is not None and state["discriminator_optimizer"] is not None


# ------------------------------------------------------------- CLI, torchrun
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
    assert main(["train", "--out", str(tmp_path / "x"), "--data", DATA]) == 1  # no --method: a clear error
    assert "--method is required" in capsys.readouterr().err


def test_validation_split_does_not_follow_the_batch_seed(tmp_path):
    # A rerun or fine-tune with another --seed must hold out the same images. The
    # bicubic validation PSNR depends only on which images are held out; seed 2
    # used as a split seed would hold out another image than split seed 0.
    def bicubic_val_psnr(result):
        return load_checkpoint(result.checkpoint).metadata.training.validation["psnr_bicubic_y"]

    _, first = run_all(Trainer(tiny_config(tmp_path / "a", "pdn", steps=1, seed=0)))
    _, second = run_all(Trainer(tiny_config(tmp_path / "b", "pdn", steps=1, seed=2)))
    _, third = run_all(Trainer(tiny_config(tmp_path / "c", "pdn", steps=1, seed=0, split_seed=2)))
    assert bicubic_val_psnr(first) == bicubic_val_psnr(second)
    assert bicubic_val_psnr(third) != bicubic_val_psnr(first)
    assert "split seed 2" in " ".join(load_checkpoint(third.checkpoint).metadata.training.data)
    # Runs stored before split_seed existed split with their seed; resuming keeps that.
    old = tiny_config(tmp_path / "d", "pdn", seed=3).to_dict()
    del old["split_seed"]
    assert TrainConfig.from_dict(old).split_seed == 3
    state_path = tmp_path / "a" / "run" / "train_state.pt"
    state = torch.load(state_path, weights_only=False)
    del state["config"]["split_seed"]
    torch.save(state, state_path)
    resumed = TrainConfig.from_run(tmp_path / "a" / "run")
    resumed.resume, resumed.steps = True, 2
    assert run_all(Trainer(resumed))[1].checkpoint is not None


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
    assert meta.training.extra["init_training"]["steps"] == 1


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "napari_textsr.cli", "train", "--data", DATA, "--method", "pdn", "--preset", "tiny",
               "--steps", "3", "--batch-size", "4", "--patch", "8", "--val-every", "3", "--out", str(out),
               "--device", "cpu", "--threads", "1", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("finished at step 3/3") == 1  # only rank 0 prints
    loaded = load_checkpoint(out / "model.textsr.safetensors")
    record = loaded.metadata.training
    assert record.steps == 3 and record.extra["world_size"] == 2
    assert record.command.startswith("torchrun --nproc_per_node 2 -m napari_textsr.cli train --data")
    assert (out / STATE_NAME).is_file()
    with torch.no_grad():
        lr = torch.rand(1, 3, 8, 8)
        image = loaded.model(lr, loaded.encoder.encode(["a red square"])).image
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()



def test_clipsr_training_freezes_the_encoders_vit(tmp_path):
    """The paper's CLIP-ViT is frozen: training copies it from the encoder and leaves it unchanged."""
    from napari_textsr.checkpoints import load_checkpoint
    from napari_textsr.prompts import PromptEncoder
    from napari_textsr.synthetic import synthetic_dataset
    from napari_textsr.training.trainer import TrainConfig, Trainer

    encoder = PromptEncoder.from_spec("textsr-tiny:none")
    config = TrainConfig(method="clipsr", scale=2, preset="tiny", encoder="textsr-tiny:none", steps=3,
                         batch_size=2, lr_patch=8, learning_rate=1e-2, val_every=1000, checkpoint_every=1000,
                         preview_every=1000, out_dir=tmp_path / "run", device="cpu")
    trainer = Trainer(config, items=synthetic_dataset(4, seed=0, size=48))
    events = list(trainer.run())
    assert any("copied from textsr-tiny:none and frozen" in e.message for e in events)
    model = load_checkpoint(trainer.last_checkpoint, encoder=encoder).model
    frozen = model.clip_vit.resblocks[0].state_dict()
    source = encoder.clip.visual.transformer.resblocks[0].state_dict()
    for name, value in frozen.items():
        torch.testing.assert_close(value, source[name], rtol=0, atol=0)
    # ...while the rest of the model did learn (the trainer seeds a new model's init with config.seed)
    from napari_textsr.models import create_model

    torch.manual_seed(config.seed)
    initial = create_model("clipsr", 2, "tiny", prompt_dim=encoder.embed_dim)
    assert not torch.equal(initial.out_conv.weight, model.out_conv.weight)
