"""Image / video quality metrics: PSNR, SSIM (Wang et al. 2004, "Image quality assessment: from error
visibility to structural similarity") and CPBD (Narvekar & Karam 2011, "A no-reference image blur metric
based on the cumulative probability of blur detection").

Layout: every function here takes CHANNELS-LAST images, the ComfyUI IMAGE layout: one image (H, W, C) or
a video / batch (T, H, W, C), C in 1..4 (a 4th channel is dropped: alpha). torch tensors or numpy arrays.
A (T, C, H, W) tensor is refused with the permute that fixes it.

Which CPBD: this one reproduces the authors' MATLAB reference, whose Canny and Sobel edges are MATLAB ``edge()``
with its defaults. It is not the PyPI ``cpbd`` package (1.0.7, a Python port using Octave's Sobel threshold and
scikit-image's Canny): on 40 SynthSinger faces (5 identities, grey 256 px, Gaussian blur sigma 0..3, 8-bit)
the two give Pearson r = 0.92 (0.90 over the 26 images either scores above 0), Spearman 0.92, mean |difference|
0.059 (max 0.29), and order 84 % of the same-face blur pairs alike (``benchmarks/cpbd_vs_pypi.py``, identical on
the pinned and newest stacks).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

logger = logging.getLogger(__name__)

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004, section III-C
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 (MATLAB rgb2gray, which the CPBD reference uses)
CPBD_BETA = 3.6  # slope of the probability-of-blur psychometric function
CPBD_P_JNB = 0.63  # probability of blur detection at the just-noticeable-blur width
CPBD_BLOCK = 64  # block size of the edge / non-edge classification and of the local contrast
CPBD_EDGE_BLOCK_SHARE = 0.002  # a block is an edge block when more than this share of its pixels are edges
CPBD_MAX_MARGIN = 100  # the edge-width walk stops after this many steps per side
_SSIM_CHUNK_PIXELS = 1 << 22  # pixels (frames x H x W x C) per SSIM block


def _as_tensor(x, where: str, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: {name} must be a torch tensor or numpy array, got {type(x).__name__}")
    return x


def _video(x, where: str, name: str) -> torch.Tensor:
    """(H, W, C) or (T, H, W, C) -> (T, H, W, C<=3) float64; alpha dropped."""
    x = _as_tensor(x, where, name)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or not 1 <= x.shape[-1] <= 4:
        hint = ""
        if x.ndim == 4 and 1 <= x.shape[1] <= 4:
            hint = " (it looks channels-first: pass x.permute(0, 2, 3, 1))"
        raise ValueError(f"{where}: {name} must be channels-last (H, W, C) or (T, H, W, C) with C in 1..4, "
                         f"got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{where}: {name} is empty: shape {tuple(x.shape)}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    return x.to(torch.float64)


def _pair(pred, target, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _video(pred, where, "pred"), _video(target, where, "target")
    if pred.shape != target.shape:
        raise ValueError(f"{where}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; "
                         "give the same frames at the same size (resize or trim one of them; frame counts "
                         "differ when the videos have different fps)")
    return pred, target.to(pred.device)


def psnr(pred, target, data_range: float = 1.0, *, reduction: str = "mean"):
    """Peak signal-to-noise ratio, 10 log10(data_range^2 / MSE), per frame.

    Args:
        pred: (T, H, W, C) or (H, W, C) channels-last images in [0, data_range].
        target: the same shape.
        data_range: peak value (1.0 for float images, 255 for uint8).
        reduction: "mean" -> the mean over frames of the per-frame PSNR (the talking-head convention; a
            frame with MSE 0 gives inf), "none" -> (T,) float64 tensor of per-frame PSNR.

    Returns:
        A float (reduction="mean") or a (T,) float64 tensor.
    """
    pred, target = _pair(pred, target, "psnr")
    if not data_range > 0:
        raise ValueError(f"psnr: data_range must be positive, got {data_range}")
    mse = (pred - target).square().flatten(1).mean(1)
    values = 10.0 * torch.log10(data_range ** 2 / mse)  # mse 0 -> inf
    return _reduce(values, reduction, "psnr")


def _reduce(values: torch.Tensor, reduction: str, where: str):
    if reduction == "none":
        return values
    if reduction == "mean":
        return float(values.mean())
    raise ValueError(f"{where}: reduction must be 'mean' or 'none', got {reduction!r}")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) float64 normalised 1-D Gaussian (MATLAB fspecial('gaussian') is its outer product)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    window = torch.exp(-coords.square() / (2.0 * sigma ** 2))
    return window / window.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 2-D Gaussian filter without padding: (N, 1, H, W) -> (N, 1, H - k + 1, W - k + 1)."""
    size = window.shape[0]
    x = torch.nn.functional.conv2d(x, window.view(1, 1, size, 1))
    return torch.nn.functional.conv2d(x, window.view(1, 1, 1, size))


