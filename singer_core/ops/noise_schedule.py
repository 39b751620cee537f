"""The one noise schedule and DDIM sampler of every diffusion model in the pack (SINGER/Hallo video UNet,
FD2Talk motion DiTs and frame UNet): DDPM betas (Ho et al. 2020), zero terminal SNR (Lin et al. 2024, Alg. 1),
forward noising (FD2Talk eq. 2), eps / v / x0 prediction, and the DDIM step (Song et al. 2021 eqs. 12, 16;
FD2Talk eq. 5), with timestep spacings and a stepping rule that reproduce diffusers' `DDIMScheduler`.

It lives in `ops/` because the motion and diffusion packages are siblings and both sample with it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..io.config import JsonConfig
from ..progress import Progress

logger = logging.getLogger(__name__)

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
STEPPINGS = ("diffusers", "chained")


@dataclasses.dataclass(frozen=True)
class NoiseSchedule(JsonConfig):
    """A variance-preserving diffusion's training schedule and how DDIM walks it. Defaults: Hallo / SINGER's
    `noise_scheduler_kwargs` (linear 0.00085..0.012, zero terminal SNR, v-prediction, trailing spacing).

    `stepping` says where each DDIM step lands: "diffusers" goes from t to t - train_steps // steps, exactly
    as diffusers' DDIMScheduler (and so every official diffusers-based inference script) does, even where
    that is not the next listed timestep (trailing / linspace spacing with a step count that does not divide
    train_steps); "chained" goes to the next listed timestep and from the last one to the clean sample (the
    DDIM paper's sub-sequence). Both agree for leading spacing and whenever steps divides train_steps.
    """

    train_steps: int = 1000  # T training timesteps (t = 0..T-1)
    beta_start: float = 0.00085  # beta of t = 0
    beta_end: float = 0.012  # beta of t = T-1
    beta_schedule: str = "linear"  # "linear", "scaled_linear" (linear in sqrt beta, SD1.5) or "cosine" (Nichol & Dhariwal)
    zero_snr: bool = True  # rescale so alpha_bar_{T-1} = 0 (Lin et al. 2024, Algorithm 1)
    prediction: str = "v_prediction"  # what the network predicts: "epsilon", "v_prediction" or "sample" (x0)
    spacing: str = "trailing"  # DDIM timesteps: "leading", "trailing" or "linspace" (diffusers' timestep_spacing)
    steps_offset: int = 0  # added to "leading" timesteps (diffusers' steps_offset; SD1.5 uses 1)
    stepping: str = "diffusers"  # "diffusers" (t -> t - T // steps) or "chained" (t -> next listed timestep)

    def __post_init__(self) -> None:
        if isinstance(self.train_steps, bool) or not isinstance(self.train_steps, int) or self.train_steps < 2:
            raise ValueError(f"NoiseSchedule: train_steps must be an integer >= 2, got {self.train_steps!r}")
        for name, value, allowed in (("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
                                     ("prediction", self.prediction, PREDICTIONS),
                                     ("spacing", self.spacing, SPACINGS), ("stepping", self.stepping, STEPPINGS)):
            if value not in allowed:
                raise ValueError(f"NoiseSchedule: {name} must be one of {allowed}, got {value!r}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"NoiseSchedule: need 0 < beta_start <= beta_end < 1, got {self.beta_start}, "
                             f"{self.beta_end}")
        if isinstance(self.steps_offset, bool) or not isinstance(self.steps_offset, int) or self.steps_offset < 0:
            raise ValueError(f"NoiseSchedule: steps_offset must be a non-negative integer, got {self.steps_offset!r}")

    @classmethod
    def fd2talk(cls, train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                beta_schedule: str = "linear") -> NoiseSchedule:
        """FD2Talk's x0-prediction diffusion (eqs. 2, 5; the paper gives no betas: DDPM's linear 1e-4..0.02),
        leading spacing (0, c, 2c, ... with c = T // steps)."""
        return cls(train_steps=train_steps, beta_start=beta_start, beta_end=beta_end, beta_schedule=beta_schedule,
                   zero_snr=False, prediction="sample", spacing="leading")

    # ---- the training schedule -------------------------------------------------------------------
    @functools.cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) float64 alpha_bar_t = prod_{s <= t} (1 - beta_s); with zero_snr sqrt(alpha_bar) is shifted and
        scaled so the first is kept and the last is exactly 0 (Lin et al. 2024, Algorithm 1)."""
        steps = self.train_steps
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, steps, dtype=torch.float64)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, steps, dtype=torch.float64) ** 2
        else:  # alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), betas capped at 0.999
            grid = torch.arange(steps + 1, dtype=torch.float64) / steps
            f = torch.cos((grid + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        cumprod = torch.cumprod(1.0 - betas, dim=0)
        if self.zero_snr:
            root = cumprod.sqrt()
            first, last = root[0].clone(), root[-1].clone()
            cumprod = ((root - last) * first / (first - last)) ** 2
        return cumprod

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t as a Python float; t < 0 means 'the clean sample' (alpha_bar = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def random_timesteps(self, batch: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(batch,) long training timesteps uniform in 0..T-1 (drawn on the CPU generator, then moved)."""
        return torch.randint(0, self.train_steps, (batch,), generator=generator).to(device)

    # ---- DDIM timesteps ----------------------------------------------------------------------------
    def listed_timesteps(self, steps: int) -> list[int]:
        """The `steps` descending timesteps of the spacing, as diffusers' `DDIMScheduler.set_timesteps`:
        leading k * (T // steps) + offset, trailing round(T - k T / steps) - 1, linspace round(k (T-1)/(steps-1))."""
        total = self.train_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
            raise ValueError(f"NoiseSchedule: steps must be an integer in 1..{total}, got {steps!r}")
        if self.spacing == "leading":
            listed = [k * (total // steps) + self.steps_offset for k in range(steps)][::-1]
        elif self.spacing == "trailing":
            listed = (np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1).tolist()
        else:
            listed = np.linspace(0, total - 1, steps).round()[::-1].astype(np.int64).tolist()
        if not all(0 <= t < total for t in listed):
            raise ValueError(f"NoiseSchedule: {self.spacing} spacing with steps_offset {self.steps_offset} and "
                             f"{steps} steps leaves 0..{total - 1}: {listed[:3]}...; lower steps_offset")
        return [int(t) for t in listed]

    def timesteps(self, steps: int) -> torch.Tensor:
        """(steps, 2) long rows (t, t_prev) of a DDIM run of `steps` steps; t_prev < 0 means the clean sample
        (alpha_bar = 1, diffusers' set_alpha_to_one). The stepping rule picks t_prev (see the class docstring)."""
        listed = self.listed_timesteps(steps)
        if self.stepping == "diffusers":
            previous = [max(t - self.train_steps // steps, -1) for t in listed]
        else:
            previous = listed[1:] + [-1]
        return torch.tensor(list(zip(listed, previous, strict=True)), dtype=torch.long).reshape(steps, 2)


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for the schedule arithmetic, except on devices without it (Apple MPS: float32)."""
    return torch.float32 if tensor.device.type == "mps" else torch.float64


def _coefficients(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t of each batch entry, (B, 1, ...) on like's device, in float64 (MPS: float32)."""
    t = torch.as_tensor(t).long().reshape(-1)
    if t.shape[0] != like.shape[0]:
        raise ValueError(f"q_sample: t has {t.shape[0]} entries for a batch of {like.shape[0]}")
    total = alphas_cumprod.shape[0]
    if int(t.min()) < 0 or int(t.max()) >= total:
        raise ValueError(f"q_sample: timesteps must lie in 0..{total - 1}, got {t.tolist()}")
    work = _work_dtype(like)
    alpha_bar = alphas_cumprod.to(t.device)[t].to(device=like.device, dtype=work)
    return alpha_bar.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Forward diffusion, FD2Talk eq. (2): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

    x0: (B, ...) clean samples; noise: like x0, standard normal; t: (B,) integer timesteps in 0..T-1;
    alphas_cumprod: (T,) a schedule's `alphas_cumprod`. The coefficients are taken in float64 and the mix
    done in x0's dtype. Returns like x0.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"q_sample: noise {tuple(noise.shape)} must match x0 {tuple(x0.shape)}")
    alpha_bar = _coefficients(alphas_cumprod, t, x0)
    return alpha_bar.sqrt().to(x0.dtype) * x0 + (1 - alpha_bar).sqrt().to(x0.dtype) * noise


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Velocity v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022), the v-prediction
    target; shapes as q_sample."""
    if noise.shape != x0.shape:
        raise ValueError(f"v_target: noise {tuple(noise.shape)} must match x0 {tuple(x0.shape)}")
    alpha_bar = _coefficients(alphas_cumprod, t, x0)
    return alpha_bar.sqrt().to(x0.dtype) * noise - (1 - alpha_bar).sqrt().to(x0.dtype) * x0


def training_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """What a network of `schedule.prediction` is trained to output: eps, v or x0 (shapes as q_sample)."""
    if schedule.prediction == "epsilon":
        return noise
    if schedule.prediction == "sample":
        return x0
    return v_target(x0, noise, t, schedule.alphas_cumprod)


def predict_x0_eps(output: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: float,
                   prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) implied by a network output at cumulative alpha `alpha_bar_t` (DDIM eq. 12's f_theta).

    output, x_t: like each other; prediction: "epsilon", "v_prediction" or "sample". Float math in the
    inputs' dtype: callers pass float64 tensors for the exact step.
    """
    a, s = math.sqrt(alpha_bar_t), math.sqrt(1.0 - alpha_bar_t)
    if prediction == "v_prediction":
        return a * x_t - s * output, a * output + s * x_t
    if prediction == "sample":
        return output, (x_t - a * output) / s
    if prediction == "epsilon":
        if alpha_bar_t == 0.0:
            raise ValueError("predict_x0_eps: epsilon prediction is undefined at zero SNR; use v_prediction")
        return (x_t - s * output) / a, output
    raise ValueError(f"predict_x0_eps: prediction must be one of {PREDICTIONS}, got {prediction!r}")


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """sigma_t of DDIM (Song et al. 2021, eq. 16): eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t / a_prev)."""
    return eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * math.sqrt(1 - alpha_bar_t / alpha_bar_prev)


def ddim_step(x_t: torch.Tensor, output: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float, *,
              prediction: str = "sample", eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step, FD2Talk eq. (5) / DDIM eq. (12):
    x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z, with (x0, eps) from the network
    output (for x0-prediction eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t), which is eq. 5 as printed),
    computed in float64 (float32 on Apple MPS).

    Args:
        x_t: (B, ...) current sample.
        output: like x_t, the network output (eps, v or x0 per `prediction`).
        alpha_bar_t: alpha_bar at the current timestep (0 allowed for v / x0 prediction: zero terminal SNR).
        alpha_bar_prev: alpha_bar where the step lands; 1.0 for the clean sample.
        prediction: "epsilon", "v_prediction" or "sample".
        eta: 0 = deterministic DDIM, 1 = DDPM-like variance.
        noise: like x_t, standard normal z; needed when sigma > 0.

    Returns:
        like x_t, in x_t's dtype.
    """
    if output.shape != x_t.shape:
        raise ValueError(f"ddim_step: output {tuple(output.shape)} must match x_t {tuple(x_t.shape)}")
    if not (0.0 <= alpha_bar_t < 1.0 and 0.0 < alpha_bar_prev <= 1.0):
        raise ValueError(f"ddim_step: need 0 <= alpha_bar_t < 1 and 0 < alpha_bar_prev <= 1, got "
                         f"{alpha_bar_t}, {alpha_bar_prev}")
    work = _work_dtype(x_t)
    x0, eps = predict_x0_eps(output.to(work), x_t.to(work), alpha_bar_t, prediction)
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    out = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1.0 - alpha_bar_prev - sigma ** 2, 0.0)) * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs `noise` (standard normal, shaped like x_t)")
        out = out + sigma * noise.to(work)
    return out.to(x_t.dtype)


def sample_ddim(model: Callable[..., torch.Tensor], x: torch.Tensor, timesteps: torch.Tensor, *,
                schedule: NoiseSchedule, cond: Mapping[str, object] | None = None, eta: float = 0.0,
                generator: torch.Generator | None = None, callback: Progress | None = None,
                step_span: int | None = None) -> torch.Tensor:
    """DDIM from x_T over `timesteps` (k-diffusion's plain-function sampler shape).

    Args:
        model: callable (x_t, t, **cond) -> network output like x_t (eps, v or x0 per schedule.prediction);
            t is a 0-d long tensor on x's device.
        x: (B, ...) the initial noise x_T.
        timesteps: (steps, 2) rows (t, t_prev) from `schedule.timesteps(steps)`.
        schedule: the training schedule (alpha_bar and prediction type).
        cond: keyword arguments passed to every model call.
        eta: DDIM eta; > 0 draws z ~ N(0, I) from `generator` on the CPU (so results match across devices)
            at every step that does not land on the clean sample.
        generator: CPU generator for eta > 0 (default: torch's global one).
        callback: callback(done, total) after every step; may raise to stop.
        step_span: apply the (elementwise) DDIM step this many entries of dim 1 at a time: same values, but
            its float64 temporaries stay the size of a span (a whole song's motion is one long dim 1).

    Returns:
        like x: the sample after the last step.
    """
    timesteps = torch.as_tensor(timesteps)
    if timesteps.ndim != 2 or timesteps.shape[1] != 2:
        raise ValueError(f"sample_ddim: timesteps must be (steps, 2) rows (t, t_prev) from NoiseSchedule.timesteps, "
                         f"got {tuple(timesteps.shape)}")
    cond = dict(cond or {})
    pairs = [(int(t), int(t_prev)) for t, t_prev in timesteps.tolist()]
    for number, (t, t_prev) in enumerate(pairs):
        output = model(x, torch.tensor(t, dtype=torch.long, device=x.device), **cond)
        noise = None
        if eta > 0 and t_prev >= 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
        a_t, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        if step_span is None or x.ndim < 2 or x.shape[1] <= step_span:
            x = ddim_step(x, output, a_t, a_prev, prediction=schedule.prediction, eta=eta, noise=noise)
        else:
            stepped = torch.empty_like(x)
            for low in range(0, x.shape[1], step_span):
                span = slice(low, low + step_span)
                stepped[:, span] = ddim_step(x[:, span], output[:, span], a_t, a_prev,
                                             prediction=schedule.prediction, eta=eta,
                                             noise=None if noise is None else noise[:, span])
            x = stepped
        if callback is not None:
            callback(number + 1, len(pairs))
    return x
