"""Fréchet distance of Gaussians (Dowson & Landau 1982; FID, Heusel et al. 2017) and the Fréchet Video
Distance (Unterthiner et al. 2018) with a user-provided I3D TorchScript feature extractor (the
``i3d_torchscript.pt`` file StyleGAN-V and universome/fvd-comparison use)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..progress import Progress

logger = logging.getLogger(__name__)

I3D_FILE = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"  # StyleGAN-V's converted I3D
I3D_SIZE = 224  # the I3D input resolution
I3D_MIN_FRAMES = 10  # shorter clips are too short for I3D's temporal pooling


def _matrix(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    The matrix square root is scipy.linalg.sqrtm; when it is not finite (a singular product), eps is added
    to both diagonals and it is retried; a tiny imaginary part from round-off is dropped, a large one is an
    error.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.
        eps: the diagonal offset of the retry.

    Returns:
        The distance as a float (>= 0 up to round-off).
    """
    from scipy import linalg

    mu1, mu2 = _matrix(mu1, "mu1").reshape(-1), _matrix(mu2, "mu2").reshape(-1)
    sigma1, sigma2 = np.atleast_2d(_matrix(sigma1, "sigma1")), np.atleast_2d(_matrix(sigma2, "sigma2"))
    dim = mu1.shape[0]
    if mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"frechet_distance: need mu1, mu2 (D,) and sigma1, sigma2 (D, D) of one D; got "
                         f"{mu1.shape}, {mu2.shape}, {sigma1.shape}, {sigma2.shape}")
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"frechet_distance: {name} contains NaN or infinite values")
    root = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        logger.info("frechet_distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(dim) * eps
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        imaginary = np.abs(np.diagonal(root).imag).max()
        if imaginary > 1e-3:
            raise RuntimeError(f"frechet_distance: the matrix square root has an imaginary part of {imaginary:g}; "
                               "the covariances are not valid (not symmetric positive semi-definite)")
        root = root.real
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D) (unbiased, np.cov rowvar=False), float64."""
    array = _matrix(features, "features")
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"feature_statistics: need (N, D) features with N >= 2, got shape {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def load_i3d(i3d_path, device="cpu") -> torch.jit.ScriptModule:
    """Load the I3D TorchScript file (torch.jit.load; TorchScript holds no pickled Python objects).

    Args:
        i3d_path: path of i3d_torchscript.pt.
        device: where to put it.
    """
    path = Path(os.fspath(i3d_path))
    if not path.is_file():
        raise FileNotFoundError(
            f"fvd: the I3D feature extractor '{path}' does not exist; download {I3D_FILE} (the converted "
            f"Kinetics-400 I3D that StyleGAN-V uses) from {I3D_URL} and pass its path")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"fvd: '{path}' is not a TorchScript file ({error}); give {I3D_FILE} from {I3D_URL}") \
            from error
    return model.eval()


def _clips(videos, where: str) -> torch.Tensor:
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(np.ascontiguousarray(videos))
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[-1] not in (1, 3):
        shape = tuple(videos.shape) if hasattr(videos, "shape") else type(videos).__name__
        raise ValueError(f"fvd: {where} must be (N, T, H, W, C) channels-last clips with C = 3 (or 1), got "
                         f"{shape}")
    if videos.shape[0] < 2:
        raise ValueError(f"fvd: {where} needs at least 2 clips for a covariance, got {videos.shape[0]}")
    if videos.shape[1] < I3D_MIN_FRAMES:
        raise ValueError(f"fvd: {where} clips have {videos.shape[1]} frames; I3D needs at least "
                         f"{I3D_MIN_FRAMES} (FVD usually uses 16)")
    return videos


def i3d_features(videos, detector: Callable, *, batch_size: int = 8, device="cpu",
                 progress: Progress | None = None) -> np.ndarray:
    """I3D features of clips.

    Each clip is converted to float, uint8 scaled by 1/255, resized per frame to 224 x 224 (bilinear,
    antialiased), mapped to [-1, 1], laid out (B, 3, T, 224, 224) and passed as
    ``detector(x, rescale=False, resize=False, return_features=True)`` (StyleGAN-V's convention).

    Args:
        videos: (N, T, H, W, C) uint8 or float in [0, 1].
        detector: the TorchScript I3D (:func:`load_i3d`) or any callable with that signature.
        batch_size: clips per call.
        device: where to run.
        progress: optional (clips done, clips) callback; may raise to stop.

    Returns:
        (N, D) float64 features.
    """
    videos = _clips(videos, "videos")
    count, frames = videos.shape[:2]
    out = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            clip = videos[start:start + batch_size].to(device)
            clip = clip.float() / 255.0 if not clip.is_floating_point() else clip.float()
            batch = clip.shape[0]
            flat = clip.reshape(batch * frames, *clip.shape[2:]).permute(0, 3, 1, 2)
            if flat.shape[1] == 1:
                flat = flat.expand(-1, 3, -1, -1)
            flat = torch.nn.functional.interpolate(flat, size=(I3D_SIZE, I3D_SIZE), mode="bilinear",
                                                   align_corners=False, antialias=True)
            x = (flat.clamp(0, 1) * 2.0 - 1.0).reshape(batch, frames, 3, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4)
            features = detector(x.contiguous(), rescale=False, resize=False, return_features=True)
            features = torch.as_tensor(features).reshape(batch, -1)
            out.append(features.double().cpu().numpy())
            if progress is not None:
                progress(min(count, start + batch_size), count)
    return np.concatenate(out)


def fvd(videos_a, videos_b, i3d_path, *, batch_size: int = 8, device="cpu",
        progress: Progress | None = None) -> float:
    """Fréchet Video Distance between two sets of clips.

    Args:
        videos_a: (N, T, H, W, C) clips (uint8 or float in [0, 1]); N >= 2, T >= 10 (16 is usual).
        videos_b: (M, T', H', W', C) clips of the other set.
        i3d_path: path of i3d_torchscript.pt (FileNotFoundError with the download address if missing).
        batch_size: clips per I3D call.
        device: where to run I3D.
        progress: optional (clips done, clips of both sets) callback; may raise to stop.

    Returns:
        The FVD (Fréchet distance of the two sets' I3D feature Gaussians) as a float.
    """
    a, b = _clips(videos_a, "videos_a"), _clips(videos_b, "videos_b")
    detector = load_i3d(i3d_path, device)
    total = a.shape[0] + b.shape[0]

    def offset(base: int):
        if progress is None:
            return None
        return lambda done, _count: progress(base + done, total)

    features_a = i3d_features(a, detector, batch_size=batch_size, device=device, progress=offset(0))
    features_b = i3d_features(b, detector, batch_size=batch_size, device=device, progress=offset(a.shape[0]))
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