def ssim(pred, target, data_range: float = 1.0, *, luminance: bool = False, reduction: str = "mean"):
    """Structural similarity (Wang et al. 2004, eq. 13 with the paper's constants).

    11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2, L = data_range;
    local statistics are Gaussian-weighted (population) moments; the SSIM map is computed only where the
    window fits inside the image ("valid", as the authors' MATLAB ssim_index does; no padding) and
    averaged. Colour: by default the SSIM of each channel is computed and the channels averaged
    (skimage's channel_axis convention); luminance=True converts RGB to BT.601 luma first.

    Args:
        pred: (T, H, W, C) or (H, W, C) channels-last images in [0, data_range], H, W >= 11.
        target: the same shape.
        data_range: L, the dynamic range (1.0 for float images, 255 for uint8).
        luminance: compare BT.601 luma instead of averaging per-channel SSIM.
        reduction: "mean" (float, mean over frames) or "none" ((T,) float64 tensor).

    Returns:
        A float or a (T,) float64 tensor; ssim(x, x) == 1.
    """
    pred, target = _pair(pred, target, "ssim")
    frames, height, width, channels = pred.shape
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (the Gaussian "
                         f"window), got {height}x{width}")
    if not data_range > 0:
        raise ValueError(f"ssim: data_range must be positive, got {data_range}")
    if luminance:
        pred, target = _luma(pred), _luma(target)
        channels = 1
    window = gaussian_window().to(pred.device)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    values = torch.empty(frames, dtype=torch.float64)
    step = max(1, _SSIM_CHUNK_PIXELS // (height * width * channels))  # bounded memory for long videos
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        # 1. (t*C, 1, H, W) planes
        x = pred[start:stop].permute(0, 3, 1, 2).reshape(-1, 1, height, width)
        y = target[start:stop].permute(0, 3, 1, 2).reshape(-1, 1, height, width)
        # 2. Gaussian-weighted means, variances and covariance
        mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
        var_x = _filter_valid(x * x, window) - mu_x.square()
        var_y = _filter_valid(y * y, window) - mu_y.square()
        cov = _filter_valid(x * y, window) - mu_x * mu_y
        # 3. the SSIM map, its mean per plane, then per frame
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) *
                                                              (var_x + var_y + c2))
        values[start:stop] = ssim_map.flatten(1).mean(1).view(stop - start, channels).mean(1).cpu()
    return _reduce(values, reduction, "ssim")


def _luma(video: torch.Tensor) -> torch.Tensor:
    """(T, H, W, C) -> (T, H, W, 1) BT.601 luma (grey images pass through)."""
    if video.shape[-1] == 1:
        return video
    if video.shape[-1] != 3:
        raise ValueError(f"luma: need 1 or 3 channels, got {video.shape[-1]}")
    weights = torch.tensor(LUMA_WEIGHTS, dtype=video.dtype, device=video.device)
    return (video * weights).sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------
# CPBD


