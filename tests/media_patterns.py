"""Synthetic video frames the video reading and writing tests share: frames that spell their own index (exact
through H.264 after rounding) and a moving smooth colour field (what natural video looks like to a codec)."""

from __future__ import annotations

import numpy as np


def coded_frame(index: int, height: int = 32, width: int = 48) -> np.ndarray:
    """A frame whose flat halves spell its index (survives H.264 exactly after rounding)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, : width // 2] = 20 + 12 * (index // 15)
    frame[:, width // 2:] = 20 + 14 * (index % 15)
    return frame


def decode_index(image: np.ndarray) -> int:
    """The index coded_frame spelled into `image` (H, W, 3), read from the means of its two halves."""
    width = image.shape[1]
    left = image[4:-4, 4: width // 2 - 4].astype(np.float64).mean()
    right = image[4:-4, width // 2 + 4: -4].astype(np.float64).mean()
    return int(round((left - 20) / 12)) * 15 + int(round((right - 20) / 14))


def smooth_frames(count: int, height: int, width: int) -> np.ndarray:
    """A moving smooth colour field (what natural video looks like to a codec)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(count):
        red = 128 + 90 * np.sin(xx / 9.0 + t / 4.0) * np.cos(yy / 13.0)
        green = 128 + 80 * np.cos((xx + yy) / 15.0 - t / 6.0)
        blue = 100 + 60 * np.sin(yy / 7.0 + t / 5.0)
        frames.append(np.stack([red, green, blue], -1))
    return np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)
