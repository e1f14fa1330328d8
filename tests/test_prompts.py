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
