"""The training loop: short runs of every method, napari arrays, cancel and exact resume, fine-tuning, adversarial terms, splits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_textsr.checkpoints import load_checkpoint, read_metadata
from napari_textsr.models import create_model
from napari_textsr.prompts import PromptEncoder, save_encoder_state
from napari_textsr.training import losses as L
from napari_textsr.training.trainer import TrainConfig, Trainer
from trainer_support import fixed_batch, run_all, step_events, tiny_config


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


def test_resume_is_bit_exact_wherever_the_run_was_cut(tmp_path):
    # Composed captions (content plus degradation words) once came from the
    # encoder's in-memory cache when an earlier step had encoded them in another
    # batch: a run resumed after step 1, 2 or 4 of 6 ended 1e-8 away from the
    # uninterrupted one (after step 3 it happened to match).
    _, full = run_all(Trainer(tiny_config(tmp_path / "full", "pdn", steps=6)))
    expected = load_checkpoint(full.checkpoint).model.state_dict()
    for cut in (1, 2, 4, 5):
        generator = Trainer(tiny_config(tmp_path / f"cut{cut}", "pdn", steps=6)).run()
        done = 0
        while done < cut:
            done += bool(next(generator).losses)
        generator.close()
        _, resumed = run_all(Trainer(tiny_config(tmp_path / f"cut{cut}", "pdn", steps=6, resume=True)))
        got = load_checkpoint(resumed.checkpoint).model.state_dict()
        assert all(torch.equal(expected[k], got[k]) for k in expected), f"cut after step {cut}"


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
    stages = record.stages()
    assert [stage["steps"] for stage in stages] == [1, 2]
    assert stages[1]["command"] == base_record.command


def test_mismatched_init_is_refused(tmp_path):
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=1)))
    with pytest.raises(ValueError, match="pdn checkpoint and this run trains tgsr"):
        next(Trainer(tiny_config(tmp_path / "m", "tgsr", init=base.checkpoint)).run())
    with pytest.raises(ValueError, match="upscales x4 and this run trains x2"):
        next(Trainer(tiny_config(tmp_path / "s", "pdn", scale=2, init=base.checkpoint)).run())


def test_fine_tune_onto_another_encoder(tmp_path):
    """--init with an explicit --encoder of the same width keeps every weight and trains against the new encoder."""
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=1)))
    other = PromptEncoder.from_spec("textsr-tiny:none", seed=1)
    weights = save_encoder_state(other, tmp_path / "other.safetensors")
    config = tiny_config(
        tmp_path / "e", "pdn", steps=1, learning_rate=1e-12, init=base.checkpoint, encoder=f"textsr-tiny:{weights}"
    )
    events, summary = run_all(Trainer(config))
    assert "switching prompt encoder" in events[0].message
    tuned = load_checkpoint(summary.checkpoint)
    assert tuned.metadata.encoder.matches(other.identity())
    assert not tuned.metadata.encoder.matches(load_checkpoint(base.checkpoint).metadata.encoder)
    start = load_checkpoint(base.checkpoint).model.state_dict()
    assert all(torch.allclose(v, start[k], atol=1e-6) for k, v in tuned.model.state_dict().items())
    assert [stage["steps"] for stage in tuned.metadata.training.stages()] == [1, 1]


def test_fine_tune_onto_an_encoder_of_another_width_needs_transfer(tmp_path, monkeypatch):
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=1)))
    meta = load_checkpoint(base.checkpoint).metadata
    wider = dataclasses.replace(meta.encoder, embed_dim=meta.encoder.embed_dim * 2, fingerprint="0" * 16)
    monkeypatch.setattr(
        Trainer, "_check_init", lambda self, path: dataclasses.replace(meta, encoder=wider), raising=True
    )
    other = PromptEncoder.from_spec("textsr-tiny:none", seed=1)
    weights = save_encoder_state(other, tmp_path / "other.safetensors")
    config = tiny_config(tmp_path / "w", "pdn", init=base.checkpoint, encoder=f"textsr-tiny:{weights}")
    with pytest.raises(ValueError, match="embedding width differs.*--init-transfer"):
        next(Trainer(config).run())


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


def test_clipsr_training_freezes_the_encoders_vit(tmp_path):
    """The paper's CLIP-ViT is frozen: training copies it from the encoder and leaves it unchanged."""
    from napari_textsr.checkpoints import load_checkpoint
    from napari_textsr.prompts import PromptEncoder
    from napari_textsr.synthetic import synthetic_dataset
    from napari_textsr.training.trainer import TrainConfig, Trainer

    encoder = PromptEncoder.from_spec("textsr-tiny:none")
    config = TrainConfig(
        method="clipsr",
        scale=2,
        preset="tiny",
        encoder="textsr-tiny:none",
        steps=3,
        batch_size=2,
        lr_patch=8,
        learning_rate=1e-2,
        val_every=1000,
        checkpoint_every=1000,
        preview_every=1000,
        out_dir=tmp_path / "run",
        device="cpu",
    )
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


