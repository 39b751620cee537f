"""Independent float64 references several test modules share (numpy / PyWavelets, none of the pack's code).

Imported as ``from tests.references import ...`` (see tests/toy_models.py for why no ``sys.path`` edit is needed).
"""

from __future__ import annotations

import math

import numpy as np
import pywt


def wavecnet_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n/2, n) low and high analysis matrices as WaveCNet builds them from pywt's haar rec filters."""
    wave = pywt.Wavelet("haar")
    low, high = np.zeros((n // 2, n)), np.zeros((n // 2, n))
    for i in range(n // 2):
        low[i, 2 * i : 2 * i + 2] = wave.rec_lo
        high[i, 2 * i : 2 * i + 2] = wave.rec_hi
    return low, high


def rotation_f64(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """(3, 3) R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in float64, angles in radians."""
    cx, sx, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    cz, sz = math.cos(roll), math.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx
