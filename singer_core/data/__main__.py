"""Command line of the SINGER datasets: ``synth`` (generate a SynthSinger dataset) and ``preprocess`` (real
videos -> the same clip format).

    python -m singer_core.data synth --out DIR --clips N --size 128 --seconds 2 --seed 0 [--backing]
    python -m singer_core.data preprocess ...   (see python -m singer_core.data preprocess --help)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from ..io.cli import report_errors
from ..io.fs import check_writable_folder

logger = logging.getLogger(__name__)


def synth_main(argv: list[str]) -> int:
    """`synth`: generate a SynthSinger dataset (clip folders + index.json) into --out."""
    from .synthetic import STYLE_CHOICES, SynthSingerConfig

    defaults = SynthSingerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m singer_core.data synth",
        description="Generate a SynthSinger dataset: synthetic singing heads with ground-truth 3DMM "
                    "coefficients and landmarks, split 4:1 by identity.")
    parser.add_argument("--out", required=True, help="dataset folder to create (clip folders + index.json)")
    parser.add_argument("--clips", type=int, default=defaults.clips, help="number of clips")
    parser.add_argument("--clips-per-identity", type=int, default=defaults.clips_per_identity,
                        help="clips sung by each identity")
    parser.add_argument("--size", type=int, default=defaults.size, help="frame size in pixels (even)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="clip length in seconds")
    parser.add_argument("--fps", type=float, default=defaults.fps, help="video frame rate")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="master seed")
    parser.add_argument("--backing", action="store_true", help="mix a band under the voice (vocals.wav kept)")
    parser.add_argument("--style", choices=STYLE_CHOICES, default=defaults.style,
                        help="singing, speech, or mixed (every fifth clip speech)")
    parser.add_argument("--textured-background", action="store_true",
                        help="smooth colour texture backgrounds")
    parser.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                        help="share of identities in the test split (0.2 = 4:1)")
    parser.add_argument("--crf", type=int, default=defaults.crf, help="H.264 quality (0 lossless .. 51)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate clip folders that exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = SynthSingerConfig(
            clips=args.clips, clips_per_identity=args.clips_per_identity, size=args.size,
            seconds=args.seconds, fps=args.fps, seed=args.seed, backing=args.backing, style=args.style,
            textured_background=args.textured_background, test_fraction=args.test_fraction, crf=args.crf)
    except ValueError as error:
        parser.error(f"{error}; see python -m singer_core.data synth --help")
    code = [0]
    with report_errors(code):
        return _synth(args, config)
    return code[0]


def _synth(args, config) -> int:
    """Generate with a progress bar (errors become one `error:` line in synth_main)."""
    from .synthetic import generate_dataset

    check_writable_folder(args.out, "synth")  # a file, read-only folder or full disk: before any work
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=config.clips * config.frames, unit="frame", desc="synth")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    began = time.perf_counter()
    try:
        index = generate_dataset(args.out, config, overwrite=args.overwrite, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - began
    print(f"synth: {len(index.clips)} clips ({len(index.train)} train, {len(index.test)} test) in "
          f"{args.out} in {seconds:.1f} s ({seconds / config.clips:.2f} s per clip)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch `synth` / `preprocess`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"synth": synth_main, "preprocess": None}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}; choose one of {sorted(commands)}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[0] == "preprocess":
        from . import preprocess

        return int(preprocess.main(argv[1:]) or 0)
    return synth_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
