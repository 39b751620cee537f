"""One job per output folder: a lock file naming the holder's PID, taken over when its process is gone.

Every long job that writes a folder (training run, SynthSinger generation, preprocessing, demo) holds
``folder/.singer.lock`` while it runs. A second job on the same folder is refused with the first one's PID,
host and command, and how to proceed; a lock left by a process that died (killed, power cut) is taken over
with a warning, so kill-and-resume needs no manual cleanup.

Mutual exclusion comes from an advisory ``fcntl.flock`` on the file (released by the kernel when the holder
dies, so "stale" is exact); the PID written into the file is only for the message. Where ``fcntl`` is missing
(Windows) the file is created exclusively and a lock whose PID is not running is stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .fs import FileSystemError, check_writable_folder, fs_error, remove_quietly

logger = logging.getLogger(__name__)

LOCK_NAME = ".singer.lock"
_HELD: dict[str, list] = {}  # resolved folder -> [fd or None, depth]: re-entrant within one process


class FolderLockedError(FileSystemError):
    """Another running job holds the folder's lock (errno EBUSY); the message names its PID and the fix."""


def _record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                       "command": " ".join(sys.argv)[:300]}).encode()


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _refuse(folder: Path, who: str, holder: dict) -> FolderLockedError:
    pid = holder.get("pid", "?")
    when = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else ""
    command = f" ({holder['command']})" if holder.get("command") else ""
    host = holder.get("host") or "?"
    return FolderLockedError(
        f"{who}: '{folder}' is in use by another job: PID {pid} on {host}{since}{command}; wait for it to finish, "
        f"stop it (kill {pid}) and then --resume, or choose another output folder. If no such job runs, delete "
        f"'{folder / LOCK_NAME}'", errno.EBUSY, folder)


def _acquire_flock(folder: Path, lock: Path, who: str):
    import fcntl

    for _attempt in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refuse(folder, who, _holder(lock)) from None
        except OSError:
            os.close(fd)
            raise
        try:  # the holder may have unlinked the file between our open and flock: lock the file on disk
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        stale = _holder(lock)
        if stale.get("pid") not in (None, os.getpid()):
            logger.warning("%s: taking over the stale lock of PID %s in '%s' (that job is gone)", who,
                           stale.get("pid"), folder)
        os.ftruncate(fd, 0)
        os.write(fd, _record())
        return fd
    raise _refuse(folder, who, _holder(lock))


def _acquire_exclusive(folder: Path, lock: Path, who: str) -> None:
    for _attempt in range(20):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if _alive(holder.get("pid")) and holder.get("host") in (None, socket.gethostname()):
                raise _refuse(folder, who, holder) from None
            logger.warning("%s: taking over the stale lock of PID %s in '%s' (that job is gone)", who,
                           holder.get("pid"), folder)
            remove_quietly(lock)
            continue
        try:
            os.write(fd, _record())
        finally:
            os.close(fd)
        return
    raise _refuse(folder, who, _holder(lock))


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, who: str) -> Iterator[Path]:
    """Hold `folder`'s lock for the block (the folder is created and checked writable first).

    Args:
        folder: the output folder of the job.
        who: the job's name for the messages ("train", "synth", ...).

    Raises:
        FolderLockedError: another live job holds it (its PID is in the message).
        FileSystemError: the folder cannot be created or written (read-only, full disk, a file).
    """
    folder = check_writable_folder(folder, who)
    key = str(folder.resolve())
    if key in _HELD:  # the same process again (e.g. the demo calling the trainer): re-entrant
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    lock = folder / LOCK_NAME
    try:
        try:
            import fcntl  # noqa: F401

            fd = _acquire_flock(folder, lock, who)
        except ImportError:
            fd = None
            _acquire_exclusive(folder, lock, who)
    except FileSystemError:
        raise
    except OSError as error:
        raise fs_error(error, lock, action="create the lock", who=who) from error
    _HELD[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _HELD[key]
        remove_quietly(lock)  # unlink before closing: a waiting job then locks a fresh file
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """The record ({pid, host, started, command}) of a live lock on `folder`, or None when it is free."""
    lock = Path(folder) / LOCK_NAME
    if not lock.is_file():
        return None
    holder = _holder(lock)
    return holder if _alive(holder.get("pid")) else None
