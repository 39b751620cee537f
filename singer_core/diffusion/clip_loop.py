"""Clip-by-clip SINGER sampling: one 16-frame clip at a time, so memory stays flat in song length, with the
official schedule (exactly `sampling.sample_clip`, chained as `sampling.sample_long`) or with cheaper
settings per second of video:

- `cache_reference`: the reference image's attention banks are written once per video; per clip the
  reference UNet runs on the motion frames only (its images do not interact: GroupNorm and attention are
  per image, so the bank rows are the same as from the joint pass);
- `solver` "dpmpp" / "unipc": diffusers' DPM-Solver++ (2M) or UniPC multistep schedulers on the same
  zero-terminal-SNR linear-beta v-prediction schedule with trailing spacing, in fewer steps;
- `guided_share`: classifier-free guidance (the [uncond, cond] batch, one batched UNet pass) only on
  the first share of the steps, the conditional branch alone after (half the UNet work per step);
- motion frames passed on as latents (`reencode=None`) instead of the VAE decode + encode round trip.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator

import torch

from ..io.config import JsonConfig
from ..ops.noise_schedule import NoiseSchedule, sample_ddim
from ..progress import Progress
from .audio_modules import RegionMasks
from .sampling import check_long_inputs, clip_conditions, sample_clip

logger = logging.getLogger(__name__)

SOLVERS = ("ddim", "dpmpp", "unipc")
DEFAULT_SCHEDULE = NoiseSchedule()


@dataclasses.dataclass(frozen=True)
class SamplerPlan(JsonConfig):
    """How each clip is denoised. The defaults are the official schedule (`SamplerPlan.official()`)."""

    # "ddim" (the official sampler), "dpmpp" (DPM-Solver++ 2M) or "unipc" (UniPC, bh2)
    solver: str = "ddim"
    # denoising steps per clip
    steps: int = 40
    # classifier-free guidance scale (1 = conditional branch only)
    guidance: float = 3.5
    # share of the steps, from the first, that use guidance (1 = all, as the official loop)
    guided_share: float = 1.0
    # write the reference image's banks once per video; per clip run the reference UNet on motion frames only
    cache_reference: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"SamplerPlan: solver must be one of {SOLVERS}, got {self.solver!r}")
        if not (isinstance(self.steps, int) and 1 <= self.steps <= 1000):
            raise ValueError(f"SamplerPlan: steps must be in 1..1000, got {self.steps!r}")
        if self.guidance < 1.0 or not 0.0 <= self.guided_share <= 1.0:
            raise ValueError(f"SamplerPlan: need guidance >= 1 and guided_share in [0, 1], got {self.guidance!r}, "
                             f"{self.guided_share!r}")

    @classmethod
    def official(cls) -> SamplerPlan:
        """The official schedule: 40 DDIM steps, cfg 3.5 on every step, reference UNet per clip."""
        return cls()

    @classmethod
    def fast(cls) -> SamplerPlan:
        """Our default for speed: DPM-Solver++ 16 steps (guidance on every step), reference cached: 0.40x the
        official UNet work at 43 dB PSNR from the 40-step official frames of a trained tiny stack. Guidance on
        half the steps would save another quarter but moved the frames by 22 dB PSNR / 16 mouth levels there
        (benchmarks/singer_cost.py), so it stays opt-in (`guided_share`)."""
        return cls(solver="dpmpp", steps=16, cache_reference=True)

    @property
    def is_official(self) -> bool:
        return self.solver == "ddim" and self.guided_share == 1.0 and not self.cache_reference

    def guided_steps(self) -> int:
        """Steps (the first ones) that run the [uncond, cond] batch."""
        return 0 if self.guidance == 1.0 else math.ceil(self.guided_share * self.steps - 1e-9)


def clip_windows(features: torch.Tensor, start: int, end: int, radius: int) -> torch.Tensor:
    """(end - start, 2 radius + 1, ...) audio windows of frames start..end-1 of (N, ...) features.

    Frames past the song repeat the last frame's window (what `sample_long`'s padding gives); within the
    song each window is frames i - radius .. i + radius clamped to the song, as `frame_windows`.
    """
    total = features.shape[0]
    centres = torch.arange(start, end).clamp(max=total - 1)
    index = (centres[:, None] + torch.arange(-radius, radius + 1)[None]).clamp(0, total - 1)
    return features[index.to(features.device)]


def make_scheduler(solver: str, schedule: NoiseSchedule):
    """A diffusers multistep scheduler on `schedule` (zero-SNR rescale, trailing spacing, ends at sigma 0)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    kwargs = dict(num_train_timesteps=schedule.train_steps, beta_start=schedule.beta_start, beta_end=schedule.beta_end,
                  beta_schedule=schedule.beta_schedule, prediction_type=schedule.prediction,
                  rescale_betas_zero_snr=schedule.zero_snr, timestep_spacing="trailing", final_sigmas_type="zero")
    if solver == "dpmpp":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **kwargs)
    if solver == "unipc":
        return UniPCMultistepScheduler(solver_order=2, **kwargs)
    raise ValueError(f"make_scheduler: solver must be 'dpmpp' or 'unipc', got {solver!r}")


