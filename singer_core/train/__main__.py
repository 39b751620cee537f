"""Command line of the SINGER trainer: ``python -m singer_core.train TASK [options]`` (``--help`` per task).

Several GPUs or nodes: ``accelerate launch -m singer_core.train TASK ...`` (configure once with
``accelerate config``); every process trains on its own share of each step's samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading

from ..io.cli import read_json_object, report_errors
from . import TASKS, task_class
from .config import describe_config, resolve_config
from .loop import train

logger = logging.getLogger(__name__)

USAGE = ("python -m singer_core.train TASK [--preset NAME] [--config FILE] [--data DIR] [--out DIR] [--resume | "
         "--resume-from STEP] ...")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _general_help() -> str:
    lines = [f"usage: {USAGE}", "", "Train a SINGER model. Tasks:"]
    lines += [f"  {name}" for name in sorted(TASKS)]
    lines += ["", "`python -m singer_core.train TASK --help` lists the task's presets and config fields.",
              "Several GPUs: `accelerate launch -m singer_core.train TASK ...`."]
    return "\n".join(lines)


def _task_help(name: str, klass: type) -> str:
    lines = [f"Presets (default: {getattr(klass, 'default_preset', 'tiny')}), as changes of the field defaults:"]
    defaults = {field: default for field, _kind, default, _comment in describe_config(klass.config_class)}
    for preset, config in klass.presets.items():
        changed = [f"{key}={value!r}" for key, value in dataclasses.asdict(config).items()
                   if value != defaults[key]]
        lines.append(f"  {preset}: {', '.join(changed) or '(the defaults)'}")
    lines += ["", f"Config fields of {klass.config_class.__name__} (--config FILE.json / --set FIELD=VALUE):"]
    for field, kind, default, comment in describe_config(klass.config_class):
        lines.append(f"  {field} ({kind}, default {default!r}): {comment}")
    doc = (klass.__doc__ or "").strip().splitlines()
    return "\n".join(([doc[0], ""] if doc else []) + lines)


def _parse_set(items: list[str], parser: argparse.ArgumentParser) -> dict:
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects FIELD=VALUE (a JSON value, e.g. --set lr=0.001), got {item!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def _graceful_interrupt():
    """(SIGINT handler, progress callback): the first Ctrl-C stops the run after the current step with a
    checkpoint of it; a second one stops at once (the previous checkpoint stays valid)."""
    asked = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(True)
        print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    def progress(step, total, scalars):
        if asked:
            raise KeyboardInterrupt

    return handler, progress


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_general_help())
        return 0
    name = argv.pop(0)
    if name not in TASKS:
        print(f"error: unknown training task {name!r}; tasks: {', '.join(sorted(TASKS))}\n\n{_general_help()}",
              file=sys.stderr)
        return 2
    klass = task_class(name)
    parser = argparse.ArgumentParser(prog=f"python -m singer_core.train {name}", description=_task_help(name, klass),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help=f"config preset: {', '.join(klass.presets)}")
    parser.add_argument("--config", default=None, help="JSON file of config fields overriding the preset")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one config field (JSON value), repeatable; applied after --config")
    parser.add_argument("--data", default=None, help="dataset folder (SINGER clip format); default: generate "
                        "SynthSinger into the cache")
    parser.add_argument("--out", default=f"runs/{name}", help="run folder (checkpoints, tensorboard, final)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    parser.add_argument("--resume-from", type=int, default=None, metavar="STEP",
                        help="continue from the checkpoint of exactly this step (e.g. one before the loss "
                             "diverged); newer checkpoints are moved aside")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (of the whole run)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: accelerate's choice)")
    parser.add_argument("--cache-dir", default=None, help="cache of generated data and features "
                        "(default $SINGER_CACHE_DIR or ~/.cache/singer)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="logging level: " + ", ".join(LOG_LEVELS))
    args = parser.parse_args(argv)
    if args.resume_from is not None and args.resume_from < 1:
        parser.error(f"--resume-from must be a checkpoint step >= 1, got {args.resume_from}")
    if args.max_steps is not None and args.max_steps < 0:
        parser.error(f"--max-steps must be >= 0, got {args.max_steps}")
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")

    code = [0]
    with report_errors(code):
        config = None
        if args.config is not None or args.set:
            config = {}
            if args.config is not None:
                config = read_json_object(args.config, "--config", '{"lr": 0.0001, "steps": 200}')
            config.update(_parse_set(args.set, parser))
            resolve_config(klass, args.preset, config)  # checks names and types before anything is written
        return _train(klass, args, config)
    return code[0]


def _train(klass, args, config) -> int:
    """Run the training with the graceful Ctrl-C; errors go to main's report_errors."""
    progress, previous = None, None
    # several processes must stop at the same step: no graceful stop under `accelerate launch`
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and threading.current_thread() is threading.main_thread():
        handler, progress = _graceful_interrupt()
        previous = signal.signal(signal.SIGINT, handler)
    try:
        result = train(klass, preset=args.preset, config=config, data=args.data, out=args.out, resume=args.resume,
                       max_steps=args.max_steps, device=args.device, cache_dir=args.cache_dir, quiet=args.quiet,
                       progress=progress, resume_from=args.resume_from)
    except KeyboardInterrupt:
        print(f"interrupted; the last checkpoint in '{args.out}' is valid: continue with --resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
