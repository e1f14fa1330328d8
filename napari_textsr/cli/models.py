"""``textsr models``: the models bundled with the package."""

from __future__ import annotations

import argparse
import json

from napari_textsr.cli import command_help


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help=command_help("models"),
        description=(
            "List the models shipped in napari_textsr/weights/: name (for --model), method, scale, "
            "what each was trained on and its validation figures."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_textsr import loading
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY

    models = loading.list_models()
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    if not models:
        print(
            f"No bundled models (none in {loading.WEIGHTS_DIR}). Train one with `textsr train`, "
            "pass a checkpoint path to --model, or try the plumbing with --model random:pdn:4:tiny."
        )
        return 0
    name_width = max(len(m.name) for m in models)
    marks = {}
    for scale in sorted({m.scale for m in models}):
        general = loading.pick_default(scale, models)
        marks[general.name] = f"default at x{scale}"
        jpeg = loading.pick_default(scale, models, jpeg=True)
        if jpeg.name != general.name:
            marks[jpeg.name] = (
                f"default at x{scale} for inputs JPEG-compressed at quality <= {FILE_WORDS_MAX_JPEG_QUALITY}"
            )
    for m in models:
        record = m.training
        steps = f"{record.steps} steps" if record else "no training record"
        mark = f"  [{marks[m.name]}]" if m.name in marks else ""
        print(f"{m.name.ljust(name_width)}  {m.method:<6}  x{m.scale:<2}  {steps}  (encoder {m.encoder}){mark}")
        if m.description:
            print(f"    {m.description}")
        if record is None:
            continue
        # Every stage, newest first: this run, then the model it was fine-tuned from, back to the first run.
        if record.validation:
            figures = ", ".join(f"{k}={_number(v)}" for k, v in record.validation.items())
            print(f"    validation: {figures}")
        for depth, stage in enumerate(record.stages()):
            label = "trained" if depth == 0 else "fine-tuned from a model trained"
            print(f"    {label} {stage.get('steps')} steps on: {'; '.join(stage.get('data', []))}")
            print(f"        degradation: {describe_degradation_record(stage.get('degradation') or {})}")
            captions = describe_captions_record((stage.get("extra") or {}).get("captions"))
            if captions:
                print(f"        captions: {captions}")
            ema = (stage.get("extra") or {}).get("ema_decay")
            if ema:
                print(f"        weights: moving average, ema_decay {ema}")
    return 0


def describe_captions_record(values: dict | None) -> str:
    """A recorded caption policy's settings that differ from the default, as ``name=value``; "" if none."""
    from dataclasses import asdict

    from napari_textsr.training.captions import CaptionPolicy

    if not values:
        return ""
    try:
        policy = CaptionPolicy.from_dict(values)
    except (ValueError, TypeError):
        return f"unreadable record {values!r}"
    default = asdict(CaptionPolicy())
    changed = {k: v for k, v in asdict(policy).items() if v != default[k]}
    return ", ".join(f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in changed.items())


def describe_degradation_record(values: dict) -> str:
    """A recorded degradation in words: the family preset, or the fixed pipeline."""
    from napari_textsr.training.degradations import DegradationFamily, degradation_from_dict

    if not values:
        return "not recorded"
    try:
        degradation = degradation_from_dict(values)
    except (ValueError, TypeError):
        return f"unreadable record {values!r}"
    if isinstance(degradation, DegradationFamily):
        changed = degradation.changes_from_preset()
        if not changed:
            return f"{degradation.preset} family (drawn per sample)"
        from napari_textsr.training.degradations import format_degradation_options

        return f"{degradation.preset} family (drawn per sample) with {format_degradation_options(changed)}"
    if degradation.to_dict() == type(degradation)(scale=degradation.scale).to_dict():
        return "antialiased bicubic only (the benchmark convention)"
    return str(degradation)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