class ReferenceBanks:
    """Reference-UNet bank rows of one video: the reference image's rows once, the motion frames' per clip.

    net: SingerNet; reference_latent: (B, C, h, w); tokens: (G, K, D) image tokens of the G = B or 2B batch
    rows ([uncond, cond] under guidance). Row r of the official (G*S)-image batch [ref, m1.., ref, m1..]
    reads token r % G in "official-as-run" and r // S in "clean" (see `SingerNet.write_reference`).
    """

    def __init__(self, net, reference_latent: torch.Tensor, tokens: torch.Tensor, motion_frames: int) -> None:
        self.net, self.tokens, self.images = net, tokens, 1 + motion_frames
        self.groups = tokens.shape[0]
        self.batch = reference_latent.shape[0]
        rows = [g * self.images for g in range(self.groups)]
        latents = reference_latent.repeat(self.groups // self.batch, 1, 1, 1)
        self.reference_rows = self._run(latents, rows)

    def _token_index(self, row: int) -> int:
        return row % self.groups if self.net.forward_mode == "official-as-run" else row // self.images

    def _run(self, latents: torch.Tensor, rows: list[int]) -> list[torch.Tensor]:
        context = self.tokens[[self._token_index(r) for r in rows]]
        control = self.net.reference_control
        with control.write():
            self.net.reference_unet(latents, torch.zeros(latents.shape[0], device=latents.device),
                                    encoder_hidden_states=context, return_dict=False)
        return [writer.bank[0] for writer, _ in control.pairs]

    def write(self, motion_latents: torch.Tensor) -> None:
        """Fill the writers' banks with [ref, motion...] per group; motion_latents: (B, M, C, h, w)."""
        motion = self.images - 1
        control = self.net.reference_control
        if motion:
            flat = motion_latents.repeat(self.groups // self.batch, 1, 1, 1, 1).flatten(0, 1)
            rows = [g * self.images + 1 + m for g in range(self.groups) for m in range(motion)]
            motion_rows = self._run(flat, rows)
        for index, (writer, _) in enumerate(control.pairs):
            reference = self.reference_rows[index]
            if motion:
                moving = motion_rows[index].view(self.groups, motion, *reference.shape[1:])
                entry = torch.cat([reference[:, None], moving], dim=1).flatten(0, 1)
            else:
                entry = reference
            writer.bank = [entry]


def _cond_half(tensor, batch):
    return None if tensor is None else tensor[-batch:]


def sample_clip_plan(net, noise: torch.Tensor, *, reference_latents: torch.Tensor, face_embedding: torch.Tensor,
                     audio_windows: torch.Tensor, face_mask_image: torch.Tensor | None = None,
                     masks: RegionMasks | None = None, plan: SamplerPlan = SamplerPlan(),
                     motion_scale: tuple[float, float, float] | None = (1.0, 1.0, 1.0),
                     schedule: NoiseSchedule = DEFAULT_SCHEDULE, use_msm: bool = True,
                     banks: ReferenceBanks | None = None, progress: Progress | None = None) -> torch.Tensor:
    """Denoise one clip with `plan` (shapes as `sampling.sample_clip`).

    The official plan without `banks` is `sample_clip` itself. banks: a `ReferenceBanks` of this video
    (needs `plan.cache_reference`); reference_latents[:, 1:] are then the clip's motion frames.
    Returns (B, C, F, h, w) clean latents.
    """
    if plan.is_official and banks is None:
        return sample_clip(net, noise, reference_latents=reference_latents, face_embedding=face_embedding,
                           audio_windows=audio_windows, face_mask_image=face_mask_image, masks=masks,
                           steps=plan.steps, guidance=plan.guidance, motion_scale=motion_scale, schedule=schedule,
                           use_msm=use_msm, progress=progress)
    batch, _, frames = noise.shape[:3]
    guided_steps = plan.guided_steps()
    guided = guided_steps > 0
    with torch.no_grad():
        tokens, audio, features, masks2 = clip_conditions(net, noise, face_embedding, audio_windows, face_mask_image,
                                                      masks, guided, use_msm)
        # 1. banks: written once (or from the cache), full [uncond, cond] rows, cond rows kept for later steps
        if banks is not None:
            banks.write(reference_latents[:, 1:])
        else:
            net.write_reference(torch.cat([reference_latents] * (2 if guided else 1)), tokens)
        full_banks = [writer.bank[0] for writer, _ in net.reference_control.pairs]
        images = reference_latents.shape[1]
        state = {"guided": guided}
        net.reference_control.read(frames, torch.tensor([False] * batch + [True] * batch) if guided else None)

        def drop_guidance() -> None:
            for (writer, _), entry in zip(net.reference_control.pairs, full_banks, strict=True):
                writer.bank = [entry[-batch * images:]]
            net.reference_control.read(frames, None)
            state["guided"] = False

        step = {"index": 0}

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if state["guided"] and step["index"] >= guided_steps:
                drop_guidance()
            step["index"] += 1
            if not state["guided"]:
                cond_masks = masks if not guided or masks2 is None else RegionMasks(
                    *(tuple(level[-batch * frames:] for level in field) for field in (masks2.full, masks2.face,
                                                                                      masks2.lip)))
                return net.denoising_unet(x, t, _cond_half(tokens, batch), _cond_half(audio, batch),
                                          mask_cond_fea=_cond_half(features, batch), masks=cond_masks,
                                          motion_scale=motion_scale)
            out = net.denoising_unet(torch.cat([x, x]), t, tokens, audio, mask_cond_fea=features, masks=masks2,
                                     motion_scale=motion_scale)
            uncond, cond = out.chunk(2)
            return uncond + plan.guidance * (cond - uncond)

        try:
            if plan.solver == "ddim":
                return sample_ddim(model, noise, schedule.timesteps(plan.steps), schedule=schedule, callback=progress)
            scheduler = make_scheduler(plan.solver, schedule)
            scheduler.set_timesteps(plan.steps, device=noise.device)
            x = noise * scheduler.init_noise_sigma
            for index, t in enumerate(scheduler.timesteps):
                output = model(scheduler.scale_model_input(x, t), t)
                x = scheduler.step(output.to(x.dtype), t, x, return_dict=False)[0]
                if progress is not None:
                    progress(index + 1, plan.steps)
            return x
        finally:
            net.reference_control.clear()


def iter_clips(net, *, reference_latent: torch.Tensor, face_embedding: torch.Tensor,
               audio_features: torch.Tensor, window_radius: int = 2, face_mask_image: torch.Tensor | None = None,
               masks: RegionMasks | None = None, clip_frames: int = 16, motion_frames: int = 2,
               plan: SamplerPlan = SamplerPlan(), motion_scale: tuple[float, float, float] | None = (1.0, 1.0, 1.0),
               seed: int = 0, schedule: NoiseSchedule = DEFAULT_SCHEDULE, use_msm: bool = True,
               reencode: Callable[[torch.Tensor], torch.Tensor] | None = None,
               progress: Progress | None = None) -> Iterator[torch.Tensor]:
    """Yield the clean latents of a song clip by clip, (1, C, f, h, w) with f = clip_frames (less for the last).

    audio_features: (N, rows, width) per-frame features of the whole song (N video frames); each clip's
    windows (radius `window_radius`) are cut from them when the clip runs. With the official plan the
    clips equal `sampling.sample_long`'s (same seeds seed + k, motion-frame chaining, padding of the last
    clip); see there for the other arguments. Only the current clip and the motion frames are held.
    """
    total = audio_features.shape[0]
    check_long_inputs("iter_clips", "audio_features", net, reference_latent, total, clip_frames, motion_frames)
    clips = -(-total // clip_frames)
    channels, height, width = reference_latent.shape[1:]
    history = reference_latent[:, :, None].expand(-1, -1, motion_frames, -1, -1)
    banks = None
    if plan.cache_reference:
        with torch.no_grad():
            tokens = net.imageproj(face_embedding)
            if plan.guided_steps() > 0:
                tokens = torch.cat([net.imageproj(torch.zeros_like(face_embedding)), tokens])
            banks = ReferenceBanks(net, reference_latent, tokens, motion_frames)
        net.reference_control.clear()
    for clip in range(clips):
        generator = torch.Generator(device="cpu").manual_seed(seed + clip)
        noise = torch.randn(1, channels, clip_frames, height, width, generator=generator).to(reference_latent)
        references = torch.cat([reference_latent[:, None], history.transpose(1, 2)], dim=1)
        start = clip * clip_frames
        windows = clip_windows(audio_features, start, start + clip_frames, window_radius)[None]
        windows = windows.to(device=reference_latent.device, dtype=reference_latent.dtype)

        def clip_progress(done: int, _total: int, clip: int = clip) -> None:
            if progress is not None:
                progress(clip * plan.steps + done, clips * plan.steps)

        latents = sample_clip_plan(net, noise, reference_latents=references, face_embedding=face_embedding,
                                   audio_windows=windows, face_mask_image=face_mask_image, masks=masks, plan=plan,
                                   motion_scale=motion_scale, schedule=schedule, use_msm=use_msm, banks=banks,
                                   progress=clip_progress)
        if motion_frames:
            history = latents[:, :, -motion_frames:]
            if reencode is not None and clip + 1 < clips:
                history = reencode(history[0].transpose(0, 1)).to(history).transpose(0, 1)[None]
        yield latents[:, :, :total - start]


__all__ = ["SOLVERS", "ReferenceBanks", "SamplerPlan", "clip_windows", "iter_clips", "make_scheduler",
           "sample_clip_plan"]
