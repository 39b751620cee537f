"""The words of an FFmpeg (PyAV) error, for the messages that explain a file the pack could not read or write."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def ffmpeg_reason(exc: BaseException) -> str:
    """What went wrong, in FFmpeg's words: the error's strerror ("Invalid data found when processing input"),
    else its text, else its type's name; without the trailing full stop, so it fits inside a sentence."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.strip().rstrip(".")
