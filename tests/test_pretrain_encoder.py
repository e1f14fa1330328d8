"""Prompt-encoder pretraining: the loss falls, the saved weights load back by path, the CLI works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_textsr._generators import drive
from napari_textsr.prompts import EncoderSpec, PromptEncoder, register_encoder_configs
from napari_textsr.synthetic import synthetic_dataset
from napari_textsr.training.pretrain_encoder import (
    EncoderTrainingSet,
    PretrainConfig,
    contrastive_loss,
    encode_text,
    iter_pretrain,
    retrieval_accuracy,
)


def _items(n=16, seed=0):
    return [(item, "synthetic") for item in synthetic_dataset(n, seed=seed, size=64)]


def _run(config, items):
    events = []
    return drive(iter_pretrain(config, items), events.append), events


def test_trimmed_text_encoding_matches_open_clip(tiny_encoder):
    text = tiny_encoder.tokenize(["green filaments", "a much longer caption about vertical stripes in red", ""])
    with torch.no_grad():
        full = tiny_encoder.clip.encode_text(text, normalize=True)
        trimmed = encode_text(tiny_encoder.clip, text)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_pretraining_lowers_loss_and_saved_weights_load_by_path(tmp_path):
    items = _items()
    out = tmp_path / "enc.safetensors"
    config = PretrainConfig(
        arch="textsr-tiny",
        out=out,
        steps=25,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=2,
        val_fraction=0.25,
        seed=0,
        checkpoint_every=0,
        num_threads=1,
    )
    # A fixed evaluation batch, the same for the initial and the trained encoder.
    fixed = EncoderTrainingSet.from_items(items, 32, 1.0)
    images, captions = fixed.random_batch(8, np.random.default_rng(123))
    initial = PromptEncoder.from_spec("textsr-tiny:none", seed=0)  # what iter_pretrain starts from
    with torch.no_grad():
        loss_before = float(contrastive_loss(initial.clip, initial.tokenizer, images, captions))

    threads = torch.get_num_threads()
    summary, events = _run(config, items)
    assert torch.get_num_threads() == threads  # the thread setting does not leak out of the run

    assert events[0].step == 0 and events[0].retrieval is not None
    assert events[-1].step == 25 and events[-1].checkpoint == out and events[-1].retrieval is not None
    assert out.is_file() and out.with_suffix(".json").is_file()
    loaded = PromptEncoder.from_spec(EncoderSpec("textsr-tiny", str(out)))
    assert loaded.identity().fingerprint == summary.fingerprint  # exactly the trained weights
    with torch.no_grad():
        loss_after = float(contrastive_loss(loaded.clip, loaded.tokenizer, images, captions))
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)

    # open_clip itself loads the file too, with identical embeddings.
    register_encoder_configs()
    import open_clip

    direct = open_clip.create_model("textsr-tiny", pretrained=str(out)).eval()
    text = loaded.tokenize(captions)
    with torch.no_grad():
        torch.testing.assert_close(
            direct.encode_text(text, normalize=True), loaded.encode(captions).pooled, atol=1e-5, rtol=1e-5
        )
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["fingerprint"] == summary.fingerprint and record["steps"] == 25
    assert {"all", "synthetic"} <= set(record["retrieval_after"])
    attributes = {k: v for k, v in summary.retrieval_after.items() if k.startswith("attribute:")}
    assert attributes  # synthetic scenes in the validation split are also scored against their own alternatives
    for name, result in attributes.items():
        n = {"attribute:shape": 4, "attribute:pattern": 5, "attribute:structure": 4}[name]
        assert result.n_captions == n and result.chance == 1 / n and 0 < result.text_cosine < 1


def test_interrupted_run_leaves_described_checkpoint(tmp_path):
    out = tmp_path / "cut.safetensors"
    config = PretrainConfig(arch="textsr-tiny", out=out, steps=6, batch_size=4, checkpoint_every=2, num_threads=1)
    run = iter_pretrain(config, _items(8))
    events = [next(run) for _ in range(4)]  # before-event + steps 1..3, then the run is dropped
    run.close()
    assert events[2].checkpoint == out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"] == 2 and record["finished"] is False
    assert PromptEncoder.from_spec(EncoderSpec("textsr-tiny", str(out))).identity().fingerprint == record["fingerprint"]


def test_resume_continues_exactly(tmp_path):
    items = _items(8)
    settings = dict(arch="textsr-tiny", steps=5, batch_size=4, checkpoint_every=2, num_threads=1)
    whole, _ = _run(PretrainConfig(out=tmp_path / "whole.safetensors", **settings), items)
    out = tmp_path / "cut.safetensors"
    run = iter_pretrain(PretrainConfig(out=out, **settings), items)
    for _ in range(4):  # before-event + steps 1..3: killed after the step-2 checkpoint
        next(run)
    run.close()
    resumed, events = _run(PretrainConfig(out=out, resume=True, **settings), items)
    assert events[0].step == 2 and [e.step for e in events[1:]] == [3, 4, 5]
    assert resumed.fingerprint == whole.fingerprint  # bit-identical to the uninterrupted run
    assert resumed.retrieval_before == whole.retrieval_before


def test_retrieval_counts_shared_captions(tiny_encoder):
    items = _items(8)
    data = EncoderTrainingSet.from_items(items, tiny_encoder.image_size, 1.0)
    result = retrieval_accuracy(tiny_encoder.clip, tiny_encoder.tokenizer, data)["all"]
    assert result.n_images == 8 and result.n_captions == len({c for i, _ in items for c in i.captions})
    assert 0.0 <= result.top1 <= 1.0 and 0 < result.chance < 1


def test_random_batches_have_distinct_captions():
    item = synthetic_dataset(1, 0, 64)[0]
    twins = [(item, "s"), (type(item)(item.image, list(item.captions), "twin"), "s")]
    data = EncoderTrainingSet.from_items(twins + _items(6, seed=1), 32, 0.5)
    images, captions = data.random_batch(8, np.random.default_rng(0))
    assert images.shape[1:] == (3, 32, 32) and len(captions) == images.shape[0]
    assert len(set(captions)) == len(captions)


def test_cli_pretrain_encoder(tmp_path, capsys):
    from napari_textsr.cli import main

    out = tmp_path / "cli.safetensors"
    code = main(
        [
            "pretrain-encoder",
            "--synthetic",
            "12",
            "--synthetic-size",
            "64",
            "--arch",
            "textsr-tiny",
            "--steps",
            "3",
            "--batch-size",
            "6",
            "--out",
            str(out),
            "--val-fraction",
            "0.3",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "retrieval before (all)" in printed and "retrieval after (all)" in printed
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"].startswith("textsr pretrain-encoder --synthetic 12 --synthetic-size 64 --arch textsr-tiny")

    assert main(["pretrain-encoder", "--arch", "textsr-tiny", "--steps", "1", "--out", str(out)]) == 1
    assert "no training data" in capsys.readouterr().err
    bad_size = [
        "pretrain-encoder",
        "--synthetic",
        "8",
        "--synthetic-size",
        "64",
        "--arch",
        "textsr-tiny",
        "--steps",
        "1",
        "--out",
        str(out),
        "--image-size",
        "48",
    ]
    assert main(bad_size) == 1
    assert "takes 32x32 images" in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["/work/shared/data/train/t91"])
def test_pretraining_reads_captioned_folders(tmp_path, folder):
    config = PretrainConfig(
        arch="textsr-tiny", out=tmp_path / "f.safetensors", data=[folder], steps=1, batch_size=4, num_threads=1
    )
    summary, _ = _run(config, None)
    assert summary.n_train + summary.n_val == 91
    assert set(summary.retrieval_after) == {"all", "t91", "degradation words"}


def test_degraded_pairs_share_content_and_differ_in_their_words():
    from napari_textsr.training.captions import TRAIN_VOCABULARY
    from napari_textsr.training.degradations import DegradationFamily

    items = _items(8)
    data = EncoderTrainingSet.from_items(items, 32, 1.0)
    data.degradation = DegradationFamily.preset_family("realistic", 2)
    images, captions = data.random_batch(8, np.random.default_rng(3))
    assert images.shape == (8, 3, 32, 32) and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert len(set(captions)) == 8  # no false negatives in the contrastive batch
    words = [w for ws in TRAIN_VOCABULARY.values() for w in ws]
    contents = {c.strip().rstrip(".") for item, _ in items for c in item.captions}
    for first, second in zip(captions[::2], captions[1::2]):
        assert any(c in first and c in second for c in contents)  # one image, one content caption
        assert first != second
        assert any(w in first for w in words) and any(w in second for w in words)
    again, captions_again = data.random_batch(8, np.random.default_rng(3))
    assert torch.equal(images, again) and captions == captions_again  # seeded


def test_degradation_retrieval_is_scored_on_four_ways(tiny_encoder):
    from napari_textsr.training.pretrain_encoder import degradation_retrieval

    data = EncoderTrainingSet.from_items(_items(3), tiny_encoder.image_size, 1.0)
    result = degradation_retrieval(tiny_encoder.clip, tiny_encoder.tokenizer, data)
    assert result.n_images == 12 and result.n_captions == 4 and result.chance == 0.25
    assert 0.0 <= result.top1 <= 1.0 and -1.0 <= result.text_cosine < 1.0


def test_pretraining_with_degradations_records_them_and_refuses_a_different_resume(tmp_path):
    items = _items(12)
    out = tmp_path / "enc.safetensors"
    config = PretrainConfig(
        arch="textsr-tiny", out=out, steps=3, batch_size=8, learning_rate=1e-3, warmup_steps=1,
        val_fraction=0.25, seed=0, checkpoint_every=1, num_threads=1, degradations="realistic",
    )  # fmt: skip
    summary, _ = _run(config, items)
    assert "degradation words" in summary.retrieval_after
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["config"]["degradations"] == "realistic"
    with pytest.raises(ValueError, match="degradations"):
        _run(PretrainConfig(**{**config.__dict__, "resume": True, "degradations": None, "steps": 3}), items)
    with pytest.raises(ValueError, match="even"):
        PretrainConfig(batch_size=5, degradations="realistic")


def test_paraphrases_keep_content_and_degradation_in_other_words():
    from napari_textsr.training.captions import TRAIN_VOCABULARY
    from napari_textsr.training.degradations import DegradationFamily

    items = _items(8)
    data = EncoderTrainingSet.from_items(items, 32, 1.0)
    with pytest.raises(ValueError, match="degradation family"):
        data.random_batch_with_paraphrases(8, np.random.default_rng(0))
    data.degradation = DegradationFamily.preset_family("realistic", 2)
    images, captions, paraphrases = data.random_batch_with_paraphrases(8, np.random.default_rng(3))
    assert len(captions) == len(paraphrases) == images.shape[0] == 8
    contents = {c.strip().rstrip(".") for item, _ in items for c in item.captions}

    def said(caption: str) -> set[str]:  # the properties whose words a caption contains
        rest = caption
        for content in contents:
            rest = rest.replace(content, "")
        return {p for p, ws in TRAIN_VOCABULARY.items() if any(w in rest for w in ws)}

    changed = 0
    for caption, paraphrase in zip(captions, paraphrases):
        assert any(c in caption and c in paraphrase for c in contents)
        assert said(caption) and said(caption) <= said(paraphrase) | {"clean"}  # "sharp and clean" vs "crisp"
        changed += caption != paraphrase
    assert changed >= 6  # other words or template, wherever the vocabulary allows
    assert said(captions[0]) != said(captions[1])  # the pair's other view: same content, other words
    again = data.random_batch_with_paraphrases(8, np.random.default_rng(3))
    assert torch.equal(again[0], images) and again[1:] == (captions, paraphrases)  # seeded


def test_paraphrase_loss_separates_degradation_words(tiny_encoder):
    """A few steps on the paraphrase loss alone pull a caption towards its paraphrase and
    away from the same content with another degradation's words."""
    from napari_textsr.training.pretrain_encoder import paraphrase_loss

    clip = PromptEncoder.from_spec("textsr-tiny:none", seed=0).clip
    clip.requires_grad_(True).train()
    captions = ["red circles, blurry", "red circles, noisy", "blue stripes, JPEG-compressed", "blue stripes, sharp"]
    paraphrases = ["out of focus: red circles", "red circles (grainy)", "blue stripes. blocky.", "crisp: blue stripes"]
    tokenizer = tiny_encoder.tokenizer

    def margin() -> float:  # cosine to own paraphrase minus cosine to the same content's other words
        with torch.no_grad():
            a = encode_text(clip, tokenizer(captions))
            b = encode_text(clip, tokenizer(paraphrases))
        own = (a * b).sum(1)
        other = (a * b[[1, 0, 3, 2]]).sum(1)
        return float((own - other).mean())

    with pytest.raises(ValueError, match="paraphrases"):
        paraphrase_loss(clip, tokenizer, captions, paraphrases[:3])
    with torch.no_grad():
        before, first = margin(), float(paraphrase_loss(clip, tokenizer, captions, paraphrases))
    optimizer = torch.optim.Adam(clip.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(30):
        loss = paraphrase_loss(clip, tokenizer, captions, paraphrases)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(paraphrase_loss(clip, tokenizer, captions, paraphrases)) < first / 2
    assert margin() > before + 0.2


def test_word_loss_needs_degradations_and_is_recorded(tmp_path):
    with pytest.raises(ValueError, match="word_loss"):
        PretrainConfig(word_loss=1.0)
    with pytest.raises(ValueError, match="word_loss"):
        PretrainConfig(word_loss=-1.0, degradations="realistic")
    items = _items(12)
    out = tmp_path / "enc.safetensors"
    config = PretrainConfig(
        arch="textsr-tiny", out=out, steps=2, batch_size=8, learning_rate=1e-3, warmup_steps=1,
        val_fraction=0.25, seed=0, checkpoint_every=1, num_threads=1, degradations="realistic", word_loss=0.5,
    )  # fmt: skip
    _run(config, items)
    assert json.loads(out.with_suffix(".json").read_text())["config"]["word_loss"] == 0.5
    with pytest.raises(ValueError, match="word_loss=0.5"):
        _run(PretrainConfig(**{**config.__dict__, "resume": True, "word_loss": 0.0}), items)