def cpbd(images, data_range: float = 1.0) -> float:
    """Cumulative probability of blur detection (Narvekar & Karam 2011), a no-reference sharpness score in
    [0, 1] (higher = sharper).

    Per frame, on the BT.601 grey image scaled to 0..255:

    1. Canny edges (Gaussian sigma sqrt(2), Sobel gradients, non-maximum suppression, hysteresis with
       high threshold at the 70th percentile of the gradient magnitude and low = 0.4 high, MATLAB's
       defaults) classify 64 x 64 blocks: an edge block has more than 0.2 % edge pixels (the image's
       right / bottom remainder that is not a whole block is ignored, as in the reference).
    2. Sobel edges (squared magnitude above 4x its mean, thinned to local maxima along the dominant
       gradient axis: MATLAB edge(I, 'sobel') defaults) are the edges whose width is measured.
    3. Edge width (Marziliano et al., see :func:`edge_widths`): at a Sobel edge pixel whose gradient
       direction (np.gradient, quantised to 45 degrees) is 0 or +-180 degrees, walk left and right along the row to the nearest
       local intensity extremum (at most 100 steps per side); width = distance between the two extrema.
    4. In an edge block with contrast c = int(max - min) of the block, the just-noticeable-blur width is
       w_JNB = 5 for c <= 50, else 3; every measured edge gets P_blur = 1 - exp(-(w / w_JNB)^3.6).
    5. CPBD = share of all measured edges (of all frames pooled) whose P_blur, rounded to percent, is at most
       P_JNB = 63 %.

    An image with no measured edge (flat, or smaller than one 64 x 64 block) scores 0.0, as the reference
    does (nothing in it is sharp).

    Scores are those of the MATLAB reference's ``edge()`` defaults, not of the PyPI ``cpbd`` 1.0.7 package
    (r = 0.92, mean |difference| 0.059 on blurred SynthSinger faces; see the module docstring).

    Args:
        images: (H, W) grey, (H, W, C) or (T, H, W, C) channels-last, values in [0, data_range].
        data_range: the white level (1.0 for float images, 255 for uint8).

    Returns:
        The CPBD score as a float.
    """
    x = _as_tensor(images, "cpbd", "images")
    if x.ndim == 2:
        x = x[..., None]
    video = _video(x, "cpbd", "images")
    if not data_range > 0:
        raise ValueError(f"cpbd: data_range must be positive, got {data_range}")
    grey = (_luma(video)[..., 0] * (255.0 / data_range)).cpu().numpy()
    histogram = np.zeros(101, dtype=np.int64)
    for frame in grey:
        histogram += _cpbd_histogram(frame)
    total = int(histogram.sum())
    if total == 0:
        return 0.0
    return float(histogram[: int(round(CPBD_P_JNB * 100)) + 1].sum() / total)


def _cpbd_histogram(image: np.ndarray) -> np.ndarray:
    """(H, W) float64 grey 0..255 -> (101,) counts of edges per rounded P_blur percent."""
    histogram = np.zeros(101, dtype=np.int64)
    height, width = image.shape
    rows, cols = height // CPBD_BLOCK, width // CPBD_BLOCK
    if rows == 0 or cols == 0:
        return histogram
    canny = canny_edges(image)
    widths = edge_widths(image, sobel_edges(image))
    for i in range(rows):
        for j in range(cols):
            block = (slice(i * CPBD_BLOCK, (i + 1) * CPBD_BLOCK), slice(j * CPBD_BLOCK, (j + 1) * CPBD_BLOCK))
            if np.count_nonzero(canny[block]) <= CPBD_BLOCK * CPBD_BLOCK * CPBD_EDGE_BLOCK_SHARE:
                continue
            block_widths = widths[block]
            block_widths = block_widths[block_widths > 0]
            if block_widths.size == 0:
                continue
            contrast = int(image[block].max() - image[block].min())
            jnb = 5.0 if contrast <= 50 else 3.0
            probability = 1.0 - np.exp(-np.abs(block_widths / jnb) ** CPBD_BETA)
            histogram += np.bincount(np.rint(probability * 100).astype(np.int64), minlength=101)
    return histogram


