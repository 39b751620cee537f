"""A trained per-subject audio NeRF (DAMC §2.4, ER-NeRF's head network): the tri-plane hash-grid radiance field
conditioned on the CSFM-fused audio code f_a (DAMC §2.2, eqs. 1-4), its occupancy grid, background and camera
intrinsics, saved as one ``save_pretrained`` folder (the nerf task's ``out/final``) and rendered frame by frame
(volume rendering, DAMC eq. 6).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..audio.encoders import MEL_ENCODER_NAME
from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig
from ..ops.volume import OccupancyGrid, PinholeCamera
from .csfm import CsfmConfig, DamcAudioFusion, damc_audio_codes
from .field import AudioConditionedField, AudioFieldConfig
from .renderer import render_rays

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class NerfSubjectConfig(JsonConfig):
    """What a trained subject needs at inference (nested configs as JSON strings)."""

    field: str = "{}"  # AudioFieldConfig JSON
    fusion: str = "{}"  # CsfmConfig JSON
    mel_projection: int = 0  # > 0: dynamic input = mel windows (16 x 80) through a Linear to this width
    dynamic_encoder: str | None = None  # the frozen E_d folder the dynamic features came from (None: mel projection)
    content_encoder: str = MEL_ENCODER_NAME  # encoder name of the content features the model was trained on
    fl_x: float = 1.0  # focal length x (pixels)
    fl_y: float = 1.0  # focal length y (pixels)
    cx: float = 0.5  # principal point x (pixels from the corner)
    cy: float = 0.5  # principal point y
    width: int = 1  # training image width
    height: int = 1  # training image height
    convention: str = "opengl"  # camera convention of the poses
    num_samples: int = 64  # samples per ray when rendering
    occupancy_resolution: int = 128  # occupancy grid cells per axis
    occupancy_threshold: float = 10.0  # its density threshold
    train_frames: int = 1  # training frames (latent codes)


class NerfSubjectModel(nn.Module, PretrainedMixin):
    """A trained subject: radiance field + audio fusion (+ mel projection) + occupancy grid + background
    + camera intrinsics, in one save_pretrained folder.

    Args:
        config: NerfSubjectConfig.
    Buffers: background (H, W, 3) colour behind the head; occupancy.density / occupied (res^3).
    """

    config_class = NerfSubjectConfig

    def __init__(self, config: NerfSubjectConfig):
        super().__init__()
        self.config = config
        self.field = AudioConditionedField(AudioFieldConfig.from_json(config.field))
        self.fusion = DamcAudioFusion(CsfmConfig.from_json(config.fusion))
        cfg = self.fusion.config
        self.mel_projection = nn.Linear(16 * 80, cfg.dynamic_dim) if config.mel_projection else None
        self.occupancy = OccupancyGrid(self.field.aabb, config.occupancy_resolution, config.occupancy_threshold)
        self.register_buffer("background", torch.ones(config.height, config.width, 3))

    # ---- audio
    def dynamic_input(self, dynamic: torch.Tensor) -> torch.Tensor:
        """(..., 16, 80) mel windows through the projection, or E_d features (..., Dd) unchanged."""
        if self.mel_projection is None:
            return dynamic
        return self.mel_projection(dynamic.flatten(-2))

    def window_codes(self, content: torch.Tensor | None, dynamic: torch.Tensor | None) -> torch.Tensor:
        """f_a of K frames from their windows: content (K, W, Rc, Dc), dynamic (K, W, 16, 80) or (K, W, Dd)."""
        fusion = self.fusion
        return fusion(content if fusion.uses_content else None,
                      self.dynamic_input(dynamic) if fusion.uses_dynamic else None)

    @torch.no_grad()
    def audio_codes(self, content: torch.Tensor | None, dynamic: torch.Tensor | None, *,
                    batch_size: int = 256) -> torch.Tensor:
        """f_a for every frame of a song: content (F, Rc, Dc), dynamic (F, 16, 80) mel or (F, Dd) E_d features
        -> (F, audio_dim)."""
        if self.fusion.uses_dynamic and dynamic is not None:
            param = next(self.parameters())
            dynamic = self.dynamic_input(dynamic.to(param.device, param.dtype))
        return damc_audio_codes(self.fusion, content=content if self.fusion.uses_content else None,
                                dynamic=dynamic if self.fusion.uses_dynamic else None, batch_size=batch_size)

    # ---- rendering
    def camera(self, pose: torch.Tensor) -> PinholeCamera:
        c = self.config
        return PinholeCamera(pose, c.fl_x, c.fl_y, c.cx, c.cy, c.width, c.height, c.convention)

    @torch.no_grad()
    def render_frame(self, audio_code: torch.Tensor, pose: torch.Tensor, frame_index: int | None = None, *,
                     chunk: int = 8192, progress=None) -> torch.Tensor:
        """One frame at the training size.

        Args:
            audio_code: (audio_dim,) f_a of the frame (audio_codes); pose: (4, 4) camera-to-canonical.
            frame_index: training-frame latent code to use, or None (zero code: unseen frames).
            chunk: rays per call; progress(done_rays, total_rays) may raise to stop.
        Returns:
            (H, W, 3) float in 0..1 (composited over the stored background).
        """
        c = self.config
        if self.field.config.latent_dim == 0:
            frame_index = None
        background = self.background.reshape(-1, 3)
        pieces = []
        camera = self.camera(pose.to(self.background.device, torch.float32))
        origins, directions = camera.rays(device=self.background.device)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        total = origins.shape[0]
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            out = render_rays(self.field, origins[start:stop], directions[start:stop], audio_code, frame_index,
                              num_samples=c.num_samples, occupancy=self.occupancy,
                              background=background[start:stop])
            pieces.append(out["rgb"])
            if progress is not None:
                progress(stop, total)
        return torch.cat(pieces).reshape(c.height, c.width, 3).clamp(0, 1)

    # ---- training forward (the loop's DDP sees this call)
    def forward(self, batch: Mapping) -> torch.Tensor:
        """Render the rays of one training batch -> rgb (K, R, 3).

        batch (the nerf task's NerfRays.batch): origins, directions (K, R, 3); background (K, R, 3); content
        (K, W, Rc, Dc) and dynamic (K, W, 16, 80) or (K, W, Dd) windows; frame_index (K,); noise_seed (int) of the
        stratified samples; occupancy_generator: a torch.Generator on the steps that refresh the occupancy grid
        from the first frame's code, else None.
        """
        codes = self.window_codes(batch.get("content"), batch.get("dynamic"))               # (K, A)
        if batch.get("occupancy_generator") is not None:  # the steps that refresh the occupancy grid
            code = codes[0].detach()
            self.occupancy.update(lambda points: self.field.density(points, code)[0],
                                  generator=batch["occupancy_generator"])
        device = batch["origins"].device
        generator = torch.Generator(device=device)
        generator.manual_seed(int(batch["noise_seed"]))
        out = []
        for k in range(codes.shape[0]):
            frame = int(batch["frame_index"][k]) if self.field.config.latent_dim else None
            result = render_rays(self.field, batch["origins"][k], batch["directions"][k], codes[k], frame,
                                 num_samples=self.config.num_samples, occupancy=self.occupancy, perturb=True,
                                 generator=generator, background=batch["background"][k])
            out.append(result["rgb"])
        return torch.stack(out)


def load_subject_model(folder: str | Path, device="cpu") -> NerfSubjectModel:
    """A trained subject (out/final of the nerf task)."""
    return NerfSubjectModel.from_pretrained(folder, device=device)


def held_out_codes(model: NerfSubjectModel, subject) -> torch.Tensor:
    """f_a (F, audio_dim) of every frame of the subject's video (index with aud_ids)."""
    dynamic = subject.dynamic
    if model.config.dynamic_encoder and model.mel_projection is None:
        from .dynamic_sync import DynamicSyncEncoder

        encoder = DynamicSyncEncoder.from_pretrained(model.config.dynamic_encoder)
        dynamic = encoder.encode_windows(subject.dynamic)
    return model.audio_codes(subject.content, dynamic)


__all__ = ["NerfSubjectConfig", "NerfSubjectModel", "held_out_codes", "load_subject_model"]
