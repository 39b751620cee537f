"""Diffusion schedule, forward noising (FD2Talk eq. 2) and the DDIM x0-prediction sampler (eq. 5) for motion,
with overlapping windows for sequences longer than the model's training length."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import torch

from ..io.config import JsonConfig

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")


@dataclasses.dataclass(frozen=True)
class DiffusionScheduleConfig(JsonConfig):
    """The noise schedule. FD2Talk does not state one; the default is DDPM's linear 1e-4..0.02 over 1000 steps."""

    steps: int = 1000  # T training timesteps (t = 0..T-1)
    beta_start: float = 1e-4  # beta_1 of the linear schedules
    beta_end: float = 0.02  # beta_T of the linear schedules
    schedule: str = "linear"  # "linear" (DDPM), "scaled_linear" (linear in sqrt(beta)), "cosine" (Nichol & Dhariwal)

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"DiffusionScheduleConfig: steps must be an integer >= 2, got {self.steps!r}")
        if self.schedule not in BETA_SCHEDULES:
            raise ValueError(f"DiffusionScheduleConfig: schedule must be one of {BETA_SCHEDULES}, "
                             f"got {self.schedule!r}")
        if not (0.0 < self.beta_start <= self.beta_end < 1.0):
            raise ValueError(f"DiffusionScheduleConfig: need 0 < beta_start <= beta_end < 1, got "
                             f"{self.beta_start}, {self.beta_end}")


