"""Untrusted checkpoints (issue 11, rows 2-6, and a header fuzz): every bad file ends in CheckpointError,
quickly and without allocating what its header claims."""

from __future__ import annotations

import copy
import json
import os
import random
import struct
import time
from pathlib import Path

import pytest
import torch

from napari_textsr import prompts
from napari_textsr.checkpoints import (
    CheckpointError,
    _checksum,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from napari_textsr.inference import load_model
from napari_textsr.models import create_model

BUNDLED_PDN = Path(prompts.WEIGHTS_DIR) / "pdn-x4.textsr.safetensors"


# ---------------------------------------------------------------- helpers
def _split(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write(path: Path, header: dict, payload: bytes) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


def with_metadata(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` whose textsr metadata is ``change(metadata)`` (a dict, or raw text); tensors and checksum kept."""
    header, payload = _split(source)
    meta = json.loads(header["__metadata__"]["textsr"])
    changed = change(meta)
    header["__metadata__"]["textsr"] = changed if isinstance(changed, str) else json.dumps(meta)
    return _write(target, header, payload)


def write_raw_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"textsr": json.dumps(meta), "sha256": _checksum(tensors)})
    return path


@pytest.fixture()
def tiny(tmp_path, tiny_encoder):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=tiny_encoder.embed_dim).eval()
    return save_checkpoint(tmp_path / "tiny.textsr.safetensors", model, tiny_encoder, name="tiny")


# ---------------------------------------------------------------- row 2
def test_header_config_larger_than_the_stored_tensors_is_refused_at_once(tmp_path):
    """n_feats=5800 in a file of n_feats=32 tensors: refused from the shapes, before any weight is read."""
    crafted = with_metadata(
        BUNDLED_PDN, tmp_path / "huge.textsr.safetensors", lambda m: m["config"].update(n_feats=5800)
    )
    load_checkpoint(BUNDLED_PDN)  # first use imports the model modules; that is not the refusal's cost
    start = time.process_time()  # CPU time: the development machine is shared, wall time measures the others
    # Shaped by n_feats: 4 per residual block (two convolutions), 3 per DCM (projection, kernel bank and
    # its bias), and head, body tail, the two x4 up-sampling convolutions (2 each) and the output weight.
    n_blocks = read_metadata(BUNDLED_PDN).config["n_blocks"]
    with pytest.raises(
        CheckpointError,
        match=rf"{7 * n_blocks + 9} tensor\(s\) of the wrong shape, e.g. blocks.0.body.0.bias: stored \[32\], "
        r"the header's config gives \[5800\]",
    ):
        load_checkpoint(crafted)
    took = time.process_time() - start
    print(f"n_feats=5800 header refused in {took * 1000:.1f} ms of CPU time")
    assert took < 1.0
    many = with_metadata(
        BUNDLED_PDN, tmp_path / "deep.textsr.safetensors", lambda m: m["config"].update(n_blocks=60000)
    )
    start = time.process_time()
    with pytest.raises(CheckpointError, match="more tensors than the"):
        load_checkpoint(many)
    assert time.process_time() - start < 1.0


# ---------------------------------------------------------------- row 3
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.update(method=5), "'method' must be str, got int"),
        (lambda m: m.pop("encoder"), "'encoder' is missing"),
        (lambda m: m.update(training="yesterday"), "'training' must be dict or NoneType, got str"),
        (lambda m: m.update(training={"steps": "5"}), "'training.steps' must be int, got str"),
        (lambda m: m.update(training={"data": [1, 2]}), r"'training.data\[0\]' must be a string"),
        (lambda m: m.update(colour="red"), "'colour' is not a known field"),
        (lambda m: m["encoder"].update(embed_dim="32"), "'encoder.embed_dim' must be int"),
        (lambda m: m["config"].update(n_feats=8.5), "'config.n_feats' must be int, got float"),
        (lambda m: m["config"].update(wings=2), "'config.wings' is not a known field"),
        (
            lambda m: m.update(training={"extra": {"a": [[[[[[[[[[1]]]]]]]]]]}}),
            r"'training.extra.a\[0\]\[0\]\[0\]\[0\]\[0\]\[0\]\[0\]' is nested deeper than 8",
        ),
        (lambda m: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (lambda m: '{"format": "napari-textsr", "version": 1, "method": ', "not valid JSON"),
        (lambda m: m.update(version=True), "'version' is True"),
    ],
)
def test_malformed_header_fields_are_one_checkpoint_error_naming_the_field(tiny, tmp_path, change, field):
    crafted = with_metadata(tiny, tmp_path / "bad.textsr.safetensors", change)
    with pytest.raises(CheckpointError, match=field):
        load_checkpoint(crafted)
    with pytest.raises(CheckpointError, match=field):
        read_metadata(crafted)


# ---------------------------------------------------------------- row 4
def test_header_scale_must_be_the_configs(tmp_path):
    crafted = with_metadata(BUNDLED_PDN, tmp_path / "x8.textsr.safetensors", lambda m: m.update(scale=8))
    with pytest.raises(CheckpointError, match="'scale' is 8 but the model config says scale 4"):
        load_model(crafted, scale=8, device="cpu")
    with pytest.raises(ValueError, match="is a x4 model, but scale=8 was asked for"):
        load_model(BUNDLED_PDN, scale=8, device="cpu")
    assert load_model(BUNDLED_PDN, scale=4, device="cpu").model.config.scale == 4


# ---------------------------------------------------------------- row 5
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("textsr-clip-s:bundled:../../../../x", "is not a plain name"),
        ("textsr-clip-s:bundled:/etc/passwd", "is not a plain name"),
        ("textsr-clip-s:bundled:nonexistent", "named 'nonexistent' in .* ships: textsr-clip-s, "),
        ("textsr-clip-s:/tmp/elsewhere.safetensors", "embeds no encoder weights"),
        ("textsr-clip-s:none", "embeds no encoder weights"),
        ("textsr-clip-s:my-private-tag", "not a public open_clip pretrained tag"),
    ],
)
def test_header_encoder_may_not_point_elsewhere(tmp_path, spec, message):
    def point(meta):
        parsed = prompts.EncoderSpec.parse(spec)
        meta["encoder_spec"] = spec
        meta["encoder"]["source"] = parsed.kind
        meta["encoder"]["pretrained"] = parsed.pretrained

    crafted = with_metadata(BUNDLED_PDN, tmp_path / "enc.textsr.safetensors", point)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(crafted)


def test_bundled_names_resolve_only_inside_the_weights_folder():
    assert (
        prompts.bundled_weights_path(prompts.EncoderSpec("textsr-clip-s", "bundled:textsr-clip-s"))
        == (Path(prompts.WEIGHTS_DIR) / "textsr-clip-s.safetensors").resolve()
    )
    for name in ("../weights/textsr-clip-s", "sub/textsr-clip-s", "..", ".hidden"):
        with pytest.raises(ValueError, match="not a plain name"):
            prompts.bundled_weights_path(prompts.EncoderSpec("textsr-clip-s", f"bundled:{name}"))


def test_a_public_tag_is_downloaded_only_when_asked(tmp_path, monkeypatch):
    """A checkpoint that names ViT-B-32:openai loads its encoder from the cache; it downloads only with allow_download."""
    import open_clip

    monkeypatch.setenv("NAPARI_TEXTSR_CACHE", str(tmp_path / "empty-cache"))
    downloads: list[str] = []

    def offline_download(*args, **kwargs):
        downloads.append(repr(args))
        raise RuntimeError("no network here")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline_download)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline_download, raising=False)
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=512)
    meta = json.loads(_split(BUNDLED_PDN)[0]["__metadata__"]["textsr"])
    meta.update(
        scale=2,
        config=model.config.to_dict(),
        encoder_spec="ViT-B-32:openai",
        encoder={"arch": "ViT-B-32", "source": "tag", "pretrained": "openai", "embed_dim": 512, "fingerprint": ""},
    )
    path = write_raw_checkpoint(
        tmp_path / "tag.textsr.safetensors", {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, meta
    )
    with pytest.raises(CheckpointError, match="not downloaded yet and nothing asked to download it"):
        load_checkpoint(path)
    assert downloads == []
    with pytest.raises(CheckpointError, match="no network here"):
        load_checkpoint(path, allow_download=True)
    assert len(downloads) == 1


# ---------------------------------------------------------------- row 6
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_even_with_a_valid_checksum(tmp_path, tiny_encoder, bad):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=tiny_encoder.embed_dim)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = bad
    path = save_checkpoint(tmp_path / "nan.textsr.safetensors", model, tiny_encoder)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights \(1 tensor\(s\), e.g. model.head.weight\)"):
        load_checkpoint(path)


# ---------------------------------------------------------------- fuzz
_REQUIRED = [
    ("format",),
    ("version",),
    ("method",),
    ("scale",),
    ("config",),
    ("encoder_spec",),
    ("encoder",),
    ("encoder", "arch"),
    ("encoder", "source"),
    ("encoder", "pretrained"),
    ("encoder", "embed_dim"),
    ("encoder", "fingerprint"),
]
_SIZES = [
    ("config", "n_feats"),
    ("config", "n_blocks"),
    ("config", "scale"),
    ("config", "prompt_dim"),
    ("config", "in_channels"),
    ("scale",),
    ("encoder", "embed_dim"),
]
_FREE = ("degradation", "extra")  # free-form notes under training: any JSON value is valid there
_NULLABLE = {("training",)}  # null is valid there: a model saved without training


def _typed_paths(meta, prefix=()):
    """Paths of the schema's typed values (not inside free-form notes) with their JSON kind."""
    for key, value in meta.items():
        path = prefix + (key,)
        if prefix == ("training",) and key in _FREE:
            continue
        yield path, value
        if isinstance(value, dict):
            yield from _typed_paths(value, path)


def _other_type(value, rng, nullable=False):
    """A value of a JSON type the field does not accept (an int is accepted where a number is)."""
    candidates = [True, "text", [1, 2], {"k": 1}, 3, 2.5, -(10**30), "x" * 70_000] + ([] if nullable else [None])
    if isinstance(value, bool):
        candidates = [c for c in candidates if not isinstance(c, bool)]
    elif isinstance(value, float):
        candidates = [c for c in candidates if isinstance(c, (str, list, dict, type(None), bool))]
    elif isinstance(value, int):  # every int of the schema is a count, a width or a version: -1e30 is none of them
        candidates = [c for c in candidates if isinstance(c, (str, list, dict, type(None), bool)) or c == -(10**30)]
    elif isinstance(value, str):
        candidates = [c for c in candidates if not isinstance(c, str) or len(c) > 65536]
    elif isinstance(value, dict):
        candidates = [c for c in candidates if not isinstance(c, dict)]
    elif isinstance(value, list):
        candidates = [c for c in candidates if not isinstance(c, list)]
    return rng.choice(candidates)


def _get(meta, path):
    for key in path[:-1]:
        meta = meta[key]
    return meta, path[-1]


def _mutations(meta: dict, rng: random.Random, n: int):
    """``n`` (description, new metadata or raw text) pairs, each invalid in a different way."""
    typed = [(p, v) for p, v in _typed_paths(meta)]
    for i in range(n):
        m = copy.deepcopy(meta)
        kind = ("type", "delete", "unknown", "size", "nest", "free-deep", "text", "huge")[i % 8]
        if kind == "type":
            path, value = rng.choice(typed)
            parent, key = _get(m, path)
            parent[key] = _other_type(value, rng, nullable=path in _NULLABLE)
        elif kind == "delete":
            path = rng.choice(_REQUIRED)
            parent, key = _get(m, path)
            del parent[key]
        elif kind == "unknown":
            # training.validation maps any metric name to a number: a new key there is valid
            dicts = [()] + [p for p, v in typed if isinstance(v, dict) and p != ("training", "validation")]
            path = rng.choice(dicts)
            target = m
            for key in path:
                target = target[key]
            target[f"unknown_{rng.randrange(1000)}"] = rng.choice([1, "x", None, [1]])
        elif kind == "size":
            path = rng.choice(_SIZES)
            parent, key = _get(m, path)
            choices = [0, -1, 1, 3, 5800, 60000, 10**6, 2**63, 2**70, -(2**63)]
            parent[key] = rng.choice([c for c in choices if c != parent[key]])
        elif kind == "nest":
            path, value = rng.choice(typed)
            parent, key = _get(m, path)
            wrapped = value
            for _ in range(rng.choice([1, 10, 200])):
                wrapped = [wrapped] if rng.random() < 0.5 else {"v": wrapped}
            parent[key] = wrapped
        elif kind == "free-deep":
            deep: object = 1
            for _ in range(rng.choice([9, 50, 500])):
                deep = {"d": deep}
            m["training"][rng.choice(_FREE)] = {"k": deep}
        elif kind == "text":
            text = json.dumps(m)
            cut = rng.randrange(1, len(text) - 1)
            yield kind, rng.choice([text[:cut], text[:cut] + "\x00" + text[cut:], "[" * 50_000, "null", "1e400", '"s"'])
            continue
        else:  # huge: over the metadata size limit
            m["description"] = "z" * (1024 * 1024 + rng.randrange(10))
        yield kind, m


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def test_fuzzed_headers_end_in_checkpoint_error_fast_and_small(tmp_path):
    """240 seeded mutations of a real checkpoint's header (types, sizes, keys, nesting, text):
    every load raises CheckpointError within a second of CPU time, and its peak resident memory grows < 64 MiB."""
    measure_memory = os.path.exists("/proc/self/clear_refs")
    header, payload = _split(BUNDLED_PDN)
    meta = json.loads(header["__metadata__"]["textsr"])
    load_checkpoint(BUNDLED_PDN)  # warm imports and caches, so they do not count
    rng = random.Random(1234)
    target = tmp_path / "fuzz.textsr.safetensors"
    slowest, biggest, kinds = 0.0, 0, set()
    for index, (kind, mutated) in enumerate(_mutations(meta, rng, 240)):
        header["__metadata__"]["textsr"] = mutated if isinstance(mutated, str) else json.dumps(mutated)
        _write(target, header, payload)
        if measure_memory:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM (peak RSS) to the current RSS
            before = _rss_kib("VmRSS")
        start = time.process_time()  # CPU time: wall time on a shared machine measures the other jobs
        with pytest.raises(CheckpointError):
            load_checkpoint(target)
        took = time.process_time() - start
        assert took < 1.0, (index, kind, took)
        slowest = max(slowest, took)
        if measure_memory:
            grew = _rss_kib("VmHWM") - before
            assert grew < 64 * 1024, (index, kind, grew)
            biggest = max(biggest, grew)
        kinds.add(kind)
    assert kinds == {"type", "delete", "unknown", "size", "nest", "free-deep", "text", "huge"}
    print(f"fuzz: slowest refusal {slowest * 1000:.0f} ms, largest peak-RSS growth {biggest} KiB")
