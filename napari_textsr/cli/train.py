"""``textsr train``: train or fine-tune a TGSR, CLIP-SR or PDN model on captioned images.

Also runs data-parallel under ``torchrun --nproc_per_node N -m napari_textsr.cli train ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from napari_textsr._generators import drive
from napari_textsr.cli import command_help
from napari_textsr.methods import method_names
from napari_textsr.training.config import config_defaults
from napari_textsr.training.presets import describe_presets

if TYPE_CHECKING:  # pragma: no cover
    from napari_textsr.training.captions import CaptionPolicy

# Every default is TrainConfig's: the options default to None, so ``--resume``
# can tell what the user typed (overrides) from what the resumed run already
# fixed, and a new run leaves what was not typed to the dataclass.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help=command_help("train"),
        description=(
            "Train (or fine-tune with --init) a text-guided SR model on folders of images with captions.csv "
            "and/or synthetic scenes, with the losses of the method's paper. Writes OUT/model.textsr.safetensors "
            "(usable at once by 'textsr upscale' and napari) and OUT/train_state.pt (for --resume). "
            "Ctrl-C or SIGTERM stops after the current step and saves. Data-parallel: "
            "torchrun --nproc_per_node 2 -m napari_textsr.cli train ..."
        ),
    )
    defaults = config_defaults()
    settings: list[str] = []  # the TrainConfig fields options set directly
    a = parser.add_argument

    def setting(flag: str, field: str, text: str, *, note: str | None = "", **kwargs: Any) -> None:
        """An option that sets TrainConfig.<field> (its dest); the help ends with the field's default
        (or ``note``; ``note=None``: no default shown)."""
        settings.append(field)
        ending = "" if note is None else f" (default: {note})" if note else f" (default {defaults[field]})"
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
        a(flag, dest=field, default=None, help=text + ending, **kwargs)

    a(
        "--data",
        action="append",
        default=[],
        metavar="DIR",
        help="captioned image folder (images + captions.csv), or synthetic:N:SEED[:SIZE]; repeatable",
    )
    a(
        "--method",
        choices=method_names(),
        default=None,
        help="method to train (required unless --resume, --init or --recipe-from gives it)",
    )
    setting("--scale", "scale", "upscaling factor 2, 4, 8 or 16", type=int)
    setting(
        "--encoder",
        "encoder",
        "prompt encoder ARCH:PRETRAINED",
        metavar="SPEC",
        note="the --init checkpoint's, else the --recipe-from checkpoint's, else textsr-tiny:none",
    )
    setting("--steps", "steps", "total optimiser steps", type=int)
    a("--out", required=True, metavar="DIR", help="output folder for the checkpoint and training state")
    setting(
        "--init",
        "init",
        "fine-tune from this checkpoint: a file, a bundled model's name (e.g. pdn-x2) or 'default' (at --scale); "
        "--method and --scale default to the checkpoint's (with --encoder, onto another prompt encoder); how it was "
        "trained is not taken unless --recipe-from init is given, and training it another way can undo it",
        metavar="CKPT",
        note=None,
    )
    a(
        "--recipe-from",
        default=None,
        metavar="CKPT",
        help="start from how this checkpoint's last stage was trained (a file, a bundled model's name, 'default' "
        "for the default PDN at --scale, or 'init' for the --init checkpoint): its degradation family, caption "
        "policy, losses, batch, patch, learning rate, steps, weight average and (without --init) prompt encoder; "
        "options given here override them (--degradation-option changes its family). Not with --resume: a "
        "resumed run keeps its own",
    )
    a(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where it stopped (its settings are reused; options given here override "
        "steps, intervals, --ema, device and threads)",
    )
    a(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out folder that already holds a model or a run, replacing them",
    )
    setting("--preset", "preset", "model size preset, e.g. tiny, small, default, paper")
    setting("--batch-size", "batch_size", "global batch size", type=int)
    setting("--patch", "lr_patch", "LR patch side in pixels", type=int)
    setting("--lr", "learning_rate", "peak learning rate, cosine schedule", type=float)
    a(
        "--degradations",
        default=None,
        metavar="PRESET",
        help=f"how LR training inputs are made: a family drawn per sample, {describe_presets()}; or 'fixed' "
        "(one pipeline: --blur-sigma, --noise, --degradation-option)",
    )
    a(
        "--degradation-option",
        default=None,
        metavar="NAME=VALUE,...",
        help="change family settings, e.g. p_jpeg=0,blur_sigma_range=0.2:2 (ranges as LOW:HIGH, kernel lists as "
        "bicubic-aa:area), or a fixed pipeline's, e.g. resize=area,jpeg_quality=60",
    )
    a(
        "--blur-sigma",
        type=float,
        default=None,
        help="a fixed pipeline with this Gaussian blur sigma (HR px) before down-sampling (PDN's BD setting: 1.3)",
    )
    a(
        "--noise",
        default=None,
        metavar="PEAK[:SIGMA]",
        help="a fixed pipeline with Poisson-Gaussian noise on the LR: photons at intensity 1 ('none' for no Poisson) "
        "and Gaussian sigma, e.g. 100:0.01 or none:0.02",
    )
    a(
        "--caption-rates",
        default=None,
        metavar="FULL,CONTENT,WORDS,EMPTY",
        help="rates of a sample's caption being content + degradation words, content alone, degradation words alone, "
        "and empty (caption dropout); default 0.45,0.2,0.15,0.2; 0,1,0,0 trains on content captions only",
    )
    a(
        "--degradation-as-content",
        type=float,
        default=None,
        metavar="P",
        help="of the samples whose caption puts blur, noise or JPEG into words, the fraction captioned 'sharp/clean' "
        "instead with that blur and noise kept in the target, so the words decide whether grain and softness are "
        "removed or kept as detail (default 0)",
    )
    a(
        "--as-content-kinds",
        default=None,
        metavar="KINDS",
        help="with --degradation-as-content: which kinds those samples keep, 'blur' or 'noise,jpeg' (the others "
        "stay in the words and leave the target; default blur,noise,jpeg)",
    )
    a(
        "--empty-keeps-blur",
        type=float,
        default=None,
        metavar="P",
        help="of the empty-caption samples whose degradation blurs, the fraction whose target keeps the blur, so "
        "that without a caption soft scenes stay soft and only the words 'out of focus' ask for deblurring (default 0)",
    )
    a(
        "--other-content",
        type=float,
        default=None,
        metavar="P",
        help="of the samples whose caption carries a content caption, the fraction given another training image's "
        "content caption instead (target unchanged), so that a wrong caption costs little (default 0)",
    )
    a(
        "--init-transfer",
        action="store_true",
        help="with --init: start from a checkpoint of another scale, taking every tensor that fits (the backbone)",
    )
    a(
        "--loss-weights",
        default=None,
        metavar="NAME=VALUE,...",
        help="change loss settings, e.g. tic=0,cgan=0.2 (tgsr), perceptual=0,vgg_weights=PATH (clipsr), "
        "kernel_temperature_every=5 or l1=0,l2=1 (pdn: L2 for a last, PSNR-oriented stage); a weight of 0 turns a term off",
    )
    a(
        "--adversarial",
        action="store_true",
        help="switch on the method's adversarial loss (tgsr, clipsr; off by default)",
    )
    a(
        "--paper-losses",
        action="store_true",
        help="the paper's full objective: also TGSR's text-image consistency term (off by default, see the docs)",
    )
    setting("--val-fraction", "val_fraction", "held-out fraction of the images", type=float)
    setting("--val-every", "val_every", "validation interval", type=int, metavar="STEPS")
    setting("--checkpoint-every", "checkpoint_every", "checkpoint interval", type=int, metavar="STEPS")
    setting("--warmup", "warmup_steps", "linear learning-rate warm-up", type=int, metavar="STEPS")
    setting("--grad-clip", "grad_clip", "max gradient norm, 0 = off", type=float)
    setting(
        "--ema",
        "ema_decay",
        "decay of an exponential moving average of the weights, which validation and the checkpoint use, "
        "e.g. 0.999 (about the last 1000 steps); 0 = off",
        metavar="DECAY",
        type=float,
    )
    a(
        "--model-option",
        default=None,
        metavar="NAME=VALUE,...",
        help="model config overrides of a new model, e.g. text_fusion=false; with --init, n_blocks=N grows "
        "a PDN to N blocks that start as the identity and n_feats=C to C feature channels that start at "
        "zero (the same output at step 0)",
    )
    setting("--name", "name", "name stored in the checkpoint", note=None)
    setting("--seed", "seed", "seed of the batches and the model's initialisation", type=int)
    setting(
        "--split-seed",
        "split_seed",
        "seed of the train/validation split by image name, independent of --seed",
        type=int,
    )
    setting("--device", "device", "auto, cpu, cuda, cuda:1, mps")
    setting("--threads", "num_threads", "torch CPU threads", type=int, note="torch's choice; split over torchrun ranks")
    setting(
        "--workers",
        "workers",
        "processes drawing the coming batches while the model trains (0: in the "
        "training process); the batches are the same for any N, a GPU needs a few to stay busy",
        type=int,
        metavar="N",
    )
    a("--no-progress", action="store_true", help="no progress bar; print one line per validation instead")
    parser.set_defaults(func=run, config_fields=tuple(settings))


def _parse_noise(text: str | None) -> tuple[float | None, float]:
    if not text:
        return None, 0.0
    peak_text, _, sigma_text = text.partition(":")
    try:
        peak = None if peak_text.strip().lower() in ("", "none") else float(peak_text)
        sigma = float(sigma_text) if sigma_text else 0.0
    except ValueError:
        raise ValueError(f"--noise must be PEAK[:SIGMA] (e.g. 100:0.01 or none:0.02), got {text!r}") from None
    return peak, sigma


def _parse_caption_rates(text: str, base: CaptionPolicy) -> CaptionPolicy:
    """``base`` with the form rates of ``--caption-rates`` FULL,CONTENT,WORDS,EMPTY (its other settings kept)."""
    try:
        rates = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--caption-rates must be four numbers FULL,CONTENT,WORDS,EMPTY, got {text!r}") from None
    if len(rates) != 4:
        raise ValueError(f"--caption-rates must be four numbers FULL,CONTENT,WORDS,EMPTY, got {text!r}")
    return base.with_form_rates(rates)


def _parse_setting(value: str) -> Any:
    """One NAME=VALUE value: true/false, none, numbers, LOW:HIGH tuples, else the string."""
    value = value.strip()
    if ":" in value:
        return tuple(_parse_setting(part) for part in value.split(":"))
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _build_degradation(given: dict[str, Any], previous: Any, scale: int, kind: str | None):
    """The run's degradation: a preset family (default), or a fixed pipeline, with --degradation-option changes.

    ``previous``: the resumed run's, or the --recipe-from checkpoint's. Without
    --degradations it is kept, with the options' changes made to it (not to
    its preset); --degradations PRESET starts again from that preset.
    """
    import dataclasses

    from napari_textsr.training.degradations import DEFAULT_PRESET, Degradation, DegradationFamily

    legacy = "blur_sigma" in given or "noise" in given
    options = {}
    for part in (p.strip() for p in (given.get("degradation_option") or "").split(",")):
        if part:
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"--degradation-option {part!r} is not NAME=VALUE")
            options[name.strip()] = _parse_setting(value)
    keep_previous = kind is None and not legacy and previous is not None
    if kind is None:
        if legacy:
            kind = "fixed"
        elif previous is not None and not options:
            return previous
        elif previous is not None:
            kind = "fixed" if isinstance(previous, Degradation) else previous.preset
        else:
            kind = DEFAULT_PRESET
    if kind == "fixed":
        base = previous if isinstance(previous, Degradation) else None
        values = (base or Degradation(scale=scale)).to_dict()
        values.pop("kind")
        if "blur_sigma" in given:
            values["blur_sigma"] = float(given["blur_sigma"])
        if "noise" in given:
            values["noise_poisson_peak"], values["noise_gaussian_sigma"] = _parse_noise(given["noise"])
        unknown = set(options) - set(values)
        if unknown:
            raise ValueError(
                f"--degradation-option: a fixed pipeline has no {sorted(unknown)}; it has {sorted(values)}"
            )
        values.update(options)
        return Degradation(**values)
    if legacy:
        raise ValueError(
            "--blur-sigma and --noise make a fixed pipeline: use them with --degradations fixed (or alone)"
        )
    if isinstance(previous, DegradationFamily) and (keep_previous or kind == "custom"):
        family = previous
    else:
        family = DegradationFamily.preset_family(kind, scale)
    known = {f.name for f in dataclasses.fields(family)} - {"scale", "preset"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"--degradation-option: a degradation family has no {sorted(unknown)}; it has {sorted(known)}")
    return dataclasses.replace(family, **options)


def _parse_options(text: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--model-option {part!r} is not NAME=VALUE")
        lowered = value.strip().lower()
        parsed: Any
        if lowered in ("true", "false"):
            parsed = lowered == "true"
        else:
            try:
                parsed = int(value)
            except ValueError:
                try:
                    parsed = float(value)
                except ValueError:
                    parsed = value.strip()
        options[name.strip()] = parsed
    return options


def _recorded_command() -> str | None:
    """The command line as typed, when this process is the ``textsr train`` CLI.

    The program is written as ``textsr`` (the same entry point as ``python -m
    napari_textsr.cli``); under torchrun the torchrun launcher is put in front.
    None when called from Python (the trainer then records an equivalent command).
    """
    if sys.argv[1:2] != ["train"]:
        return None
    command = "textsr " + shlex.join(sys.argv[1:])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        nproc = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
        nnodes = int(os.environ["WORLD_SIZE"]) // max(1, int(nproc))
        prefix = f"torchrun --nproc_per_node {nproc}" + (f" --nnodes {nnodes}" if nnodes > 1 else "")
        command = f"{prefix} -m napari_textsr.cli " + shlex.join(sys.argv[1:])
    return command


def build_config(args: argparse.Namespace):
    """TrainConfig from parsed arguments (for --resume: the run's config plus overrides).

    A new run takes TrainConfig's defaults for every option not given.
    """
    from pathlib import Path

    from napari_textsr.training.config import TrainConfig
    from napari_textsr.training.losses import default_loss_weights, parse_loss_overrides

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the checkpoint and training state")
    given = {k: v for k, v in vars(args).items() if v is not None}
    if "init" in given:
        given["init"] = _resolve_init(given["init"], given.get("scale"))
    values: dict[str, Any]
    if args.resume and args.recipe_from:
        raise ValueError("--recipe-from starts a new run; --resume continues one with its own recipe (leave one out)")
    if args.resume and (out / "train_state.pt").is_file():
        config = TrainConfig.from_run(out)
        values = config.to_dict()
        values.update(degradation=config.degradation, losses=config.losses)
    else:
        if "init" in given:  # fine-tuning: the method and scale default to the checkpoint's
            from napari_textsr.checkpoints import read_metadata

            meta = read_metadata(given["init"])
            given.setdefault("method", meta.method)
            if not args.init_transfer:
                given.setdefault("scale", meta.scale)
        recipe = _recipe(args.recipe_from, given) if args.recipe_from else {}
        if not given.get("method"):
            raise ValueError("--method is required (tgsr, clipsr or pdn)")
        if not args.data:
            raise ValueError("no training data: give --data DIR or --data synthetic:N:SEED")
        values = {"method": args.method, "data": [], "out_dir": out, **recipe}
    method = given.get("method") or values["method"]
    # Options whose dest is a TrainConfig field (see register) override the run's values.
    values.update({name: given[name] for name in args.config_fields if name in given})
    scale = int(values.get("scale", config_defaults()["scale"]))
    values["method"] = method
    if args.data:
        values["data"] = list(args.data)
    if "val_every" in values:
        values["preview_every"] = values["val_every"]
    if args.init_transfer:
        values["init_transfer"] = True
    if isinstance(values.get("captions"), dict):
        from napari_textsr.training.captions import CaptionPolicy

        values["captions"] = CaptionPolicy.from_dict(values["captions"])
    if args.caption_rates:  # a resumed run keeps its other caption settings unless told otherwise
        from napari_textsr.training.captions import CaptionPolicy

        values["captions"] = _parse_caption_rates(args.caption_rates, values.get("captions") or CaptionPolicy())
    caption_options = (args.degradation_as_content, args.as_content_kinds, args.empty_keeps_blur, args.other_content)
    if any(option is not None for option in caption_options):
        from napari_textsr.training.captions import CaptionPolicy

        policy = values.get("captions") or CaptionPolicy()
        if args.empty_keeps_blur is not None:
            policy = replace(policy, p_empty_keeps_blur=args.empty_keeps_blur)
        if args.other_content is not None:
            policy = replace(policy, p_other_content=args.other_content)
        if args.degradation_as_content is not None:
            policy = replace(policy, p_degradation_as_content=args.degradation_as_content)
        if args.as_content_kinds is not None:
            kinds = tuple(k.strip() for k in args.as_content_kinds.split(",") if k.strip())
            policy = replace(policy, as_content_kinds=kinds)
        values["captions"] = policy
    values["resume"] = bool(args.resume)
    values["out_dir"] = out

    values["degradation"] = _build_degradation(given, values.get("degradation"), scale, args.degradations)

    losses = values.get("losses") or default_loss_weights(method)
    overrides = parse_loss_overrides(given.get("loss_weights", "") or "")
    if args.adversarial or args.paper_losses:
        overrides["adversarial"] = "true"
    if args.paper_losses and "consistency" in losses.to_dict():
        overrides["consistency"] = "true"
    if overrides:
        losses = losses.replace(**overrides)
    values["losses"] = losses
    if args.model_option:
        values["model_overrides"] = _parse_options(args.model_option)
    values["command"] = _recorded_command()
    return TrainConfig(**values)


def _recipe(spec: str, given: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig values of ``--recipe-from SPEC`` (``init``: the --init checkpoint), checked against the run.

    The run's method and scale, where not typed, default to the recipe's
    (``given`` is updated). With --init the model, and so its prompt encoder,
    is the --init checkpoint's: the recipe's encoder is left out.
    """
    from napari_textsr.checkpoints import read_metadata
    from napari_textsr.training.config import recipe_of

    if spec == "init" and "init" not in given:
        raise ValueError("--recipe-from init takes the recipe of the --init checkpoint: give --init too")
    path = given["init"] if spec == "init" else _resolve_init(spec, given.get("scale"), option="--recipe-from")
    try:
        meta = read_metadata(path)
        given.setdefault("method", meta.method)
        if not (spec == "init" and given.get("init_transfer")):
            given.setdefault("scale", meta.scale)
        values = recipe_of(path, method=given["method"], scale=given.get("scale", config_defaults()["scale"]))
    except ValueError as error:  # CheckpointError included
        raise ValueError(f"--recipe-from {spec}: {error}") from error
    if "init" in given:
        values.pop("encoder", None)
    return values


def _resolve_init(spec: str, scale: int | None, option: str = "--init") -> str:
    """--init as a checkpoint path: a file, a bundled model's name (``pdn-x2``) or ``default`` (at --scale).

    Raises ValueError naming the bundled models for a name that is neither.
    """
    from napari_textsr.loading import ModelSpec, ModelSpecError, resolve_checkpoint

    try:
        parsed = ModelSpec.parse(spec)
        if parsed.kind == "random":
            raise ModelSpecError(f"{option} needs a trained checkpoint, not a random model (leave {option} out)")
        return str(resolve_checkpoint(parsed, scale)[0])
    except (ModelSpecError, FileNotFoundError) as error:
        raise ValueError(f"{option} {spec}: {error}") from error


def run(args: argparse.Namespace) -> int:
    from napari_textsr.cli._signals import stop_on_signals
    from napari_textsr.training.trainer import Trainer

    config = build_config(args)
    rank = int(os.environ.get("RANK", "0"))
    trainer = Trainer(config, overwrite=getattr(args, "overwrite", False))

    bar = None
    val_text = ""

    def show(event) -> None:
        """One TrainingEvent on rank 0: messages, the progress bar, or a line per validation."""
        nonlocal bar, val_text
        if rank != 0:
            return
        if event.message:
            _write(bar, f"[step {event.step}] {event.message}")
        if bar is None and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(
                total=event.total_steps,
                initial=event.step - (1 if event.losses else 0),
                unit="step",
                dynamic_ncols=True,
                desc=f"{config.method} x{config.scale}",
            )
        if event.validation is not None:
            v = event.validation
            val_text = f"{v.psnr:.2f} dB (bicubic {v.psnr_bicubic:.2f})"
            if args.no_progress:
                print(
                    f"step {event.step}/{event.total_steps}: val PSNR-Y {val_text}, SSIM-Y {v.ssim:.4f} "
                    f"(bicubic {v.ssim_bicubic:.4f})",
                    flush=True,
                )
        if bar is not None and event.losses:
            postfix = {"loss": f"{event.losses.get('total', float('nan')):.4f}", "lr": f"{event.learning_rate:.2e}"}
            if val_text:
                postfix["val PSNR"] = val_text
            bar.set_postfix(postfix, refresh=False)
            bar.update(event.step - bar.n)

    # First Ctrl-C or SIGTERM: finish the step, save and stop (on every torchrun
    # rank); a second one interrupts at once.
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_on_signals(trainer.request_stop, lambda: trainer.stop_requested, announce=rank == 0))
        stack.callback(lambda: bar.close() if bar is not None else None)
        summary = drive(trainer.run(), show)
    if rank == 0:
        state = "stopped" if summary.cancelled else "finished"
        print(
            f"{state} at step {summary.steps_completed}/{summary.total_steps} "
            f"({summary.images_per_second:.1f} images/s); checkpoint: {summary.checkpoint}"
        )
        if summary.validation is not None:
            v = summary.validation
            print(
                f"validation ({v.n_images} images): PSNR-Y {v.psnr:.2f} dB, SSIM-Y {v.ssim:.4f}; "
                f"bicubic {v.psnr_bicubic:.2f} dB, {v.ssim_bicubic:.4f}"
            )
        if summary.cancelled:
            print(f"resume with: textsr train --out {config.out_dir} --resume")
    return 130 if summary.cancelled else 0


def _write(bar, text: str) -> None:
    if bar is not None:
        bar.write(text)
    else:
        print(text, file=sys.stderr, flush=True)
