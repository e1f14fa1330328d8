"""How far apart a prompt encoder puts the degradation words, after real content captions.

    python benchmarks/bench_degradation_words.py --data ../shared/data/train/bsd200 \
        --encoder textsr-clip-s:bundled:textsr-clip-s --encoder textsr-clip-s:bundled:textsr-clip-s-words2

(``--encoder ARCH:FILE`` scores any other weights file, e.g. an encoder an
earlier version shipped, taken from git history.)

For each image's first caption, the four held-out phrasings
(``napari_textsr.training.captions.HELD_OUT_PHRASES`` in ``HELD_OUT_TEMPLATE``,
which training never uses: "...; the picture is soft and out of focus" /
"grainy and noisy" / "blocky and JPEG-compressed" / "sharp and clean") are
encoded, and the cosine between the pooled embeddings of each pair is averaged
over the images. 1.0: the words change nothing the SR model sees (a PDN reads
only the pooled embedding). Not a test: it describes an encoder.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pair_cosines(spec: str, contents: list[str]) -> dict[tuple[str, str], float]:
    """Mean cosine per pair of held-out degradation phrasings, over ``contents`` (content captions)."""
    import torch

    from napari_textsr.prompts import EncoderSpec, PromptEncoder
    from napari_textsr.training.captions import HELD_OUT_PHRASES, held_out_caption

    encoder = PromptEncoder.from_spec(EncoderSpec.parse(spec))
    keys = list(HELD_OUT_PHRASES)
    sums = {pair: 0.0 for pair in itertools.combinations(keys, 2)}
    with torch.inference_mode():
        for content in contents:
            pooled = encoder.encode([held_out_caption(content, HELD_OUT_PHRASES[k]) for k in keys], cache=False).pooled
            for (i, a), (j, b) in itertools.combinations(enumerate(keys), 2):
                sums[(a, b)] += float(pooled[i] @ pooled[j])
    return {pair: total / len(contents) for pair, total in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="captioned folder whose captions give the content")
    parser.add_argument("--encoder", action="append", required=True, metavar="SPEC", help="repeatable")
    parser.add_argument("--limit", type=int, default=60, help="first N images (default 60)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    from napari_textsr.training.data import load_captioned_folder

    torch.set_num_threads(args.threads)
    contents = [item.captions[0] for item in load_captioned_folder(args.data)[: args.limit]]
    results = {spec: pair_cosines(spec, contents) for spec in args.encoder}
    pairs = list(next(iter(results.values())))
    print(f"mean cosine over {len(contents)} content captions of {args.data} (held-out phrasing)")
    print("| encoder | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
    print("|---" * (len(pairs) + 1) + "|")
    for spec, cosines in results.items():
        print(f"| `{spec}` | " + " | ".join(f"{cosines[p]:.3f}" for p in pairs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
