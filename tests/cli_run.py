"""Run a command line's ``main(argv)`` in-process, as several test modules do (``from tests.cli_run import run_cli``)."""

from __future__ import annotations

import contextlib
import io
import logging

logger = logging.getLogger(__name__)


def run_cli(main, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)``; argparse's usage errors and ``--help`` exit through
    SystemExit, whose code is returned."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return int(code or 0), out.getvalue(), err.getvalue()
