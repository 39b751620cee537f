"""Command line of the SINGER evaluation. Subcommands (registered in COMMANDS):

    python -m singer_core.eval motion --checkpoint DIR --data DIR [--split test] [--steps N] [--eta E]
        [--seed S] [--lip-expert DIR] [--max-clips N] [--device cpu] [--json FILE|-] [--quiet]
    python -m singer_core.eval nerf --checkpoint DIR --data DIR [--lpips-backbone FILE --lpips-linear FILE]
        [--lpips-net alex|vgg] [--max-frames N] [--device cpu] [--save-frames DIR] [--json FILE|-]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time

from ..io.cli import report_errors
from ..io.fs import check_writable_file

logger = logging.getLogger(__name__)


def _json_safe(value):
    """NaN / inf -> None so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def motion_main(argv: list[str]) -> int:
    """`motion`: evaluate a MotionModel checkpoint on a SINGER dataset split and print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m singer_core.eval motion",
        description="Generate motions for the clips of a SINGER dataset split with a trained motion model and "
                    "score them (LMD, mouth-energy correlation, lip sync, diversity, Beat Align Score, "
                    "coefficient errors) next to the ground truth.")
    parser.add_argument("--checkpoint", required=True,
                        help="MotionModel folder (config.json + model.safetensors, e.g. OUT/final)")
    parser.add_argument("--data", required=True, help="dataset folder with index.json (SynthSinger)")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test", help="clips to evaluate")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--lip-expert", default=None, help="LipExpert folder for the sync scores (optional)")
    parser.add_argument("--max-clips", type=int, default=None, help="evaluate only the first N clips")
    parser.add_argument("--max-offset", type=int, default=5, help="sync offset sweep in frames")
    parser.add_argument("--device", default="cpu", help="torch device of the models (cpu, cuda, ...)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the full result (per clip too) as JSON to FILE ('-' = stdout only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.max_clips is not None and args.max_clips < 1:
        parser.error(f"--max-clips must be >= 1, got {args.max_clips}")
    code = [0]
    with report_errors(code):
        if args.json not in (None, "-"):  # an unwritable target fails now, not after the whole evaluation
            check_writable_file(args.json, "eval motion --json")
        return _motion(args)
    return code[0]


def _motion(args) -> int:
    """Load, evaluate, print and write (errors become one `error:` line in motion_main)."""

    from ..motion.generator import MotionModel
    from .evaluate import evaluate_motion, format_motion_table

    model = MotionModel.from_pretrained(args.checkpoint, device=args.device)
    expert = None
    if args.lip_expert is not None:
        from ..motion.lip_expert import LipExpert

        expert = LipExpert.from_pretrained(args.lip_expert, device=args.device)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(unit="clip", desc="eval motion", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    began = time.perf_counter()
    try:
        result = evaluate_motion(model, args.data, split=args.split, steps=args.steps, eta=args.eta,
                                 seed=args.seed, lip_expert=expert, max_clips=args.max_clips,
                                 max_offset=args.max_offset, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    result["checkpoint"] = str(args.checkpoint)
    result["seconds"] = time.perf_counter() - began
    text = json.dumps(_json_safe(result), indent=1)
    if args.json == "-":
        print(text)
        return 0
    print(format_motion_table(result))
    if args.json is not None:
        from ..io.checkpoint import atomic_write_bytes

        try:
            atomic_write_bytes(args.json, (text + "\n").encode(), who="eval motion --json")
        except OSError:
            print(text)  # the evaluation is not lost: its JSON goes to stdout, the error line to stderr
            raise
        print(f"wrote {args.json}")
    return 0


def nerf_main(argv: list[str]) -> int:
    """`nerf`: held-out PSNR / SSIM / LPIPS / mouth error of a trained per-subject NeRF (see eval/nerf.py)."""
    from .nerf import main as run

    return run(argv)


COMMANDS = {"motion": motion_main, "nerf": nerf_main}  # name -> main(argv) -> exit code


def main(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        print(f"\nunknown command {argv[0]!r}; choose one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(COMMANDS[argv[0]](argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
