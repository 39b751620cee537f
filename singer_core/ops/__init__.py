"""Kernels shared by every pipeline: Haar wavelets, multi-resolution hash grids, rays and volume rendering; the
one diffusion noise schedule and DDIM sampler live in `noise_schedule` (import it directly)."""

from .hashgrid import HashGridConfig, HashGridEncoder, TriPlaneConfig, TriPlaneEncoder
from .volume import (
    OccupancyGrid,
    PinholeCamera,
    camera_rays,
    composite,
    ray_aabb,
    stratified_samples,
)
from .wavelet import (
    BAND_NAMES,
    MODES,
    PYWT_NAMES,
    HaarDWT1d,
    HaarDWT2d,
    HaarIDWT1d,
    HaarIDWT2d,
    haar_dwt1d,
    haar_dwt2,
    haar_idwt1d,
    haar_idwt2,
    haar_wavedec1d,
    haar_wavedec2,
    haar_waverec1d,
    haar_waverec2,
    max_level,
)

__all__ = [
    "BAND_NAMES", "MODES", "PYWT_NAMES", "HaarDWT1d", "HaarDWT2d", "HaarIDWT1d", "HaarIDWT2d",
    "haar_dwt1d", "haar_dwt2", "haar_idwt1d", "haar_idwt2", "haar_wavedec1d", "haar_wavedec2",
    "haar_waverec1d", "haar_waverec2", "max_level",
    "HashGridConfig", "HashGridEncoder", "TriPlaneConfig", "TriPlaneEncoder",
    "OccupancyGrid", "PinholeCamera", "camera_rays", "composite", "ray_aabb", "stratified_samples",
]
