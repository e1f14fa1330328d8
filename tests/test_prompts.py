import pytest
import torch

from napari_textsr.prompts import (
    EncoderSpec,
    PromptEmbedding,
    PromptEncoder,
    save_encoder_state,
)


def test_spec_parsing_and_kinds():
    assert EncoderSpec.parse("ViT-B-32:openai") == EncoderSpec("ViT-B-32", "openai")
    assert EncoderSpec.parse("ViT-B-32:openai").kind == "tag"
    assert EncoderSpec.parse("textsr-tiny").kind == "random"
    assert EncoderSpec.parse("textsr-clip-s:bundled:textsr-clip-s").kind == "bundled"
    assert EncoderSpec.parse("textsr-tiny:/tmp/w.safetensors").kind == "file"
    assert str(EncoderSpec.parse("ViT-B-32:openai")) == "ViT-B-32:openai"
    with pytest.raises(ValueError, match="empty encoder spec"):
        EncoderSpec.parse("  ")


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        PromptEncoder.from_spec("NoSuchNet:none")


def test_encode_shapes_words_and_normalisation(tiny_encoder):
    prompt = tiny_encoder.encode(["green filaments", "a red square on a blue background"])
    assert prompt.tokens.shape[0] == 2 and prompt.tokens.shape[2] == tiny_encoder.embed_dim == 32
    assert prompt.mask.sum(1).tolist() == [len(w) - w.count("") for w in prompt.words]
    # BPE pieces, grouped back into whole words
    assert [w for w, _ in prompt.whole_words(0)] == ["green", "filaments", "<sentence>"]
    assert [w for w, _ in prompt.whole_words(1)][:3] == ["a", "red", "square"]
    torch.testing.assert_close(prompt.pooled.norm(dim=-1), torch.ones(2))
    # padding positions are masked and zero
    n = int(prompt.mask[0].sum())
    assert prompt.mask[0, :n].all() and not prompt.mask[0, n:].any()
    assert prompt.tokens[0, n:].abs().sum() == 0


def test_empty_caption_is_the_unconditional_prompt(tiny_encoder):
    empty = tiny_encoder.encode("")
    blank = tiny_encoder.encode("   \n ")
    assert empty.words == [["<sentence>"]] and empty.mask.tolist() == [[True]]
    assert empty.whole_words() == [("<sentence>", [0])]
    torch.testing.assert_close(empty.pooled, blank.pooled)
    assert not torch.allclose(empty.pooled, tiny_encoder.encode("nuclei").pooled)


def test_cache_returns_same_features_and_is_bounded():
    encoder = PromptEncoder.from_spec("textsr-tiny:none")
    encoder._cache_size = 2
    first = encoder.encode("puncta")
    encoder.encode(["a", "b", "c"])
    assert len(encoder._cache) == 2
    again = encoder.encode("puncta")
    torch.testing.assert_close(first.tokens, again.tokens)


def test_random_init_is_deterministic_per_seed():
    a = PromptEncoder.from_spec("textsr-tiny:none").identity()
    b = PromptEncoder.from_spec("textsr-tiny:none").identity()
    c = PromptEncoder.from_spec("textsr-tiny:none", seed=3).identity()
    assert a.matches(b) and not a.matches(c)


def test_encode_images_gives_image_prompt(tiny_encoder):
    images = torch.rand(3, 3, 40, 57)
    prompt = tiny_encoder.encode_images(images)
    assert prompt.pooled.shape == (3, 32) and prompt.words == [["<image>"]] * 3
    flipped = tiny_encoder.encode_images(images.flip(-1))
    assert not torch.allclose(prompt.pooled, flipped.pooled)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_file_loads_by_path(tmp_path, tiny_encoder, suffix):
    """The real loading path (a file instead of a download), in both formats open_clip users have."""
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        save_encoder_state(tiny_encoder, path)
    else:
        torch.save(tiny_encoder.clip.state_dict(), path)
    loaded = PromptEncoder.from_spec(EncoderSpec("textsr-tiny", str(path)))
    assert loaded.identity().source == "file"
    assert loaded.identity().fingerprint == tiny_encoder.identity().fingerprint
    torch.testing.assert_close(loaded.encode("nuclei").pooled, tiny_encoder.encode("nuclei").pooled)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="weights not found"):
        PromptEncoder.from_spec(EncoderSpec("textsr-tiny", str(tmp_path / "nope.safetensors")))


