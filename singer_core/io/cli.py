"""What every command line of the pack shares: one ``error: ...`` line and a non-zero exit instead of a traceback.

`report_errors(prog)` turns the errors a user can cause and fix (bad values, missing or damaged files, a
read-only folder, a full disk, a folder locked by another job) into one line on stderr and exit code 1; an
unexpected error (a bug) is one line too, naming the exception, with the traceback when ``SINGER_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from .fs import describe_os_error

logger = logging.getLogger(__name__)

USER_ERRORS = (ValueError, RuntimeError, OSError, KeyError, ImportError)


class CliError(Exception):
    """Raised inside `report_errors` to stop with `error: <message>` and the given exit code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def error_line(error: BaseException) -> str:
    """The one-line text of `error` for a person (file-system errors in words, with the path)."""
    if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError,)) and error.errno is not None:
        text = describe_os_error(error)
    else:
        text = str(error) or type(error).__name__
        if isinstance(error, KeyError):
            text = f"missing entry {text}"
    return " ".join(text.split())  # one line


@contextlib.contextmanager
def report_errors(result: list[int]) -> Iterator[None]:
    """Run a command body; on an error print ``error: ...`` to stderr and put the exit code in result[0].

    Usage::

        code = [0]
        with report_errors(code):
            ...  # the work
        return code[0]
    """
    try:
        yield
    except CliError as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        result[0] = error.code
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing partial was kept", file=sys.stderr)
        result[0] = 130
    except USER_ERRORS as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        logger.debug("traceback", exc_info=True)
        result[0] = 1
    except Exception as error:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get("SINGER_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error {type(error).__name__}: {error_line(error)} (please report it; set "
              "SINGER_DEBUG=1 for the traceback)", file=sys.stderr)
        result[0] = 1


def read_json_object(path: str | os.PathLike, option: str, example: str) -> dict:
    """The JSON object in the file given to `option`; CliError naming the file and the fix otherwise."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{option} '{path}' is a folder; give a JSON file such as {example}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError(f"{option} '{path}' does not exist; give the path of a JSON file such as {example}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"{option} '{path}' cannot be read ({error}); give a JSON text file such as {example}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{option} '{path}' is not valid JSON ({error.msg} at line {error.lineno}, column "
                       f"{error.colno}); fix it, e.g. {example}") from None
    if not isinstance(data, dict):
        raise CliError(f"{option} '{path}' holds a JSON {type(data).__name__}, not an object of fields; write "
                       f"e.g. {example}")
    return data
