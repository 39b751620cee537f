"""DDIM sampling of the SINGER/Hallo denoising network: zero-terminal-SNR linear betas, v-prediction,
"trailing" timesteps, classifier-free guidance, 16-frame clips chained by 2 motion frames."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..io.config import JsonConfig
from .audio_modules import RegionMasks

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NoiseSchedule(JsonConfig):
    """Training noise schedule (Hallo/SINGER inference.yaml `noise_scheduler_kwargs`)."""

    # diffusion steps of training
    train_steps: int = 1000
    # first beta
    beta_start: float = 0.00085
    # last beta
    beta_end: float = 0.012
    # "linear" (betas evenly spaced, as configured) or "scaled_linear" (sqrt-space, SD1.5 default)
    beta_schedule: str = "linear"
    # rescale to zero terminal SNR (Lin et al. 2024, Algorithm 1)
    zero_snr: bool = True
    # what the network predicts: "v_prediction" or "epsilon"
    prediction: str = "v_prediction"

    def __post_init__(self) -> None:
        if self.beta_schedule not in ("linear", "scaled_linear"):
            raise ValueError(f"NoiseSchedule: beta_schedule must be 'linear' or 'scaled_linear', got "
                             f"{self.beta_schedule!r}")
        if self.prediction not in ("v_prediction", "epsilon"):
            raise ValueError(f"NoiseSchedule: prediction must be 'v_prediction' or 'epsilon', got {self.prediction!r}")
        if self.train_steps < 2 or not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError("NoiseSchedule: need train_steps >= 2 and 0 < beta_start < beta_end < 1")

    def alphas_cumprod(self) -> torch.Tensor:
        """(train_steps,) float64 cumulative products of 1 - beta (the last is 0 with zero_snr)."""
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, self.train_steps, dtype=torch.float64)
        else:
            betas = torch.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, self.train_steps,
                                   dtype=torch.float64) ** 2
        cumprod = torch.cumprod(1.0 - betas, dim=0)
        if self.zero_snr:
            root = cumprod.sqrt()
            first, last = root[0].clone(), root[-1].clone()
            root = (root - last) * first / (first - last)
            cumprod = root ** 2
        return cumprod


def trailing_timesteps(train_steps: int, steps: int) -> torch.Tensor:
    """(steps,) descending DDIM timesteps with "trailing" spacing: round(T - k T/steps) - 1, k = 0..steps-1."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"trailing_timesteps: steps must be in 1..{train_steps}, got {steps}")
    return torch.tensor([round(train_steps - k * train_steps / steps) - 1 for k in range(steps)], dtype=torch.long)