def test_prompt_cat_pads_and_repeat(tiny_encoder):
    a = tiny_encoder.encode("x")
    b = tiny_encoder.encode("three words here")
    both = PromptEmbedding.cat([a, b])
    assert both.tokens.shape[1] == b.tokens.shape[1] and both.mask[0].sum() == a.mask.sum()
    assert both.whole_words(0) == a.whole_words(0) and both.whole_words(1) == b.whole_words(0)
    assert a.repeat(4).tokens.shape[0] == 4


def test_pooled_embedding_is_open_clips_encode_text(tiny_encoder):
    # The pooled prompt comes from the token features already computed, not a second text-tower pass.
    captions = ["green filaments", "a much longer caption about vertical stripes in red", ""]
    tiny_encoder.clear_cache()  # (other tests share the encoder)
    text = tiny_encoder.tokenize(captions)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tiny_encoder.clip.encode_text(text).float(), dim=-1)
    got = tiny_encoder.encode(captions).pooled
    assert torch.equal(got, expected)


BUNDLED = "textsr-clip-s:bundled:textsr-clip-s"


def test_bundled_encoder_builds_open_clip_only_when_needed():
    from napari_textsr.prompts import state_dict_fingerprint

    lazy = PromptEncoder.from_spec(BUNDLED)
    assert not lazy.is_built
    identity, width = lazy.identity(), lazy.embed_dim
    assert not lazy.is_built  # both known from the weights alone
    built = lazy.clip  # first use builds it
    assert lazy.is_built and not built.training
    assert identity.fingerprint == state_dict_fingerprint(built.state_dict())
    assert width == built.text_projection.shape[1] == 128


def test_captions_are_cached_on_disk_across_encoders(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_TEXTSR_EMBEDDING_CACHE", str(tmp_path / "cache"))
    first = PromptEncoder.from_spec(BUNDLED)
    caption = "a  brick wall,   out of focus"
    reference = first.encode(caption)
    fit = first.fit_caption(caption)
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 1 and first.identity().fingerprint in files[0].parent.name

    second = PromptEncoder.from_spec(BUNDLED)  # a new session's encoder
    again = second.encode(caption)
    assert second.fit_caption(caption) == fit
    assert not second.is_built  # served from disk: open_clip never built
    assert torch.equal(again.tokens, reference.tokens) and torch.equal(again.pooled, reference.pooled)
    assert again.words == reference.words and again.word_ids == reference.word_ids
    # A caption not on disk builds the model; a damaged file is recomputed, never trusted.
    files[0].write_bytes(b"not a safetensors file")
    third = PromptEncoder.from_spec(BUNDLED)
    assert torch.equal(third.encode(caption).pooled, reference.pooled) and third.is_built
    assert torch.equal(PromptEncoder.from_spec(BUNDLED).encode(caption).pooled, reference.pooled)


def test_disk_cache_can_be_turned_off_and_skips_random_encoders(tmp_path, monkeypatch, tiny_encoder):
    monkeypatch.setenv("NAPARI_TEXTSR_EMBEDDING_CACHE", "0")
    PromptEncoder.from_spec(BUNDLED).encode("a cat")
    monkeypatch.setenv("NAPARI_TEXTSR_EMBEDDING_CACHE", str(tmp_path / "cache"))
    tiny_encoder.encode("a dog never cached")  # random weights: nothing to share between sessions
    PromptEncoder.from_spec(BUNDLED).encode("a composed training caption, grainy", cache=False)
    assert not (tmp_path / "cache").exists()


def test_a_repeated_upscale_does_not_import_open_clip(tmp_path):
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, sys, numpy as np\n"
        "from napari_textsr.inference import load_model\n"
        "up = load_model('default', scale=2)\n"
        "out = up.upscale(np.zeros((16, 16), np.uint8), 'a grey square')\n"
        "print(json.dumps(['open_clip' in sys.modules, 'torch._dynamo' in sys.modules, float(out.image.mean())]))\n"
    )
    env = {**os.environ, "NAPARI_TEXTSR_EMBEDDING_CACHE": str(tmp_path / "cache")}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300
            ).stdout
        )  # fmt: skip
        for _ in range(2)
    ]
    assert runs[0][0] and not runs[1][0] and not runs[1][1]  # cold: builds open_clip; warm: neither it nor dynamo
    assert runs[0][2] == runs[1][2]
