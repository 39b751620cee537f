"""Every SINGER evaluation metric in one namespace (re-exported from ``image``, ``motion`` and ``fvd``)."""

from __future__ import annotations

import logging

from .fvd import feature_statistics, frechet_distance, fvd, i3d_features, load_i3d
from .image import cpbd, psnr, ssim
from .motion import (
    beat_align_score,
    coefficient_error,
    diversity,
    face_size,
    kinetic_velocity,
    lip_sync_confidence,
    lmd,
    motion_beats,
    mouth_energy_correlation,
    mouth_opening,
    pearson,
)

logger = logging.getLogger(__name__)

__all__ = [
    "beat_align_score", "coefficient_error", "cpbd", "diversity", "face_size", "feature_statistics",
    "frechet_distance", "fvd", "i3d_features", "kinetic_velocity", "lip_sync_confidence", "lmd", "load_i3d",
    "motion_beats", "mouth_energy_correlation", "mouth_opening", "pearson", "psnr", "ssim",
]