def _sobel_gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gy): Sobel [1 2 1] x [-1 0 1] / 8 derivatives along x (columns) and y (rows), edges replicated."""
    from scipy import ndimage

    gx = ndimage.sobel(image, axis=1, mode="nearest") / 8.0
    gy = ndimage.sobel(image, axis=0, mode="nearest") / 8.0
    return gx, gy


def sobel_edges(image: np.ndarray) -> np.ndarray:
    """(H, W) grey -> (H, W) bool thinned Sobel edges (squared magnitude above 4x its mean, local maximum
    across the dominant gradient axis)."""
    gx, gy = _sobel_gradients(image)
    strength = gx * gx + gy * gy
    cutoff = 4.0 * strength.mean()
    if cutoff <= 0:
        return np.zeros(image.shape, dtype=bool)
    padded = np.pad(strength, 1)
    centre = padded[1:-1, 1:-1]
    across_x = (centre > padded[1:-1, :-2]) & (centre >= padded[1:-1, 2:])
    across_y = (centre > padded[:-2, 1:-1]) & (centre >= padded[2:, 1:-1])
    horizontal = np.abs(gx) >= np.abs(gy)
    return (strength > cutoff) & ((horizontal & across_x) | (~horizontal & across_y))


def canny_edges(image: np.ndarray, sigma: float = math.sqrt(2.0), high_percentile: float = 0.7,
                low_ratio: float = 0.4) -> np.ndarray:
    """(H, W) grey -> (H, W) bool Canny edges (MATLAB edge(I, 'canny') defaults).

    Args:
        image: (H, W) float64.
        sigma: the Gaussian smoothing.
        high_percentile: share of pixels below the high threshold (of the gradient magnitude).
        low_ratio: low threshold / high threshold.
    """
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image, sigma, mode="nearest")
    gx, gy = _sobel_gradients(smooth)
    magnitude = np.hypot(gx, gy)
    if magnitude.max() <= 0:
        return np.zeros(image.shape, dtype=bool)
    # 1. non-maximum suppression along the gradient direction quantised to 4 directions
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    sector = (np.floor((angle + 22.5) / 45.0).astype(np.int64)) % 4  # 0: x, 1: diagonal, 2: y, 3: anti
    padded = np.pad(magnitude, 1)
    height, width = image.shape

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]

    # image rows grow downwards while gy is the derivative along rows, so (dx, dy) steps follow (gx, gy)
    neighbours = {0: ((0, 1), (0, -1)), 1: ((1, 1), (-1, -1)), 2: ((1, 0), (-1, 0)), 3: ((1, -1), (-1, 1))}
    keep = np.zeros(image.shape, dtype=bool)
    for index, ((ay, ax), (by, bx)) in neighbours.items():
        here = sector == index
        keep |= here & (magnitude >= shifted(ay, ax)) & (magnitude >= shifted(by, bx))
    suppressed = np.where(keep, magnitude, 0.0)
    # 2. hysteresis: weak pixels connected (8-neighbourhood) to a strong one
    high = np.quantile(magnitude, high_percentile)
    if high <= 0:
        high = magnitude[magnitude > 0].min()
    low = low_ratio * high
    weak = suppressed > low
    labels, count = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    strong_labels = np.unique(labels[weak & (suppressed > high)])
    return np.isin(labels, strong_labels[strong_labels > 0])


def edge_widths(image: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano edge widths: (H, W) grey and (H, W) bool edges -> (H, W) float64 widths (0 = not measured).

    Only edge pixels away from the border whose gradient angle (np.gradient) quantises to 0 or +-180 degrees
    are measured; each side of the walk counts 1 + the number of further monotone steps (capped at 100), so
    width = distance between the local extrema on both sides. Deviation from the MATLAB / PyPI reference:
    there a purely vertical gradient (x derivative 0, y derivative not) keeps angle 0 and is measured
    (width 2 in a flat row, counted as sharp); here it is +-90 degrees and not measured.
    """
    gy, gx = np.gradient(image)
    angle = np.rad2deg(np.arctan2(gy, gx))  # gx = gy = 0 -> 0; gx = 0 < |gy| -> +-90 (not measured)
    quantised = 45.0 * np.round(angle / 45.0)
    height, width = image.shape
    diff = np.zeros(image.shape)
    diff[:, 1:] = image[:, 1:] - image[:, :-1]  # diff[:, k] = image[:, k] - image[:, k - 1]
    rising_left, rising_right = _runs(diff > 0)
    falling_left, falling_right = _runs(diff < 0)
    # run lengths at the indices the walks start from: column c-1 going left, column c+2 going right
    col = np.arange(width)
    left_index, right_index = np.clip(col - 1, 0, width - 1), np.clip(col + 2, 0, width - 1)
    valid_right = (col + 2) <= width - 1

    def side(runs: np.ndarray, index: np.ndarray, valid=None) -> np.ndarray:
        count = runs[:, index]
        if valid is not None:
            count = np.where(valid[None, :], count, 0)
        return np.minimum(count, CPBD_MAX_MARGIN) + 1.0

    # diff[:, k] for k >= 1 only: the left run never counts diff[:, 0] (outer pixel -1 is outside)
    rising_up = side(rising_left, left_index) + side(rising_right, right_index, valid_right)
    falling_down = side(falling_left, left_index) + side(falling_right, right_index, valid_right)
    interior = np.zeros(image.shape, dtype=bool)
    interior[1:-1, 1:-1] = True
    measured = edges & interior
    widths = np.zeros(image.shape)
    zero = measured & (quantised == 0)
    flat = measured & (np.abs(quantised) == 180)
    widths[zero] = rising_up[zero]
    widths[flat] = falling_down[flat]
    return widths


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of True along rows of (H, W) bool (column 0 excluded): to the left ending at each
    column, and to the right starting at each column."""
    height, width = mask.shape
    mask = mask.copy()
    mask[:, 0] = False
    left = np.zeros((height, width), dtype=np.int64)
    right = np.zeros((height, width), dtype=np.int64)
    for k in range(1, width):
        left[:, k] = np.where(mask[:, k], left[:, k - 1] + 1, 0)
    for k in range(width - 1, 0, -1):
        following = right[:, k + 1] if k + 1 < width else 0
        right[:, k] = np.where(mask[:, k], following + 1, 0)
    return left, right