def predict_x0_eps(output: torch.Tensor, sample: torch.Tensor, alpha_cumprod: float,
                   prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a network output at a step with cumulative alpha `alpha_cumprod`."""
    a, s = math.sqrt(alpha_cumprod), math.sqrt(1.0 - alpha_cumprod)
    if prediction == "v_prediction":
        return a * sample - s * output, a * output + s * sample
    if alpha_cumprod == 0.0:
        raise ValueError("predict_x0_eps: epsilon prediction is undefined at zero SNR; use v_prediction")
    return (sample - s * output) / a, output


def ddim_step(output: torch.Tensor, sample: torch.Tensor, alpha_cumprod: float, alpha_cumprod_prev: float,
              prediction: str) -> torch.Tensor:
    """Deterministic DDIM update (eta = 0): x_prev = sqrt(a') x0 + sqrt(1 - a') eps."""
    x0, eps = predict_x0_eps(output, sample, alpha_cumprod, prediction)
    return math.sqrt(alpha_cumprod_prev) * x0 + math.sqrt(1.0 - alpha_cumprod_prev) * eps


def q_sample(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Noisy sample sqrt(a_t) x0 + sqrt(1 - a_t) noise; t: (B,) long, broadcast over x0's other axes."""
    a = alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Velocity target sqrt(a_t) noise - sqrt(1 - a_t) x0 (v-prediction training)."""
    a = alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def sample_ddim(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                timesteps: torch.Tensor, *, schedule: NoiseSchedule = NoiseSchedule(),
                progress: Progress | None = None) -> torch.Tensor:
    """Run DDIM from noise `x` over descending `timesteps` (from `trailing_timesteps`).

    model: callable (x_t, t) -> network output (v or eps per schedule.prediction), same shape as x;
    x: initial noise; progress: called (done, total) after every step, may raise to stop.
    The step after the last timestep goes to alpha = 1 (clean sample), as diffusers' set_alpha_to_one.
    """
    cumprod = schedule.alphas_cumprod().tolist()
    steps = [int(t) for t in timesteps]
    for index, t in enumerate(steps):
        output = model(x, torch.tensor(t, device=x.device))
        previous = steps[index + 1] if index + 1 < len(steps) else -1
        alpha_prev = cumprod[previous] if previous >= 0 else 1.0
        x = ddim_step(output.to(x.dtype), x, cumprod[t], alpha_prev, schedule.prediction)
        if progress is not None:
            progress(index + 1, len(steps))
    return x


def _doubled(masks: RegionMasks | None) -> RegionMasks | None:
    if masks is None:
        return None
    return RegionMasks(*(tuple(torch.cat([level, level]) for level in field)
                         for field in (masks.full, masks.face, masks.lip)))


def sample_clip(net, noise: torch.Tensor, *, reference_latents: torch.Tensor, face_embedding: torch.Tensor,
                audio_windows: torch.Tensor, face_mask_image: torch.Tensor | None = None,
                masks: RegionMasks | None = None, steps: int = 40, guidance: float = 3.5,
                motion_scale: tuple[float, float, float] | None = (1.0, 1.0, 1.0),
                schedule: NoiseSchedule = NoiseSchedule(), use_msm: bool = True,
                progress: Progress | None = None) -> torch.Tensor:
    """Denoise one clip with the SINGER network, as the official pipeline does.

    net: SingerNet; noise: (B, C, F, h, w) initial latents (also what the MSM reads);
    reference_latents: (B, S, C, h, w) reference image latent first, then the motion-frame latents;
    face_embedding: (B, D) face identity; audio_windows: (B, F, seq_len, blocks, channels);
    face_mask_image: (B, 3, 8h, 8w) face-region image; masks: full/face/lip region masks;
    guidance: classifier-free scale (the unconditional branch has zero face embedding, zero face-locator
    features, zero audio tokens and no reference attention); motion_scale: pose/face/lip weights.
    Returns (B, C, F, h, w) clean latents (scale by 1 / 0.18215 before the SD VAE decoder).
    """
    batch, _, frames = noise.shape[:3]
    guided = guidance != 1.0
    with torch.no_grad():
        # 1. conditions: cond and (for guidance) uncond halves
        tokens = net.imageproj(face_embedding)
        audio = net.audio_tokens(audio_windows, noise if use_msm else None)
        features = None
        if face_mask_image is not None:
            features = net.face_locator(face_mask_image)
            features = features[:, :, None].expand(-1, -1, frames, -1, -1) if features.dim() == 4 else features
        if guided:
            tokens = torch.cat([net.imageproj(torch.zeros_like(face_embedding)), tokens])
            audio = torch.cat([torch.zeros_like(audio), audio])
            features = None if features is None else torch.cat([torch.zeros_like(features), features])
            masks = _doubled(masks)
            reference_latents = torch.cat([reference_latents, reference_latents])
        keep = torch.tensor([False] * batch + [True] * batch) if guided else None
        # 2. reference banks once, then the DDIM loop
        net.write_reference(reference_latents, tokens)
        net.reference_control.read(frames, keep)
        try:
            def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                x_in = torch.cat([x, x]) if guided else x
                out = net.denoising_unet(x_in, t, tokens, audio, mask_cond_fea=features, masks=masks,
                                         motion_scale=motion_scale)
                if not guided:
                    return out
                uncond, cond = out.chunk(2)
                return uncond + guidance * (cond - uncond)

            timesteps = trailing_timesteps(schedule.train_steps, steps)
            return sample_ddim(model, noise, timesteps, schedule=schedule, progress=progress)
        finally:
            net.reference_control.clear()


def sample_long(net, *, reference_latent: torch.Tensor, face_embedding: torch.Tensor, audio_windows: torch.Tensor,
                face_mask_image: torch.Tensor | None = None, masks: RegionMasks | None = None, clip_frames: int = 16,
                motion_frames: int = 2, steps: int = 40, guidance: float = 3.5,
                motion_scale: tuple[float, float, float] | None = (1.0, 1.0, 1.0), seed: int = 0,
                schedule: NoiseSchedule = NoiseSchedule(), use_msm: bool = True,
                reencode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                progress: Progress | None = None) -> torch.Tensor:
    """Latents of a whole song: consecutive clips, each conditioned on the last frames of the previous one.

    reference_latent: (1, C, h, w) portrait latent; face_embedding: (1, D); audio_windows: (1, N, seq_len,
    blocks, channels) for N video frames; masks: region masks for one clip (1 * clip_frames frames; the
    official code uses the portrait's masks for every frame); clip_frames: frames per clip (16);
    motion_frames: previous frames fed through the reference UNet (2; the first clip uses the portrait);
    seed: noise seed (clip k draws from a generator seeded seed + k); use_msm: False skips the MSM;
    reencode: maps the motion-frame latents (M, C, h, w) to the latents the next clip reads; the official
    pipeline decodes them to pixels and encodes them again with the VAE (give that round trip here), None
    passes the latents on as they are; progress: (done, total) over all clips x steps, may raise to stop.
    Returns (1, C, N, h, w).
    """
    if reference_latent.dim() != 4 or reference_latent.shape[0] != 1:
        raise ValueError(f"sample_long: reference_latent must be (1, C, h, w), got {tuple(reference_latent.shape)}")
    total = audio_windows.shape[1]
    if total < 1:
        raise ValueError("sample_long: audio_windows holds no frames; give at least one video frame of audio")
    if clip_frames + motion_frames > net.config.motion_max_len:
        raise ValueError(f"sample_long: clip_frames + motion_frames = {clip_frames + motion_frames} exceeds the "
                         f"motion modules' position table ({net.config.motion_max_len})")
    clips = -(-total // clip_frames)
    pad = clips * clip_frames - total
    if pad:  # repeat the last window so every clip is full, trimmed at the end
        audio_windows = torch.cat([audio_windows, audio_windows[:, -1:].expand(-1, pad, *audio_windows.shape[2:])], 1)
    channels, height, width = reference_latent.shape[1:]
    history = reference_latent[:, :, None].expand(-1, -1, motion_frames, -1, -1)
    outputs = []
    for clip in range(clips):
        generator = torch.Generator(device="cpu").manual_seed(seed + clip)
        noise = torch.randn(1, channels, clip_frames, height, width, generator=generator).to(reference_latent)
        references = torch.cat([reference_latent[:, None], history.transpose(1, 2)], dim=1)

        def clip_progress(done: int, _total: int, clip: int = clip) -> None:
            if progress is not None:
                progress(clip * steps + done, clips * steps)

        latents = sample_clip(net, noise, reference_latents=references, face_embedding=face_embedding,
                              audio_windows=audio_windows[:, clip * clip_frames:(clip + 1) * clip_frames],
                              face_mask_image=face_mask_image, masks=masks, steps=steps, guidance=guidance,
                              motion_scale=motion_scale, schedule=schedule, use_msm=use_msm,
                              progress=clip_progress)
        outputs.append(latents)
        if motion_frames:
            history = latents[:, :, -motion_frames:]
            if reencode is not None and clip + 1 < clips:
                history = reencode(history[0].transpose(0, 1)).to(history).transpose(0, 1)[None]
    return torch.cat(outputs, dim=2)[:, :, :total]
