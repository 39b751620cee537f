"""DDIM sampling of the SINGER/Hallo denoising network (schedule and DDIM step from ops/noise_schedule.py:
zero-terminal-SNR linear betas, v-prediction, trailing timesteps stepped as diffusers does), classifier-free
guidance, 16-frame clips chained by 2 motion frames."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..ops.noise_schedule import NoiseSchedule, sample_ddim
from ..progress import Progress
from .audio_modules import RegionMasks

logger = logging.getLogger(__name__)


def _doubled(masks: RegionMasks | None) -> RegionMasks | None:
    if masks is None:
        return None
    return RegionMasks(*(tuple(torch.cat([level, level]) for level in field)
                         for field in (masks.full, masks.face, masks.lip)))


def clip_conditions(net, noise: torch.Tensor, face_embedding: torch.Tensor, audio_windows: torch.Tensor,
                    face_mask_image: torch.Tensor | None, masks: RegionMasks | None, guided: bool, use_msm: bool):
    """(image tokens, audio tokens, face-locator features, region masks) of one clip; with `guided` each is
    [uncond, cond] along the batch (zero face embedding, zero audio tokens, zero locator features)."""
    frames = noise.shape[2]
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
    return tokens, audio, features, masks


def sample_clip(net, noise: torch.Tensor, *, reference_latents: torch.Tensor, face_embedding: torch.Tensor,
                audio_windows: torch.Tensor, face_mask_image: torch.Tensor | None = None,
                masks: RegionMasks | None = None, steps: int = 40, guidance: float = 3.5,
                motion_scale: tuple[float, float, float] | None = (1.0, 1.0, 1.0),
                schedule: NoiseSchedule | None = None, use_msm: bool = True,
                progress: Progress | None = None) -> torch.Tensor:
    """Denoise one clip with the SINGER network, as the official pipeline does.

    net: SingerNet; noise: (B, C, F, h, w) initial latents (also what the MSM reads);
    reference_latents: (B, S, C, h, w) reference image latent first, then the motion-frame latents;
    face_embedding: (B, D) face identity; audio_windows: (B, F, seq_len, blocks, channels);
    face_mask_image: (B, 3, 8h, 8w) face-region image; masks: full/face/lip region masks;
    schedule: the training noise schedule (default Hallo's, NoiseSchedule());
    guidance: classifier-free scale (the unconditional branch has zero face embedding, zero face-locator
    features, zero audio tokens and no reference attention); motion_scale: pose/face/lip weights.
    Returns (B, C, F, h, w) clean latents (scale by 1 / 0.18215 before the SD VAE decoder).
    """
    batch, _, frames = noise.shape[:3]
    guided = guidance != 1.0
    with torch.no_grad():
        # 1. conditions: cond and (for guidance) uncond halves
        tokens, audio, features, masks = clip_conditions(net, noise, face_embedding, audio_windows, face_mask_image,
                                                         masks, guided, use_msm)
        if guided:
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

            schedule = schedule or NoiseSchedule()
            return sample_ddim(model, noise, schedule.timesteps(steps), schedule=schedule, callback=progress)
        finally:
            net.reference_control.clear()


def check_long_inputs(who: str, audio_name: str, net, reference_latent: torch.Tensor, frames: int,
                      clip_frames: int, motion_frames: int) -> None:
    """The checks of a song-length run (`sample_long`, `clip_loop.iter_clips`): one (1, C, h, w) reference latent,
    at least one frame of audio, and clip + motion frames within the motion modules' position table."""
    if reference_latent.dim() != 4 or reference_latent.shape[0] != 1:
        raise ValueError(f"{who}: reference_latent must be (1, C, h, w), got {tuple(reference_latent.shape)}")
    if frames < 1:
        raise ValueError(f"{who}: {audio_name} holds no frames; give at least one video frame of audio")
    if clip_frames + motion_frames > net.config.motion_max_len:
        raise ValueError(f"{who}: clip_frames + motion_frames = {clip_frames + motion_frames} exceeds the "
                         f"motion modules' position table ({net.config.motion_max_len})")


def sample_long(net, *, reference_latent: torch.Tensor, face_embedding: torch.Tensor, audio_windows: torch.Tensor,
                face_mask_image: torch.Tensor | None = None, masks: RegionMasks | None = None, clip_frames: int = 16,
                motion_frames: int = 2, steps: int = 40, guidance: float = 3.5,
                motion_scale: tuple[float, float, float] | None = (1.0, 1.0, 1.0), seed: int = 0,
                schedule: NoiseSchedule | None = None, use_msm: bool = True,
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
    total = audio_windows.shape[1]
    check_long_inputs("sample_long", "audio_windows", net, reference_latent, total, clip_frames, motion_frames)
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
