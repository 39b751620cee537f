"""File-system errors named as such: a read-only folder, a full disk, a path that is a file or a folder.

The library and the command lines turn an `OSError` from a write into a `FileSystemError` whose message names
the path, what is wrong in words (not an errno) and what to do, so a CLI prints one ``error:`` line instead of a
traceback. `check_writable_folder` / `check_writable_file` run that check BEFORE long work starts, so a run is
not lost to an unwritable target at its very end.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
FILE_SYSTEM_ERRNOS = (*READ_ONLY, *DISK_FULL, errno.ENOTDIR, errno.EISDIR)


class FileSystemError(OSError):
    """An OSError whose message is already written for a person (path, problem and fix).

    Keeps the errno and the path of the error it explains, so callers may still test ``error.errno``.
    """

    def __init__(self, message: str, code: int | None = None, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.errno = code
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0])


def _free_space(path: Path) -> str:
    for candidate in (path, *path.parents):
        try:
            free = shutil.disk_usage(candidate).free
        except OSError:
            continue
        return f"{free / 2 ** 20:.1f} MB free"
    return "free space unknown"


def describe_os_error(error: OSError, path: str | os.PathLike | None = None, *, action: str = "write") -> str:
    """A message for a person: what happened to which path, in words, and the fix.

    Args:
        error: the OSError (its errno picks the wording; a FileSystemError is returned as it is).
        path: the path to name (default: error.filename).
        action: the verb of what failed ("write", "create", "read", "replace").
    """
    if isinstance(error, FileSystemError):
        return str(error)
    path = Path(path if path is not None else (error.filename or "?"))
    code = error.errno
    reason = error.strerror or str(error) or type(error).__name__
    if code in READ_ONLY:
        return (f"cannot {action} '{path}': the folder is read-only ({reason}); choose a writable folder "
                "(e.g. another --out) or make it writable")
    if code in DISK_FULL:
        return (f"cannot {action} '{path}': the disk is full ({reason}; {_free_space(path)}); free some space or "
                "choose a folder on another disk")
    if code == errno.ENOTDIR:
        return (f"cannot {action} '{path}': a part of that path is a file, not a folder; choose another path "
                "or move the file away")
    if code == errno.EISDIR:
        return f"cannot {action} '{path}': it is a folder, not a file; give a file name"
    if code == errno.ENOENT:
        return f"cannot {action} '{path}': it or its folder does not exist; check the path or create the folder"
    return f"cannot {action} '{path}': {reason}; check the path and its permissions"


def fs_error(error: OSError, path: str | os.PathLike | None = None, *, action: str = "write",
             who: str | None = None) -> FileSystemError:
    """The FileSystemError explaining `error` (raise it ``from error``); `who` prefixes the message."""
    if isinstance(error, FileSystemError):
        return error
    message = describe_os_error(error, path, action=action)
    return FileSystemError(f"{who}: {message}" if who else message, error.errno,
                           path if path is not None else error.filename)


def raise_file_system_error(error: BaseException, path: str | os.PathLike, *, who: str,
                            action: str = "write") -> None:
    """Raise `error` as a FileSystemError naming `path` when it is a read-only folder, a full disk or a path
    that is a file / a folder; return (for the caller to re-raise) any other error, e.g. a codec's."""
    if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRNOS:
        raise fs_error(error, path, action=action, who=who) from error


def check_writable_folder(folder: str | os.PathLike, who: str, *, create: bool = True) -> Path:
    """Make sure `folder` is (or can be created as) a writable folder, by writing and removing a probe file.

    Raises:
        FileSystemError: the path is a file, a part of it is a file, the folder is read-only or the disk full.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileSystemError(f"{who}: '{folder}' is a file, not a folder; choose another output folder or "
                              "move the file away", errno.ENOTDIR, folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".singer-probe-", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)  # a full disk refuses the data even when a name still fits
            os.fsync(fd)
        finally:
            os.close(fd)
            with _quiet():
                os.unlink(probe)
    except OSError as error:
        raise fs_error(error, folder, action="write into", who=who) from error
    return folder


def check_writable_file(path: str | os.PathLike, who: str) -> Path:
    """Make sure a file can be written at `path` (not a folder; its folder writable), before long work."""
    path = Path(path)
    if path.is_dir():
        raise FileSystemError(f"{who}: '{path}' is a folder, not a file; give a file name such as "
                              f"'{path / 'result.json'}'", errno.EISDIR, path)
    check_writable_folder(path.parent if str(path.parent) else Path("."), who)
    return path


class _quiet:
    """Suppress OSError in cleanup, so it never hides the error being handled (logged at debug level)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None and issubclass(kind, OSError):
            logger.debug("cleanup failed (ignored): %s", value)
            return True
        return False


def remove_quietly(path: str | os.PathLike) -> None:
    """Remove a file or a folder tree if it is there; a failure (read-only folder) is logged, never raised, so
    cleanup in an ``except`` / ``finally`` block never masks the original error."""
    path = Path(path)
    with _quiet():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
