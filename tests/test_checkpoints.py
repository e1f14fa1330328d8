import pytest
import torch

from napari_textsr.checkpoints import (
    CheckpointError,
    EncoderMismatchError,
    TrainingRecord,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from napari_textsr.models import create_model
from napari_textsr.prompts import PromptEncoder


@pytest.fixture()
def saved(tmp_path, tiny_encoder):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=tiny_encoder.embed_dim).eval()
    with torch.no_grad():  # move off the init so a load that silently re-initialises would show
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    record = TrainingRecord(command="textsr train ...", data=["synthetic:8:1"], steps=5, validation={"psnr_y": 30.0})
    path = save_checkpoint(tmp_path / "m.textsr.safetensors", model, tiny_encoder, name="t", training=record)
    return path, model


def test_round_trip_is_bit_identical(saved, tiny_encoder):
    path, model = saved
    loaded = load_checkpoint(path)
    lr = torch.rand(1, 3, 11, 13)
    with torch.inference_mode():
        expected = model(lr, tiny_encoder.encode("nuclei")).image
        actual = loaded.model(lr, loaded.encoder.encode("nuclei")).image
    assert torch.equal(expected, actual)
    meta = read_metadata(path)
    assert meta.method == "pdn" and meta.scale == 2 and meta.training.validation == {"psnr_y": 30.0}
    assert meta.encoder.matches(tiny_encoder.identity())


def test_mismatched_encoder_is_refused_with_what_was_expected(saved):
    path, _ = saved
    other = PromptEncoder.from_spec("textsr-tiny:none", seed=7)
    with pytest.raises(EncoderMismatchError, match="was trained with prompt encoder textsr-tiny") as info:
        load_checkpoint(path, encoder=other)
    assert "fingerprint" in str(info.value)


def test_truncated_file_is_refused(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    broken = tmp_path / "truncated.textsr.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(broken)


def test_flipped_bytes_are_refused(saved, tmp_path):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    broken = tmp_path / "flipped.textsr.safetensors"
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(broken)


def test_foreign_and_missing_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a napari-textsr checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.textsr.safetensors")
    junk = tmp_path / "junk.textsr.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)


def test_prompt_dim_must_match_encoder(tmp_path, tiny_encoder):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=64)
    with pytest.raises(CheckpointError, match="prompt_dim=64"):
        save_checkpoint(tmp_path / "x.textsr.safetensors", model, tiny_encoder)


def test_average_checkpoints_writes_the_weighted_mean_and_records_its_inputs(tmp_path, tiny_encoder):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "average_checkpoints.py"
    spec = importlib.util.spec_from_file_location("average_checkpoints", script)
    soup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soup)

    torch.manual_seed(0)
    paths, states = [], []
    for i, scale in enumerate((2, 2, 4)):
        model = create_model("pdn", scale=scale, preset="tiny", prompt_dim=tiny_encoder.embed_dim).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        record = TrainingRecord(command=f"textsr train {i}", steps=10 * (i + 1))
        paths.append(save_checkpoint(tmp_path / f"m{i}.textsr.safetensors", model, tiny_encoder, training=record))
        states.append({k: v.clone() for k, v in model.state_dict().items()})

    out = soup.average_checkpoints(tmp_path / "soup.textsr.safetensors", [(paths[0], 1.0), (paths[1], 3.0)])
    loaded = load_checkpoint(out)
    for name, value in loaded.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * states[0][name] + 0.75 * states[1][name])
    sources = loaded.metadata.training.extra["averaged_from"]
    assert [s["weight"] for s in sources] == [0.25, 0.75] and sources[1]["path"] == str(paths[1])
    assert loaded.metadata.training.command == "textsr train 0" and len(sources[0]["sha256"]) == 64
    assert soup.parse_input("a/b.safetensors@0.5") == (Path("a/b.safetensors"), 0.5)
    with pytest.raises(ValueError, match="not the same model"):
        soup.average_checkpoints(tmp_path / "x.textsr.safetensors", [(paths[0], 1.0), (paths[2], 1.0)])
    with pytest.raises(ValueError, match="at least two"):
        soup.average_checkpoints(tmp_path / "x.textsr.safetensors", [(paths[0], 1.0)])
    with pytest.raises(ValueError, match="must be > 0"):
        soup.parse_input("a.safetensors@0")
