"""Windowed DDIM sampling of x0-prediction motion (FD2Talk eq. 5) for sequences longer than the model's training
length: overlapping windows blended into one global x0 estimate per step. The schedule, eq. (2) and the DDIM
step itself are the pack's one implementation in ops/noise_schedule.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..ops.noise_schedule import NoiseSchedule, sample_ddim
from ..progress import Progress

logger = logging.getLogger(__name__)


def window_starts(frames: int, window: int, overlap: int) -> list[int]:
    """First frame of each window covering 0..frames-1: stride window - overlap, the last window ending at
    the last frame (so it may overlap its neighbour by more). One window [0] when frames <= window."""
    if frames <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, frames - window, stride))
    return starts + [frames - window]


STEP_FRAMES = 4096  # frames per DDIM-step span in sample() (bounds its float64 temporaries)


def _window_weights(frames: int, window: int, starts: list[int], overlap: int) -> torch.Tensor:
    """(len(starts), W) blending weights: linear ramps 1/(o+1) .. o/(o+1) over the frames shared with a
    neighbour, 1 elsewhere and at the outer ends of the sequence (normalised later by their sum per frame)."""
    width = min(window, frames)
    position = torch.arange(width, dtype=torch.float64)
    ramp = max(overlap, 0) + 1
    weights = []
    for number, _ in enumerate(starts):
        weight = torch.ones(width, dtype=torch.float64)
        if number > 0:
            weight = torch.minimum(weight, (position + 1) / ramp)
        if number < len(starts) - 1:
            weight = torch.minimum(weight, (width - position) / ramp)
        weights.append(weight)
    return torch.stack(weights)


def _make_generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"sample: seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def sample(model: Callable[..., torch.Tensor], audio: torch.Tensor, *, steps: int = 50, eta: float = 0.0,
           seed: int | torch.Generator = 0, window: int | None = None, overlap: int = 5,
           schedule: NoiseSchedule | None = None, motion_dim: int | None = None, window_batch: int = 64,
           x0_range: tuple[torch.Tensor, torch.Tensor] | None = None, progress: Progress | None = None) -> torch.Tensor:
    """DDIM sampling of x0-prediction motion (FD2Talk eq. 5) for sequences of any length.

    Sequences longer than `window` are cut into windows overlapping by `overlap` frames. All windows share
    ONE global x_t (B, F, D) and ONE noise stream: at every step each window predicts x0 for its frames,
    the predictions are blended into a global x0_hat with linear ramps over the shared frames, and the DDIM
    step runs on the whole sequence. Seams are thus continuous by construction (a model whose prediction
    does not depend on the window position gives exactly the single-window result).

    Args:
        model: callable (x_t (N, W, D), t (N,) long, audio (N, W, A)) -> x0_hat (N, W, D); a MotionDiT.
        audio: (B, F, A) per-frame audio features.
        steps: number of DDIM steps (the timesteps of schedule.timesteps).
        eta: DDIM eta (0 = deterministic given the initial noise).
        seed: int seed or a CPU torch.Generator (noise is drawn on the CPU, so results match across devices).
        window: frames per model call; default model.config.frames.
        overlap: frames shared by neighbouring windows (0 <= overlap < window).
        schedule: the training noise schedule; default NoiseSchedule.fd2talk() (linear 1e-4..0.02, 1000 steps,
            x0 prediction, leading spacing).
        motion_dim: D; default model.config.motion_dim.
        window_batch: most windows (times B) per model call, to bound memory on long songs.
        x0_range: (low (D,), high (D,)) box the blended x0 estimate is clipped to before every DDIM step (the
            data-range prior: DDPM's clipping of x0 to the data range, with the range of each coefficient
            measured on the training set); None = no clipping. With leading spacing the last step returns the
            clipped x0, so every sampled frame lies in the box.
        progress: progress(done, total) after every step (total = steps); may raise to stop.

    Returns:
        (B, F, D) sampled x0 in audio's dtype and device.
    """
    config = getattr(model, "config", None)
    window = window if window is not None else getattr(config, "frames", None)
    motion_dim = motion_dim if motion_dim is not None else getattr(config, "motion_dim", None)
    if window is None or motion_dim is None:
        raise ValueError("sample: give window= and motion_dim= for a model without .config.frames/.motion_dim")
    if audio.ndim != 3:
        raise ValueError(f"sample: audio must be (B, F, A), got {tuple(audio.shape)}")
    if not 0 <= overlap < window:
        raise ValueError(f"sample: overlap must be in 0..{window - 1} for windows of {window} frames, "
                         f"got {overlap}")
    if window_batch < 1:
        raise ValueError(f"sample: window_batch must be >= 1, got {window_batch}")
    schedule = schedule or NoiseSchedule.fd2talk()
    batch, frames, _ = audio.shape
    device, dtype = audio.device, audio.dtype
    generator = _make_generator(seed)
    timesteps = schedule.timesteps(steps)
    # 1. windows and their blending weights
    starts = window_starts(frames, window, overlap)
    width = min(window, frames)
    weights = _window_weights(frames, window, starts, overlap).to(device=device, dtype=dtype)  # (N, W)
    index = (torch.tensor(starts, device=device)[:, None] + torch.arange(width, device=device)).reshape(-1)
    total = torch.zeros(frames, device=device, dtype=dtype).index_add_(0, index, weights.reshape(-1))
    # windows are gathered window_batch at a time (batch-major: flat window i is item i // N, window i % N), so
    # no (B*N, W, A) copy of the audio or of x_t is ever made: memory beyond the output stays flat in length
    frame_of = torch.tensor(starts, device=device)[:, None] + torch.arange(width, device=device)  # (N, W)
    chunks = []
    for first in range(0, batch * len(starts), window_batch):
        flat = torch.arange(first, min(first + window_batch, batch * len(starts)), device=device)
        item, which = flat // len(starts), flat % len(starts)
        chunks.append((item[:, None], frame_of[which], which))  # (k, 1), (k, W), (k,)
    low = high = None
    if x0_range is not None:
        low, high = (torch.as_tensor(v).to(device=device, dtype=dtype) for v in x0_range)
        if low.shape != (motion_dim,) or high.shape != (motion_dim,) or bool((low > high).any()):
            raise ValueError(f"sample: x0_range must be two ({motion_dim},) tensors with low <= high, got "
                             f"{tuple(low.shape)}, {tuple(high.shape)}")

    def blended(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 estimate of every window, blended into one (B, F, D) sequence."""
        x0_hat = torch.zeros_like(x)
        for item, frame, which in chunks:
            predicted = model(x[item, frame], t.expand(frame.shape[0]), audio[item, frame]) * weights[which][:, :, None]
            x0_hat.view(batch * frames, motion_dim).index_add_(0, (item * frames + frame).reshape(-1),
                                                                predicted.reshape(-1, motion_dim))
        x0_hat.div_(total[None, :, None])
        return x0_hat if low is None else torch.maximum(torch.minimum(x0_hat, high), low)

    # 2. x_T ~ N(0, I), then DDIM (eq. 5) on the whole sequence, the noise of eta > 0 from the same generator;
    #    the elementwise step runs STEP_FRAMES frames at a time (its float64 temporaries stay span-sized)
    x = torch.randn(batch, frames, motion_dim, generator=generator).to(device=device, dtype=dtype)
    return sample_ddim(blended, x, timesteps, schedule=schedule, eta=eta, generator=generator, callback=progress,
                       step_span=STEP_FRAMES)
