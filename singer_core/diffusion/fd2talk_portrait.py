"""FD2Talk stage 2 at inference (Sec. 3.3, Fig. 3): a portrait and a motion (expression + pose per frame) -> the
frames of the talking / singing video. The portrait's latent x = E(I) conditions every frame's denoising (DDIM,
eq. 5, x0 prediction, through ops/noise_schedule.py); each denoised latent J_0 is decoded with the reference
latent as D([x, J_0]).

A trained folder (the ``frames`` task's ``final``) holds ``unet/``, ``autoencoder/`` and ``fd2talk_frames.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from ..face.motion_types import SingerMotion
from ..io.image import from_model
from ..ops.noise_schedule import NoiseSchedule
from ..progress import Progress
from .fd2talk_decoder import FrameAutoencoder
from .fd2talk_frames import MOTION_DIM, FrameUNet, sample_frame_latents

logger = logging.getLogger(__name__)

FRAME_MODEL_INFO = "fd2talk_frames.json"


@dataclasses.dataclass
class FrameModel:
    """A loaded FD2Talk frame model: the UNet, the frame autoencoder, the training schedule, the frame size."""

    unet: FrameUNet
    autoencoder: FrameAutoencoder
    schedule: NoiseSchedule
    image_size: int
    source: str = ""


def load_frame_model(folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                     dtype: torch.dtype | None = None) -> FrameModel:
    """Load the ``frames`` task's export (unet/, autoencoder/, fd2talk_frames.json), naming what is missing."""
    folder = Path(folder)
    info_path = folder / FRAME_MODEL_INFO
    missing = [name for name in ("unet", "autoencoder") if not (folder / name / "config.json").is_file()]
    if not folder.is_dir() or missing or not info_path.is_file():
        raise FileNotFoundError(f"load_frame_model: '{folder}' is not an FD2Talk frame model folder (needs unet/, "
                                f"autoencoder/ and {FRAME_MODEL_INFO}; missing: {missing or [FRAME_MODEL_INFO]}); "
                                "train one with `python -m singer_core.train frames` and give its final/ folder")
    info = json.loads(info_path.read_text())
    schedule = NoiseSchedule.from_json(json.dumps(info["schedule"]))
    unet = FrameUNet.from_pretrained(folder / "unet", device=device, dtype=dtype)
    autoencoder = FrameAutoencoder.from_pretrained(folder / "autoencoder", device=device, dtype=dtype)
    return FrameModel(unet, autoencoder, schedule, int(info["image_size"]), str(folder))


def portrait_tensor(image: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> (1, 3, size, size) in [-1, 1]: the centred square, resized (antialiased)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"animate_portrait: the portrait must be (H, W, 3) RGB, got {tuple(image.shape)}")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side].permute(2, 0, 1)[None].float()
    if side != size:
        square = torch.nn.functional.interpolate(square, size=(size, size), mode="bilinear", antialias=True,
                                                 align_corners=False)
    return square.clamp(0, 1) * 2 - 1


def motion_rows(motion: SingerMotion | torch.Tensor) -> torch.Tensor:
    """(F, 70) [exp 64, angle 3, trans 3] of a SingerMotion (or such a tensor, checked)."""
    rows = torch.cat([motion.exp, motion.angle, motion.trans], 1) if isinstance(motion, SingerMotion) else motion
    if rows.ndim != 2 or rows.shape[1] != MOTION_DIM or rows.shape[0] < 1:
        raise ValueError(f"animate_portrait: motion must be (F, {MOTION_DIM}) [exp, angle, trans] with F >= 1, got "
                         f"{tuple(rows.shape)}")
    return rows.float()


@torch.no_grad()
def animate_portrait(model: FrameModel, portrait: torch.Tensor, motion: SingerMotion | torch.Tensor, *,
                     steps: int = 50, eta: float = 0.0, seed: int = 0, frame_batch: int = 16,
                     progress: Progress | None = None) -> torch.Tensor:
    """The frames of the portrait moving with `motion`.

    Args:
        model: a FrameModel.
        portrait: (H, W, 3) float RGB in [0, 1] (centre-cropped to a square and resized to model.image_size).
        motion: SingerMotion or (F, 70) coefficients.
        steps: DDIM steps (the paper: 50).
        eta: DDIM eta.
        seed: noise seed (the frames' initial noise is drawn in frame order from one generator, so the result
            does not depend on frame_batch for eta = 0).
        frame_batch: frames denoised and decoded per call (memory bound; any song length).
        progress: progress(done, total) over frames x steps; may raise to stop.

    Returns:
        (F, S, S, 3) float32 CPU frames in [0, 1].
    """
    rows = motion_rows(motion)
    frames, size = rows.shape[0], model.image_size
    param = next(model.unet.parameters())
    image = portrait_tensor(portrait.cpu(), size).to(device=param.device, dtype=param.dtype)
    # 1. the reference latent x = E(I), once
    reference = model.autoencoder.encode(image.to(next(model.autoencoder.parameters()).dtype)).to(param.dtype)
    generator = torch.Generator().manual_seed(int(seed))
    out = torch.empty(frames, size, size, 3)
    for start in range(0, frames, frame_batch):
        stop = min(frames, start + frame_batch)

        def report(done: int, total: int, start: int = start, stop: int = stop) -> None:
            if progress is not None:
                progress(start * steps + (stop - start) * done * steps // total, frames * steps)

        # 2. denoise the frames' latents J_0 (eq. 5), 3. decode D([x, J_0])
        latents = sample_frame_latents(model.unet, rows[start:stop], reference, schedule=model.schedule, steps=steps,
                                       eta=eta, seed=generator, frame_batch=frame_batch, progress=report)
        decoded = model.autoencoder.decode(reference.expand(stop - start, -1, -1, -1).to(latents), latents)
        out[start:stop] = from_model(decoded)
    return out