class DiffusionSchedule:
    """alpha_bar_t of a variance-preserving diffusion, kept in float64.

    Args:
        steps: T training timesteps.
        beta_start, beta_end, schedule: see DiffusionScheduleConfig.
    """

    def __init__(self, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 schedule: str = "linear"):
        self.config = DiffusionScheduleConfig(steps=steps, beta_start=beta_start, beta_end=beta_end,
                                              schedule=schedule)
        if schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        elif schedule == "scaled_linear":
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
        else:
            s = 0.008
            grid = torch.arange(steps + 1, dtype=torch.float64) / steps
            f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        self.betas = betas  # (T,) float64
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (T,) float64: alpha_bar_t

    @classmethod
    def from_config(cls, config: DiffusionScheduleConfig) -> DiffusionSchedule:
        return cls(**dataclasses.asdict(config))

    @property
    def steps(self) -> int:
        return self.config.steps

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t as a Python float; t = -1 means 'before the first step' (alpha_bar = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """FD2Talk eq. (2): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

        Args:
            x0: (B, ...) clean samples.
            t: (B,) integer timesteps in 0..T-1.
            noise: like x0, standard normal.

        Returns:
            like x0, in x0's dtype.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"q_sample: noise {tuple(noise.shape)} must match x0 {tuple(x0.shape)}")
        t = torch.as_tensor(t, device=x0.device).long().reshape(-1)
        if t.shape[0] != x0.shape[0]:
            raise ValueError(f"q_sample: t has {t.shape[0]} entries for a batch of {x0.shape[0]}")
        if int(t.min()) < 0 or int(t.max()) >= self.steps:
            raise ValueError(f"q_sample: timesteps must lie in 0..{self.steps - 1}, got {t.tolist()}")
        work = _exact_dtype(x0)
        alpha_bar = self.alphas_cumprod[t.cpu()].to(device=x0.device, dtype=work).reshape(-1, *([1] * (x0.ndim - 1)))
        return (alpha_bar.sqrt() * x0.to(work) + (1 - alpha_bar).sqrt() * noise.to(work)).to(x0.dtype)

    def random_timesteps(self, batch: int, *, generator: torch.Generator | None = None,
                         device=None) -> torch.Tensor:
        """(batch,) long timesteps uniform in 0..T-1 (training, eqs. 8-9)."""
        return torch.randint(0, self.steps, (batch,), generator=generator).to(device)

    def timesteps(self, count: int) -> list[int]:
        """`count` descending timesteps for DDIM ("leading" spacing of the DDIM paper: 0, c, 2c, ... with
        c = T // count), e.g. 50 of 1000 -> [980, 960, ..., 20, 0]."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= self.steps:
            raise ValueError(f"timesteps: count must be an integer in 1..{self.steps}, got {count!r}")
        stride = self.steps // count
        return list(range(0, stride * count, stride))[::-1]


def _exact_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for the schedule arithmetic, except on devices without it (Apple MPS: float32)."""
    return torch.float32 if tensor.device.type == "mps" else torch.float64


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """sigma_t of DDIM (Song et al. 2021, eq. 16): eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t / a_prev)."""
    return eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * math.sqrt(1 - alpha_bar_t / alpha_bar_prev)


def ddim_step(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float, *,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """FD2Talk eq. (5): x_{t-1} = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) / sqrt(1 - a_t)
    (x_t - sqrt(a_t) x0_hat) + sigma eps, computed in float64 (float32 on Apple MPS).

    Args:
        x_t: (B, ...) current sample.
        x0_hat: like x_t, the model's clean estimate.
        alpha_bar_t: alpha_bar at the current timestep (< 1).
        alpha_bar_prev: alpha_bar at the next (less noisy) timestep; 1.0 after the last step.
        eta: 0 = deterministic DDIM, 1 = DDPM-like variance.
        noise: like x_t, standard normal; needed when eta > 0.

    Returns:
        like x_t, in x_t's dtype.
    """
    if x0_hat.shape != x_t.shape:
        raise ValueError(f"ddim_step: x0_hat {tuple(x0_hat.shape)} must match x_t {tuple(x_t.shape)}")
    if not (0.0 < alpha_bar_t < 1.0 and 0.0 < alpha_bar_prev <= 1.0):
        raise ValueError(f"ddim_step: need 0 < alpha_bar_t < 1 and 0 < alpha_bar_prev <= 1, got "
                         f"{alpha_bar_t}, {alpha_bar_prev}")
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma ** 2, 0.0)) / math.sqrt(1.0 - alpha_bar_t)
    work = _exact_dtype(x_t)
    x0 = x0_hat.to(work)
    out = math.sqrt(alpha_bar_prev) * x0 + direction * (x_t.to(work) - math.sqrt(alpha_bar_t) * x0)
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs `noise` (standard normal, shaped like x_t)")
        out = out + sigma * noise.to(work)
    return out.to(x_t.dtype)


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
           schedule: DiffusionSchedule | None = None, motion_dim: int | None = None, window_batch: int = 64,
           progress: Progress | None = None) -> torch.Tensor:
    """DDIM sampling of x0-prediction motion (FD2Talk eq. 5) for sequences of any length.

    Sequences longer than `window` are cut into windows overlapping by `overlap` frames. All windows share
    ONE global x_t (B, F, D) and ONE noise stream: at every step each window predicts x0 for its frames,
    the predictions are blended into a global x0_hat with linear ramps over the shared frames, and the DDIM
    step runs on the whole sequence. Seams are thus continuous by construction (a model whose prediction
    does not depend on the window position gives exactly the single-window result).

    Args:
        model: callable (x_t (N, W, D), t (N,) long, audio (N, W, A)) -> x0_hat (N, W, D); a MotionDiT.
        audio: (B, F, A) per-frame audio features.
        steps: number of DDIM steps (the timestep sequence of DiffusionSchedule.timesteps).
        eta: DDIM eta (0 = deterministic given the initial noise).
        seed: int seed or a CPU torch.Generator (noise is drawn on the CPU, so results match across devices).
        window: frames per model call; default model.config.frames.
        overlap: frames shared by neighbouring windows (0 <= overlap < window).
        schedule: the training noise schedule; default DiffusionSchedule() (linear 1e-4..0.02, 1000 steps).
        motion_dim: D; default model.config.motion_dim.
        window_batch: most windows (times B) per model call, to bound memory on long songs.
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
    schedule = schedule or DiffusionSchedule()
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
    # 2. x_T ~ N(0, I)
    x = torch.randn(batch, frames, motion_dim, generator=generator).to(device=device, dtype=dtype)
    x0_hat = x
    for number, t in enumerate(timesteps):
        t_prev = timesteps[number + 1] if number + 1 < len(timesteps) else -1
        # 3. x0 estimate of every window, blended into one sequence
        x0_hat = torch.zeros_like(x)
        for item, frame, which in chunks:
            t_batch = torch.full((frame.shape[0],), t, dtype=torch.long, device=device)
            predicted = model(x[item, frame], t_batch, audio[item, frame]) * weights[which][:, :, None]
            x0_hat.view(batch * frames, motion_dim).index_add_(0, (item * frames + frame).reshape(-1),
                                                                predicted.reshape(-1, motion_dim))
        x0_hat.div_(total[None, :, None])
        # 4. DDIM step, eq. (5), applied STEP_FRAMES frames at a time (it is elementwise: same values, but its
        #    float64 temporaries stay the size of a span, not of the song)
        noise = None
        if eta > 0 and t_prev >= 0:
            noise = torch.randn(x.shape, generator=generator).to(device=device, dtype=dtype)
        stepped = torch.empty_like(x)
        for lo in range(0, frames, STEP_FRAMES):
            span = slice(lo, lo + STEP_FRAMES)
            stepped[:, span] = ddim_step(x[:, span], x0_hat[:, span], schedule.alpha_bar(t),
                                         schedule.alpha_bar(t_prev), eta=eta,
                                         noise=None if noise is None else noise[:, span])
        x = stepped
        if progress is not None:
            progress(number + 1, len(timesteps))
    return x
