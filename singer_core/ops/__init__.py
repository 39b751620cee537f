"""Kernels shared by every pipeline: Haar wavelets, multi-resolution hash grids, rays and volume rendering; the
one diffusion noise schedule and DDIM sampler live in `noise_schedule` (import it directly)."""

import importlib

# public name -> the module of this package that defines it; imported on first use (PEP 562), so importing one
# kernel module (e.g. `singer_core.ops.wavelet` for the wavelet nodes) does not import the hash-grid, Triton and
# volume code (they kept ComfyUI's start-up over 1 s).
_EXPORTS = {
    **dict.fromkeys(("HashGridConfig", "HashGridEncoder", "TriPlaneConfig", "TriPlaneEncoder"), "hashgrid"),
    **dict.fromkeys(("OccupancyGrid", "PinholeCamera", "camera_rays", "composite", "ray_aabb", "stratified_samples"),
                    "volume"),
    **dict.fromkeys(("BAND_NAMES", "MODES", "PYWT_NAMES", "HaarDWT1d", "HaarDWT2d", "HaarIDWT1d", "HaarIDWT2d",
                     "haar_dwt1d", "haar_dwt2", "haar_idwt1d", "haar_idwt2", "haar_wavedec1d", "haar_wavedec2",
                     "haar_waverec1d", "haar_waverec2", "max_level"), "wavelet"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
