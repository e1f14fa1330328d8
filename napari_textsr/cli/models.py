"""``textsr models``: the models bundled with the package."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the bundled models",
        description=(
            "List the models shipped in napari_textsr/weights/: name (for --model), method, scale, "
            "what each was trained on and its validation figures."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_textsr import loading

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
    for m in models:
        record = m.training
        steps = f"{record.steps} steps" if record else "no training record"
        print(f"{m.name.ljust(name_width)}  {m.method:<6}  x{m.scale:<2}  {steps}  (encoder {m.encoder})")
        if m.description:
            print(f"    {m.description}")
        if record and record.data:
            print(f"    trained on: {'; '.join(record.data)}")
        # A fine-tune names its starting point and how that was trained, back to the first run.
        parent = record.extra.get("init_training") if record else None
        while parent:
            print(f"    fine-tuned from a model trained {parent.get('steps')} steps on: {'; '.join(parent.get('data', []))}")
            parent = (parent.get("extra") or {}).get("init_training")
        if record and record.validation:
            figures = ", ".join(f"{k}={_number(v)}" for k, v in record.validation.items())
            print(f"    validation: {figures}")
    return 0


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