def test_batches_drawn_in_worker_processes_train_the_same_model(tmp_path):
    # The realistic family draws blur, noise and JPEG per sample: every draw must
    # come out the same in a forked worker as in the training process.
    _, inline = run_all(Trainer(tiny_config(tmp_path / "inline", "pdn", steps=5)))
    _, workers = run_all(Trainer(tiny_config(tmp_path / "workers", "pdn", steps=5, workers=2)))
    a = load_checkpoint(inline.checkpoint).model.state_dict()
    b = load_checkpoint(workers.checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prefetcher_gives_the_sampler_batches_in_step_order():
    from napari_textsr.synthetic import synthetic_dataset
    from napari_textsr.training.captions import CaptionPolicy
    from napari_textsr.training.data import BatchPrefetcher, PatchSampler, step_rng
    from napari_textsr.training.degradations import DegradationFamily

    sampler = PatchSampler(
        synthetic_dataset(4, seed=1, size=64), DegradationFamily.preset_family("realistic", 4), lr_patch=8,
        captions=CaptionPolicy(),
    )  # fmt: skip
    with BatchPrefetcher(sampler, 3, seed=5, rank=1, start=7, workers=2) as prefetcher:
        assert prefetcher.workers == 2
        for step in (7, 8, 9, 10, 11):
            got, want = prefetcher.get(step), sampler.batch(3, step_rng(5, 1, step))
            assert torch.equal(got.lr, want.lr) and torch.equal(got.hr, want.hr)
            assert got.captions == want.captions and got.names == want.names
        with pytest.raises(ValueError, match="step order"):
            prefetcher.get(20)
    with pytest.raises(ValueError, match="workers"):
        BatchPrefetcher(sampler, 3, seed=0, workers=-1)


def test_a_model_fine_tuned_many_times_stays_readable_and_lists_every_stage(tmp_path):
    # Stages used to nest one inside the next; the fourth fine-tune of a bundled
    # model could then not be read back (header nested deeper than allowed).
    previous, steps = None, []
    for stage in range(7):
        config = tiny_config(tmp_path / f"s{stage}", "pdn", steps=stage + 1, init=previous, val_every=100)
        _, summary = run_all(Trainer(config))
        previous = summary.checkpoint
        steps.insert(0, stage + 1)
    record = read_metadata(previous).training
    assert [stage["steps"] for stage in record.stages()] == steps  # newest first
    assert all("earlier_stages" not in stage["extra"] for stage in record.stages())
    assert load_checkpoint(previous).model.method == "pdn"


def test_weight_average_is_what_the_checkpoint_holds_and_resumes_exactly(tmp_path):
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=2)))
    initial = load_checkpoint(base.checkpoint).model.state_dict()
    config = tiny_config(tmp_path / "ema", "pdn", steps=1, init=base.checkpoint, ema_decay=0.75)
    events, summary = run_all(Trainer(config))
    assert "weight average (ema_decay 0.75)" in events[0].message
    state = torch.load(config.state_path, weights_only=False)
    raw, averaged = state["model"], state["ema"]
    saved = load_checkpoint(summary.checkpoint).model.state_dict()
    moved = 0
    for name, value in saved.items():
        assert torch.equal(value, averaged[name]), name
        if name.endswith("temperature"):
            continue
        assert torch.allclose(value, 0.75 * initial[name] + 0.25 * raw[name], atol=1e-7), name
        moved += int(not torch.equal(raw[name], initial[name]))
    assert moved > 10  # the step changed the weights, and the checkpoint holds a quarter of that change
    assert read_metadata(summary.checkpoint).training.extra["ema_decay"] == 0.75
    assert "--ema 0.75" in read_metadata(summary.checkpoint).training.command

    # Cancel after step 3 of 6 and resume: the same average as one uninterrupted run.
    _, full = run_all(Trainer(tiny_config(tmp_path / "a", "pdn", steps=6, ema_decay=0.5)))
    generator = Trainer(tiny_config(tmp_path / "b", "pdn", steps=6, ema_decay=0.5)).run()
    done = 0
    while done < 3:
        done += bool(next(generator).losses)
    generator.close()
    _, resumed = run_all(Trainer(tiny_config(tmp_path / "b", "pdn", steps=6, ema_decay=0.5, resume=True)))
    a = load_checkpoint(full.checkpoint).model.state_dict()
    b = load_checkpoint(resumed.checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A run without an average may start one when resumed: from the weights it resumes with.
    _, plain = run_all(Trainer(tiny_config(tmp_path / "p", "pdn", steps=2)))
    before = load_checkpoint(plain.checkpoint).model.state_dict()
    events, later = run_all(Trainer(tiny_config(tmp_path / "p", "pdn", steps=3, ema_decay=0.9, resume=True)))
    assert "weight average (ema_decay 0.9) starts from the weights of step 2" in events[0].message
    after = load_checkpoint(later.checkpoint).model.state_dict()
    raw = torch.load(tmp_path / "p" / "run" / "train_state.pt", weights_only=False)["model"]
    name = "head.weight"
    assert torch.allclose(after[name], 0.9 * before[name] + 0.1 * raw[name], atol=1e-7)
    with pytest.raises(ValueError, match="ema_decay"):
        tiny_config(tmp_path / "c", "pdn", ema_decay=1.0)


def test_weight_average_shares_frozen_weights_and_copies_trained_ones(tmp_path):
    # CLIP-SR freezes the CLIP-ViT weights it starts from: averaging them would
    # only double their memory, so the average holds the same tensors.
    trainer = Trainer(tiny_config(tmp_path / "f", "pdn", steps=1, ema_decay=0.5))
    model = create_model("pdn", 4, "tiny", prompt_dim=16)
    model.head.requires_grad_(False)
    ema = trainer._start_ema(model, None, [], 0)
    pairs = dict(zip((n for n, _ in model.named_parameters()), zip(model.parameters(), ema.parameters())))
    assert pairs["head.weight"][0] is pairs["head.weight"][1]
    trained = [(p, e) for p, e in pairs.values() if p.requires_grad]
    assert trained and all(p.data_ptr() != e.data_ptr() and torch.equal(p, e) for p, e in trained)
    assert all(not e.requires_grad for e in ema.parameters()) and model.blocks[0].body[0].weight.requires_grad


@pytest.mark.parametrize(
    "overrides, grown",
    [
        ({"n_blocks": 4}, ["from 2 to 4 blocks"]),
        ({"n_blocks": 4, "n_feats": 12}, ["from 8 to 12 feature", "from 2 to 4"]),
    ],
)
def test_fine_tune_into_a_deeper_or_wider_pdn(tmp_path, overrides, grown):
    """--init with --model-option n_blocks=N / n_feats=C grows the PDN; at step 0 it is the same model, so a zero step keeps it."""
    _, base = run_all(Trainer(tiny_config(tmp_path / "base", "pdn", steps=1)))
    config = tiny_config(
        tmp_path / "d", "pdn", steps=1, learning_rate=1e-12, init=base.checkpoint, model_overrides=overrides
    )
    events, summary = run_all(Trainer(config))
    assert all(text in events[0].message for text in grown) and "unchanged at step 0" in events[0].message
    tuned = load_checkpoint(summary.checkpoint)
    assert {name: getattr(tuned.model.config, name) for name in overrides} == overrides
    assert "--model-option n_blocks=4" in tuned.metadata.training.command
    start = load_checkpoint(base.checkpoint).model
    prompt = tuned.encoder.encode(["a gull"])
    lr = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(tuned.model(lr, prompt).image, start(lr, prompt).image, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="the model options it takes are n_blocks and n_feats"):
        bad = {"text_fusion": False}
        next(Trainer(tiny_config(tmp_path / "w", "pdn", init=base.checkpoint, model_overrides=bad)).run())
