"""``textsr upscale`` (one image file to another) and ``textsr info`` (describe a model)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_textsr.cli import (
    add_consistency_option,
    add_file_words_option,
    add_self_ensemble_option,
    add_threads_option,
    command_help,
    consistency_choice,
    file_words_caption,
)

# Outputs of more than this many bytes written to .tif are streamed tile by
# tile into a tiled BigTIFF (memory independent of the output's size) instead
# of being held whole; --stream forces it.
STREAM_BYTES = 1 << 30

if TYPE_CHECKING:
    from napari_textsr.imageio import JpegEvidence
    from napari_textsr.inference import Upscaler


def register(subparsers) -> None:
    upscale = subparsers.add_parser(
        "upscale",
        help=command_help("upscale"),
        description=(
            "Upscale IN (png, jpg, tif: 8/16-bit, float, multi-page stacks, RGB/RGBA, ImageJ/OME) and write OUT "
            "(.tif keeps any dtype, stack and series; .png 8/16-bit grey, RGB, RGBA; .jpg 8-bit grey or RGB). "
            "Same dtype as the input; the physical pixel size is divided by the scale (units, z spacing and "
            "channel names kept); the caption, model and settings are stored in OUT's metadata. "
            "With a folder or a glob pattern as IN and --out-dir, every image in it is upscaled "
            "(other files skipped with a note; a file that fails is reported and the rest go on). "
            "OUT is checked (format, dtype, not the input) before any work."
        ),
    )
    upscale.add_argument("input", metavar="IN", help="image file, folder of images or glob pattern ('scans/*.tif')")
    upscale.add_argument("output", type=Path, nargs="?", default=None, metavar="OUT", help="output file (one input)")
    upscale.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each output here, named like its input (batch mode)",
    )
    upscale.add_argument(
        "--format",
        default=None,
        choices=("tif", "png", "jpg"),
        help="output format in batch mode (default: each input's own)",
    )
    upscale.add_argument("--caption", default="", metavar="TEXT", help="what the image shows (default: none)")
    add_file_words_option(upscale)
    upscale.add_argument(
        "--model",
        default="default",
        metavar="SPEC",
        help="checkpoint path, bundled model name, 'default' (bundled, for --scale; for an input "
        "JPEG-compressed at quality <= 60, the bundled model trained for such inputs where there is one) or "
        "'random:<method>:<scale>[:<preset>]' (untrained; default: %(default)s)",
    )
    upscale.add_argument(
        "--scale",
        type=int,
        default=None,
        help="upscaling factor: picks the default model of that scale (default x4) and refuses a --model of another",
    )
    upscale.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="tile side in input pixels; 0 = no tiling (default: from free memory)",
    )
    upscale.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
    upscale.add_argument(
        "--precision",
        choices=("auto", "full", "half"),
        default="auto",
        help="half = float16 autocast on GPUs (auto: half on GPUs, full on the CPU)",
    )
    add_self_ensemble_option(upscale)
    add_consistency_option(upscale)
    upscale.add_argument(
        "--reference",
        default=None,
        metavar="PATH|flip",
        help="image prompt instead of the caption: an image file, or 'flip' for the horizontally "
        "flipped input (PDN's protocol for uncaptioned images; middle slice of a stack)",
    )
    upscale.add_argument(
        "--attention-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the attention maps (and the consistency map) here",
    )
    upscale.add_argument(
        "--attention-format",
        choices=("tif", "png"),
        default="tif",
        help="float32 TIFF (default) or 8-bit PNG scaled to each map's maximum",
    )
    upscale.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse inputs that decode to more pixels than this (default: 2**28 = 16384^2)",
    )
    upscale.add_argument(
        "--stream", action="store_true", help="write a .tif output tile by tile (tiled BigTIFF; automatic above 1 GiB)"
    )
    upscale.add_argument(
        "--zarr-levels",
        type=int,
        default=3,
        metavar="N",
        help="pyramid levels of a .zarr output (OME-Zarr, NGFF 0.5; default: %(default)s)",
    )
    regions = upscale.add_argument_group(
        "region captions",
        "a caption per labelled region; the rest of the image keeps --caption (see docs/api-and-cli.md)",
    )
    regions.add_argument(
        "--regions",
        type=Path,
        default=None,
        metavar="LABELS",
        help="label image on the input grid (Y, X integers, 0 = background; .tif or .png)",
    )
    regions.add_argument(
        "--region-captions",
        type=Path,
        default=None,
        metavar="CSV",
        help="CSV of 'label,caption' rows (a header row 'label,caption' is allowed)",
    )
    regions.add_argument(
        "--feather",
        type=float,
        default=None,
        metavar="PX",
        help="width in output pixels of the blend at region borders (default: 8)",
    )
    upscale.add_argument(
        "--text-effect",
        type=Path,
        default=None,
        metavar="FILE",
        help="also upscale without any caption and write OUT - uncaptioned (signed, output "
        "intensity units, float32 .tif; mean over colour channels)",
    )
    upscale.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="REPORT.json",
        help="write an evidence report: SHA-256 of IN, OUT (file and array) and the model, every "
        "parameter, versions, device, precision, statistics. OUT's embedded metadata then "
        "leaves out the run time, so reruns write the same bytes",
    )
    upscale.add_argument(
        "--deterministic",
        action="store_true",
        help="ask PyTorch for deterministic kernels (bit-identical GPU reruns; the CPU is anyway)",
    )
    upscale.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_option(upscale)
    upscale.set_defaults(func=run_upscale)

    info = subparsers.add_parser(
        "info",
        help=command_help("info"),
        description="Print the model's description (method, scale, config, encoder, tiling, training record) as JSON.",
    )
    info.add_argument("spec", metavar="SPEC", help="checkpoint path, bundled name, 'default' or 'random:...'")
    info.add_argument("--scale", type=int, default=None)
    info.add_argument("--device", default="cpu", help="device to load on (default: cpu)")
    add_threads_option(info)
    info.set_defaults(func=run_info)


def _half(precision: str) -> bool | None:
    return {"auto": None, "full": False, "half": True}[precision]


def _max_pixels(args: argparse.Namespace) -> int | None:
    from napari_textsr.imageio import DEFAULT_MAX_PIXELS

    if args.max_pixels is None:
        return DEFAULT_MAX_PIXELS
    return None if args.max_pixels <= 0 else args.max_pixels


def _batch_inputs(text: str) -> list[Path] | None:
    """The files of a folder or glob pattern, sorted; None for a single file."""
    import glob

    from napari_textsr.imageio import is_zarr

    path = Path(text)
    if is_zarr(path):
        return None
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() or is_zarr(p))
    if any(ch in text for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file() or is_zarr(p))
    return None


def run_upscale(args: argparse.Namespace) -> int:
    from napari_textsr.imageio import check_output

    args.consistency = consistency_choice(args)
    batch = _batch_inputs(args.input)
    if args.deterministic:
        from napari_textsr.report import enable_deterministic

        enable_deterministic()
    if batch is not None or args.out_dir is not None:
        if args.regions is not None or args.text_effect is not None or args.report is not None:
            raise ValueError("--regions, --text-effect and --report are for one input file, not --out-dir batches")
        if args.output is not None and args.out_dir is not None:
            raise ValueError("give OUT for one input, or --out-dir DIR for a folder or pattern, not both")
        if args.out_dir is None:
            raise ValueError(f"{args.input} is a folder or pattern: give --out-dir DIR instead of OUT")
        return _run_batch(args, batch if batch is not None else [Path(args.input)])
    if args.output is None:
        raise ValueError("OUT is missing (or use --out-dir DIR)")
    if args.format is not None:
        raise ValueError(f"--format is for --out-dir batches; OUT's suffix ({args.output}) sets the format")
    source_path = Path(args.input)
    check_output(args.output, "uint8", False)  # the suffix, before anything is read
    job = _Job.plan(source_path, args.output, _max_pixels(args))  # every check before any work
    job.regions = _regions(args)
    if (job.regions is not None or args.text_effect is not None or args.report is not None) and len(job.images) > 1:
        raise ValueError(
            f"{source_path} holds {len(job.images)} series: --regions, --text-effect and --report take one image"
        )
    models = _Models(args)
    with _bar(args, "tile") as bar:
        message = job.run(models, args, _tile_progress(bar, set_total=True))
    print(message)
    models.note_untrained()
    return 0


class _Models:
    """The model for each input, each loaded once: ``--model``, or for an input that shows
    JPEG compression of quality <= 60 the bundled model trained for such inputs when
    ``--model`` is the default (:func:`napari_textsr.loading.default_for_input`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._loaded: dict[str, Upscaler] = {}

    def for_input(self, evidence: JpegEvidence | None) -> Upscaler:
        from napari_textsr.inference import load_model
        from napari_textsr.loading import default_for_input

        args = self.args
        spec = str(default_for_input(args.model, args.scale, evidence.quality if evidence else None))
        if spec not in self._loaded:
            self._loaded[spec] = load_model(
                spec,
                scale=args.scale,
                device=args.device,
                half=_half(args.precision),
                self_ensemble=args.self_ensemble,
            )
        return self._loaded[spec]

    def note_untrained(self) -> None:
        for upscaler in self._loaded.values():
            if not upscaler.description.trained:
                print(
                    f"note: {upscaler.description.name} is untrained; its output shows the plumbing, "
                    "not super-resolution",
                    file=sys.stderr,
                )


def _bar(args: argparse.Namespace, unit: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="upscale", file=sys.stderr, disable=args.quiet, leave=False)


def _tile_progress(bar, set_total: bool):
    def progress(event) -> None:
        if set_total:
            if bar.total != event.total:
                bar.reset(total=event.total)
            bar.n = event.done
        bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    return progress


def _run_batch(args: argparse.Namespace, inputs: list[Path]) -> int:
    from napari_textsr.imageio import is_image_path

    args.out_dir.mkdir(parents=True, exist_ok=True)
    images = [p for p in inputs if is_image_path(p)]
    for skipped in (p for p in inputs if not is_image_path(p)):
        print(f"skipped {skipped}: not an image file", file=sys.stderr)
    if not images:
        raise ValueError(f"no image files in {args.input}")
    models = _Models(args)
    written, failed = 0, []
    with _bar(args, "file", total=len(images)) as bar:
        for path in images:
            suffix = f".{args.format}" if args.format else path.suffix
            target = args.out_dir / (path.stem + suffix)
            bar.set_description_str(path.name, refresh=False)
            try:
                job = _Job.plan(path, target, _max_pixels(args))
                message = job.run(models, args, _tile_progress(bar, set_total=False))
            except Exception as error:  # one bad file must not stop the rest
                failed.append(path)
                bar.write(f"failed {path}: {error}", file=sys.stderr)
            else:
                written += 1
                bar.write(message)
            bar.update(1)
    print(f"{written} written to {args.out_dir}, {len(inputs) - len(images)} skipped, {len(failed)} failed")
    models.note_untrained()
    return 1 if failed else 0


class _Job:
    """One input file, read and checked against its output before any model runs."""

    def __init__(self, source: Path, target: Path, images: list) -> None:
        self.source, self.target, self.images = source, target, images
        self.regions = None  # RegionCaptions from --regions/--region-captions (one-image jobs)

    @classmethod
    def plan(cls, source: Path, target: Path, max_pixels: int | None) -> "_Job":
        from napari_textsr.imageio import check_not_same_file, check_output, read_image_series

        check_output(target, "uint8", False)
        check_not_same_file(source, target)
        images = read_image_series(source, max_pixels=max_pixels)
        first = images[0]
        check_output(
            target,
            first.data.dtype,
            first.rgb,
            channels=first.data.shape[-1] if first.rgb else 1,
            stack=bool(first.leading_axes),
            series=len(images),
        )
        return cls(source, target, images)

    def run(self, models: _Models, args: argparse.Namespace, progress) -> str:
        """Upscale every series and write the output; returns the line to print."""
        from napari_textsr.imageio import TIFF_SUFFIXES, ZARR_SUFFIXES, write_image_file, write_map, write_tiff_series
        from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY

        outputs, results, noted, binned = [], [], [], []
        for image in self.images:
            caption, evidence = _caption(args, image)
            if evidence is not None and (caption, evidence) not in noted:
                noted.append((caption, evidence))
            if image.binning is not None and (caption, image.binning) not in binned:
                binned.append((caption, image.binning))
            upscaler = models.for_input(evidence)
            reference = _reference(args.reference, image)
            out_bytes = image.data.nbytes * upscaler.scale**2
            stream = (
                self.target.suffix.lower() in TIFF_SUFFIXES
                and len(self.images) == 1
                and (args.stream or out_bytes > STREAM_BYTES)
            )
            kwargs = dict(
                rgb=image.rgb,
                tile=args.tile,
                consistency=args.consistency,
                reference=reference,
                attention=args.attention_dir is not None,
                progress=progress,
            )
            composite = self.regions is not None or getattr(args, "text_effect", None) is not None
            if composite and (stream or self.target.suffix.lower() in ZARR_SUFFIXES):
                raise ValueError("--regions and --text-effect write an in-memory output: not with --stream or .zarr")
            if composite:
                kwargs.update(regions=self.regions, text_effect=args.text_effect is not None)
            if self.target.suffix.lower() in ZARR_SUFFIXES:
                result = self._zarr(upscaler, image, caption, kwargs, args, reference, evidence)
            elif stream:
                result = self._stream(upscaler, image, caption, kwargs, args, reference, evidence)
            else:
                result = upscaler.upscale(image.data, caption, **kwargs)
                provenance = self._provenance(result, args, reference, evidence)
                outputs.append(image.upscaled(result.image, result.scale, provenance))
            results.append(result)
        if len(outputs) > 1:
            write_tiff_series(self.target, outputs)
        elif outputs:
            write_image_file(self.target, outputs[0])
        result = results[0]
        maps = 0
        if args.attention_dir is not None:
            stem = self.target.name.split(".")[0]
            suffix = args.attention_format
            for number, r in enumerate(results):
                series = f"_s{number}" if len(results) > 1 else ""
                # Numbered in the model's order, which also keeps repeated words apart.
                for i, (name, values) in enumerate(r.attention.items(), start=1):
                    maps += len(
                        write_map(
                            args.attention_dir / f"{stem}{series}_attention{i:02d}_{_safe(name)}.{suffix}", values
                        )
                    )
                if r.consistency_map is not None:
                    maps += len(
                        write_map(args.attention_dir / f"{stem}{series}_consistency.{suffix}", r.consistency_map)
                    )
        d = result.model
        shapes = ", ".join(f"{r.image.shape}" for r in results)
        line = (
            f"wrote {self.target} {shapes} {result.image.dtype} "
            f"(x{result.scale}, {d.name}, {sum(r.seconds for r in results):.1f} s"
            + (f", tile {result.tile}" if result.tile else "")
            + (f", {len(results)} series" if len(results) > 1 else "")
            + ")"
        )
        for caption, evidence in noted:
            if caption != args.caption:
                line += (
                    f"\ncaption {caption!r}: {evidence.describe()}, "
                    "and the models were trained to read these words (--no-file-words keeps the caption as typed)"
                )
            elif args.file_words and evidence.quality <= FILE_WORDS_MAX_JPEG_QUALITY:
                line += f"\n{evidence.describe()}; the caption already says how the image was taken: kept as typed"
        for caption, binning in binned:
            said = f"the file records camera binning {binning}x{binning}"
            if caption != args.caption:
                line += f"\ncaption {caption!r}: {said} (--no-file-words keeps the caption as typed)"
            elif args.file_words:
                line += f"\n{said}; the caption already says how the image was taken: kept as typed"
        if result.consistency_error is not None:
            line += (
                f"\nconsistency error (RMS, fraction of the intensity range): {result.consistency_error:.4g} "
                f"(resize: {result.consistency_kernel})"
            )
        if args.attention_dir is not None:
            line += f"\nwrote {maps} map file(s) to {args.attention_dir}"
        if result.regions is not None:
            line += (
                f"\n{len(result.regions['regions'])} region caption(s) blended "
                f"(feather {result.regions['feather']:g} px)"
            )
        if getattr(args, "text_effect", None) is not None:
            write_map(args.text_effect, result.text_effect)
            stats = result.text_effect_stats
            line += (
                f"\nwrote {args.text_effect}: |text effect| mean {stats['mean_abs']:.4g}, "
                f"99th percentile {stats['p99_abs']:.4g} (output intensity units)"
            )
        if getattr(args, "report", None) is not None:
            from napari_textsr.report import build_report, sha256_file, write_report

            parameters = {k: v for k, v in vars(args).items() if k != "func"}
            report = build_report(
                result,
                upscaler,
                parameters=parameters,
                input_path=self.source,
                input_array=self.images[0].data,
                output_path=self.target,
            )
            if args.regions is not None:
                report["input"]["regions_file_sha256"] = sha256_file(args.regions)
                report["input"]["region_captions_file_sha256"] = sha256_file(args.region_captions)
            write_report(args.report, report)
            line += f"\nwrote {args.report}: output sha256 {report['output']['file_sha256'][:16]}..."
        return line

    def _provenance(self, result, args: argparse.Namespace, reference, evidence=None) -> dict:
        provenance = result.provenance()
        provenance["input"] = str(self.source)
        if evidence is not None:
            provenance.update(evidence.record())
        if reference is not None:
            provenance["reference"] = args.reference
        if getattr(args, "report", None) is not None:  # the report keeps the times; a rerun writes the same bytes
            provenance.pop("time", None)
            provenance.pop("seconds", None)
            provenance["report"] = args.report.name  # the name only: a rerun elsewhere writes the same bytes
        return provenance

    @staticmethod
    def _output_shape(image, scale: int) -> tuple[int, ...]:
        shape = tuple(image.data.shape)
        lead = len(shape) - (3 if image.rgb else 2)
        return shape[:lead] + (shape[lead] * scale, shape[lead + 1] * scale) + shape[lead + 2 :]

    def _zarr(self, upscaler, image, caption: str, kwargs: dict, args: argparse.Namespace, reference, evidence):
        """Upscale straight into an OME-Zarr (NGFF 0.5) through napari_textsr.ngff; then its pyramid."""
        from napari_textsr.imageio import create_zarr_output, finish_zarr_output, metadata_only

        out_shape = self._output_shape(image, upscaler.scale)
        placeholder = metadata_only(image, out_shape, image.data.dtype).data
        target, sink = create_zarr_output(
            self.target, image.upscaled(placeholder, upscaler.scale), levels=args.zarr_levels
        )
        result = upscaler.upscale(image.data, caption, out=sink, **kwargs)
        finish_zarr_output(target, self._provenance(result, args, reference, evidence))
        return result

    def _stream(self, upscaler, image, caption: str, kwargs: dict, args: argparse.Namespace, reference, evidence):
        """Upscale into a tiled BigTIFF, band by band; the output is never whole in memory."""
        from napari_textsr._generators import relay
        from napari_textsr.imageio import TiffTileBands, metadata_only, write_tiled_tiff
        from napari_textsr.inference import UpscaleCancelled

        out_shape = self._output_shape(image, upscaler.scale)
        sink = TiffTileBands(out_shape, image.data.dtype, image.rgb)
        progress = kwargs.pop("progress")
        generator = upscaler.iter_upscale(image.data, caption, out=sink, **kwargs)
        box: list = []

        def ready_tiles(event):
            progress(event)
            # tifffile closes the tile iterator at its last tile, so the engine must have returned by then.
            return () if sink.all_written else sink.pop_ready()

        def tiles():
            box.append((yield from relay(generator, ready_tiles)))
            yield from sink.pop_ready()

        # The provenance is known only at the end; record what is known now.
        placeholder = metadata_only(image, out_shape, image.data.dtype).data
        meta = image.upscaled(placeholder, upscaler.scale)
        meta.provenance = {
            "caption": upscaler.encoder.fit_caption(caption).encoded,
            "model": upscaler.description.name,
            "scale": upscaler.scale,
            "input": str(self.source),
            "streamed": True,
            **(evidence.record() if evidence is not None else {}),
        }
        write_tiled_tiff(self.target, meta, tiles(), out_shape)
        if not box or not sink.all_written:
            raise UpscaleCancelled(f"{self.target} is incomplete")
        return box[0]


def _caption(args: argparse.Namespace, image) -> tuple[str, JpegEvidence | None]:
    """The caption for one input (--caption, plus the words its JPEG compression and its file's camera
    binning give unless --no-file-words).

    Returns it with what is known of the compression: the JPEG file's
    quality and, for a 2-D 8-bit image, the quality its pixels show; the
    lower of the two (:func:`napari_textsr.imageio.jpeg_evidence`).
    """
    from napari_textsr.imageio import jpeg_evidence

    evidence = jpeg_evidence(image.jpeg_quality, image.data if image.axes in ("YX", "YXS") else None)
    return file_words_caption(args.caption, [evidence], args.file_words, image.binning), evidence


def _regions(args: argparse.Namespace):
    """RegionCaptions from --regions LABELS and --region-captions CSV, or None."""
    if args.regions is None and args.region_captions is None:
        if args.feather is not None:
            raise ValueError("--feather needs --regions and --region-captions")
        return None
    if args.regions is None or args.region_captions is None:
        raise ValueError("--regions and --region-captions go together")
    from napari_textsr.imageio import read_image_file
    from napari_textsr.regions import DEFAULT_FEATHER, RegionCaptions

    labels = read_image_file(args.regions)
    if labels.rgb or labels.data.ndim != 2:
        raise ValueError(f"--regions must be one 2-D label image, got shape {labels.data.shape}")
    captions = read_region_captions(args.region_captions)
    feather = DEFAULT_FEATHER if args.feather is None else args.feather
    return RegionCaptions(labels.data, captions, feather)


def read_region_captions(path: Path) -> dict[int, str]:
    """A CSV of ``label,caption`` rows (UTF-8; a first row ``label,caption`` is a header) -> {label: caption}.

    ValueError names the line of a row without two fields, a label that is not
    a positive integer, or a label given twice.
    """
    import csv

    captions: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not field.strip() for field in row):
                continue
            if line == 1 and row[0].strip().lower() == "label":
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 'label,caption', got {len(row)} field(s)")
            try:
                label = int(row[0])
            except ValueError:
                raise ValueError(f"{path}:{line}: label {row[0]!r} is not an integer") from None
            if label <= 0:
                raise ValueError(f"{path}:{line}: labels are positive (0 is background), got {label}")
            if label in captions:
                raise ValueError(f"{path}:{line}: label {label} is given twice")
            captions[label] = row[1].strip()
    if not captions:
        raise ValueError(f"{path}: no 'label,caption' rows")
    return captions


def _reference(option: str | None, source):
    import numpy as np

    from napari_textsr.imageio import read_image_file

    if option is None:
        return None
    if option == "flip":
        data = source.data
        lead = data.ndim - (3 if source.rgb else 2)
        plane = data[tuple(n // 2 for n in data.shape[:lead])]
        return np.ascontiguousarray(plane[:, ::-1])
    reference = read_image_file(option)
    if reference.data.ndim != (3 if reference.rgb else 2):
        raise ValueError(f"--reference must be one image, not a stack of shape {reference.data.shape}")
    return reference.data


def _safe(name: str) -> str:
    """A map name ("DCM 1", "<sentence>", a word) as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "map"


def run_info(args: argparse.Namespace) -> int:
    from napari_textsr.inference import load_model

    upscaler = load_model(args.spec, scale=args.scale, device=args.device)
    print(json.dumps(upscaler.description.to_dict(), indent=2))
    return 0
