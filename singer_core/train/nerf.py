"""The ``nerf`` training task: per-subject audio-driven NeRF of DAMC §2.4 / §3 (ER-NeRF's head network), with
the CSFM fusion (DAMC §2.2) trained jointly and the Dynamic-Sync Encoder frozen.

Stage 1 (steps < fine_start): L_coarse = mean_i ||C(i) - C_hat(i)||^2 over `num_rays` random rays of
`batch_size` random training frames. Stage 2: L_fine = MSE + lambda * LPIPS(P, P_hat) over one square patch
per frame (`patch_size`, centred near the mouth when the subject has landmarks), LPIPS only when its weight
files are configured. The occupancy grid (Instant-NGP) is refreshed every `occupancy_every` steps from
`occupancy_start` on; it is a buffer of the trained module, so checkpoints carry it and resume is exact.

Audio per frame: f_a = CSFM(content window, dynamic window) (DamcAudioFusion, ``fusion_mode`` picks the
Table 3 ablation). The dynamic branch is the frozen Dynamic-Sync Encoder E_d (``dynamic_encoder``: a folder
of the dynamic-sync task) run once on the mel windows; without one (tiny preset) the mel windows go through a
small trainable linear projection instead (NOT E_d: a stand-in so the pipeline runs without a trained
encoder). The content branch reads the subject's content features (HuBERT, or the mel again).

Learning rates: the loop has one lr; the hash tables learn ``grid_lr_scale`` times faster (ER-NeRF: 1e-2 for
the grids, 1e-3 for the networks) through a scale reparametrisation table = grid_lr_scale * theta (Adam's
step is invariant to gradient scale, so theta moving by ~lr moves the table by ~grid_lr_scale * lr).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..nerf.csfm import CsfmConfig, temporal_windows
from ..nerf.field import AudioFieldConfig
from ..nerf.subject import NerfSubjectConfig, NerfSubjectModel
from ..ops.volume import pixel_rays
from .config import LoopConfig
from .loop import EpochSampler, TrainParts, step_generator

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class NerfTrainConfig(LoopConfig):
    """A per-subject NeRF run: loop settings (batch_size = frames per step), field, fusion, rendering, stages."""

    # subject generated into the cache when no --data is given (SynthSinger)
    subject_identity: int = 0  # SynthSinger identity of the generated subject
    subject_seconds: float = 4.0  # its length in seconds
    subject_size: int = 64  # its frame size in pixels
    subject_seed: int = 0  # its SynthSinger seed
    # field (AudioFieldConfig; ER-NeRF defaults in the paper preset)
    num_levels: int = 12  # hash-grid levels per plane (ER-NeRF 12; DAMC reports L = 14)
    log2_table_size: int = 14  # per-level table size 2**log2_table_size
    base_resolution: int = 64  # coarsest grid resolution
    max_resolution: float = 512.0  # finest grid resolution
    hidden_dim: int = 64  # sigma MLP width
    geo_feat_dim: int = 64  # geometry features passed to the colour MLP
    color_hidden_dim: int = 64  # colour MLP width
    latent_dim: int = 4  # per-frame latent code (ER-NeRF 4; 0 = none; held-out frames use a zero code)
    audio_dim: int = 64  # f_a width (DAMC: 64 best)
    # audio fusion (CsfmConfig)
    fusion_mode: str = "csfm"  # "content" | "dynamic" | "concat" | "cross" | "csfm" (DAMC Table 3)
    fusion_width: int = 128  # CSFM width after the projections
    fusion_heads: int = 4  # attention heads
    fusion_window: int = 8  # frames smoothed per code (ER-NeRF: 8)
    dynamic_encoder: str | None = None  # folder of a trained DynamicSyncEncoder (frozen); None = mel projection
    mel_projection_dim: int = 64  # width of the trainable mel projection used when dynamic_encoder is None
    # rendering
    num_rays: int = 65536  # rays per step over all frames of the step (DAMC: 256^2)
    num_samples: int = 64  # stratified samples per ray
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour behind the head when the subject has no bc.png
    occupancy_resolution: int = 128  # occupancy grid cells per axis (ER-NeRF 128)
    occupancy_every: int = 16  # refresh the occupancy grid every this many steps
    occupancy_start: int = 0  # first step that refreshes it (before: every cell is sampled)
    occupancy_threshold: float = 10.0  # density threshold of an occupied cell (torch-ngp density_thresh)
    grid_lr_scale: float = 10.0  # hash tables learn this many times faster than lr (ER-NeRF 1e-2 vs 1e-3)
    # fine stage (DAMC §3 eq. 8)
    fine_start: int = 120000  # first fine-stage step (DAMC: 120k coarse, then 30k fine)
    patch_size: int = 32  # side of the square fine-stage patch per frame (ER-NeRF: 32)
    lpips_weight: float = 0.01  # lambda of the LPIPS term
    lpips_net: str = "alex"  # LPIPS backbone: "alex" or "vgg"
    lpips_backbone: str | None = None  # backbone weight file (torchvision alexnet/vgg16); None = no LPIPS
    lpips_linear: str | None = None  # LPIPS linear-head file (lpips/weights/v0.1/alex.pth); None = no LPIPS

    def __post_init__(self):
        super().__post_init__()
        if self.fusion_mode not in ("content", "dynamic", "concat", "cross", "csfm"):
            raise ValueError(f"NerfTrainConfig: unknown fusion_mode {self.fusion_mode!r}")
        if self.num_rays < self.batch_size or self.num_samples < 1 or self.patch_size < 8:
            raise ValueError("NerfTrainConfig: need num_rays >= batch_size (frames per step), num_samples >= 1, "
                             f"patch_size >= 8 (got {self.num_rays}, {self.num_samples}, {self.patch_size})")
        if self.occupancy_every < 1 or self.grid_lr_scale <= 0 or self.lpips_weight < 0:
            raise ValueError("NerfTrainConfig: occupancy_every >= 1, grid_lr_scale > 0, lpips_weight >= 0 please")
        if (self.lpips_backbone is None) != (self.lpips_linear is None):
            raise ValueError("NerfTrainConfig: give both lpips_backbone and lpips_linear (or neither)")


_TINY = NerfTrainConfig(
    steps=1500, batch_size=2, lr=2e-3, betas=(0.9, 0.99), grad_clip=0.0, checkpoint_every=500, log_every=25,
    subject_seconds=2.0, subject_size=64, num_levels=8, log2_table_size=12, base_resolution=16,
    max_resolution=256.0, hidden_dim=32, geo_feat_dim=15, color_hidden_dim=32, latent_dim=0,
    fusion_width=32, fusion_heads=2, mel_projection_dim=32, num_rays=512, num_samples=32,
    occupancy_resolution=32, occupancy_start=256, fine_start=1200, patch_size=16)
_PAPER = NerfTrainConfig(
    steps=150000, batch_size=1, lr=1e-3, betas=(0.9, 0.99), grad_clip=0.0, checkpoint_every=5000, log_every=100,
    subject_seconds=60.0, subject_size=512, num_rays=65536, num_samples=128, fine_start=120000)


# ------------------------------------------------------------------------------------- training reparametrisation

class _Scaled(nn.Module):
    """Parametrisation table = factor * theta (a faster learning rate under Adam)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return theta * self.factor

    def right_inverse(self, table: torch.Tensor) -> torch.Tensor:
        return table / self.factor


def _scale_grids(model: NerfSubjectModel, factor: float) -> None:
    from torch.nn.utils import parametrize

    encoder = model.field.encoder
    for grid in (encoder.encoder_xy, encoder.encoder_yz, encoder.encoder_xz):
        parametrize.register_parametrization(grid, "embeddings", _Scaled(factor))


def plain_model(model: NerfSubjectModel) -> NerfSubjectModel:
    """A copy without the training reparametrisation (plain `embeddings` parameters)."""
    from torch.nn.utils import parametrize

    model = copy.deepcopy(model)
    encoder = model.field.encoder
    for grid in (encoder.encoder_xy, encoder.encoder_yz, encoder.encoder_xz):
        if parametrize.is_parametrized(grid, "embeddings"):
            parametrize.remove_parametrizations(grid, "embeddings", leave_parametrized=True)
    return model


# ----------------------------------------------------------------------------------------------------- data

class NerfRays:
    """Batches of the nerf task, a function of (seed, step, rank, world): `batch_size` training frames, their
    rays (random pixels; a patch per frame in the fine stage), targets, background and audio windows.

    Args:
        subject: the training split (NerfSubject); content: (F, Rc, Dc); dynamic: (F, ...) features of the
        whole video (indexed by aud_id); background: (H, W, 3); config: the run config.
    """

    def __init__(self, subject, content: torch.Tensor, dynamic: torch.Tensor, background: torch.Tensor,
                 config: NerfTrainConfig):
        self.subject, self.config = subject, config
        self.content, self.dynamic, self.background = content, dynamic, background
        self.sampler = EpochSampler(len(subject), config.batch_size, config.seed)
        self.rays_per_frame = max(1, config.num_rays // config.batch_size)
        if config.patch_size > min(subject.height, subject.width):
            raise ValueError(f"nerf task: patch_size={config.patch_size} exceeds the {subject.width}x{subject.height} "
                             "frames; lower patch_size")

    def _patch(self, index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.subject, self.config.patch_size
        if s.landmarks is not None:  # ER-NeRF's lip patches: centred near the mouth, jittered
            centre = s.landmarks[index, 48:68].mean(0)
            jitter = torch.randint(-p // 4, p // 4 + 1, (2,), generator=generator)
            left, top = (centre.round().long() + jitter - p // 2).tolist()
        else:
            top = int(torch.randint(0, s.height - p + 1, (1,), generator=generator))
            left = int(torch.randint(0, s.width - p + 1, (1,), generator=generator))
        top, left = min(max(0, top), s.height - p), min(max(0, left), s.width - p)
        rows, cols = torch.meshgrid(torch.arange(top, top + p), torch.arange(left, left + p), indexing="ij")
        return rows.reshape(-1), cols.reshape(-1)

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict:
        s, config = self.subject, self.config
        generator = step_generator(config.seed, step, rank)
        fine = step >= config.fine_start
        window = config.fusion_window
        out = {key: [] for key in ("origins", "directions", "target", "background", "content", "dynamic")}
        frames = self.sampler.indices(step, rank=rank, world=world)
        for index in frames:
            if fine:
                rows, cols = self._patch(index, generator)
            else:
                flat = torch.randint(0, s.height * s.width, (self.rays_per_frame,), generator=generator)
                rows, cols = flat // s.width, flat % s.width
            origins, directions = pixel_rays(s.poses[index], rows, cols, s.fl_x, s.fl_y, s.cx, s.cy, s.convention)
            out["origins"].append(origins)
            out["directions"].append(directions)
            out["target"].append(s.images[index][rows, cols].float() / 255.0)
            out["background"].append(self.background[rows, cols])
            audio = int(s.aud_ids[index])
            out["content"].append(temporal_windows(self.content, window, audio, audio + 1)[0])
            out["dynamic"].append(temporal_windows(self.dynamic, window, audio, audio + 1)[0])
        batch = {key: torch.stack(value) for key, value in out.items()}
        # the occupancy refresh draws from its own stream of (seed, step), the same on every rank
        refresh = step >= config.occupancy_start and step % config.occupancy_every == 0
        batch.update(frame_index=torch.tensor(frames, dtype=torch.long), step=step, seed=config.seed, fine=fine,
                     noise_seed=int(torch.randint(0, 2**62, (1,), generator=generator)),
                     occupancy_generator=step_generator(config.seed, step, 7) if refresh else None)
        return batch


# ----------------------------------------------------------------------------------------------------- task

def subject_dir(config: NerfTrainConfig, data_dir: Path | None, cache_dir: Path) -> Path:
    """The subject folder: --data, or a SynthSinger subject generated once into the cache."""
    from ..nerf.data import make_synthsinger_subject

    if data_dir is not None:
        return Path(data_dir)
    key = (f"id{config.subject_identity}_s{config.subject_seconds:g}_px{config.subject_size}_"
           f"seed{config.subject_seed}")
    folder = Path(cache_dir) / "nerf_subjects" / key
    if not (folder / "transforms_train.json").is_file():
        logger.info("nerf task: generating the SynthSinger subject %s into '%s'", key, folder)
        make_synthsinger_subject(folder, identity=config.subject_identity, seconds=config.subject_seconds,
                                 size=config.subject_size, seed=config.subject_seed, overwrite=True)
    return folder


def build_model(config: NerfTrainConfig, subject, content: torch.Tensor, dynamic_dim: int,
                mel_projection: bool) -> NerfSubjectModel:
    """The NerfSubjectModel for a subject (content (F, Rc, Dc) sets the content input shape)."""
    field = AudioFieldConfig(bound=subject.bound, num_levels=config.num_levels,
                             log2_table_size=config.log2_table_size, base_resolution=config.base_resolution,
                             max_resolution=config.max_resolution, audio_dim=config.audio_dim,
                             hidden_dim=config.hidden_dim, geo_feat_dim=config.geo_feat_dim,
                             color_hidden_dim=config.color_hidden_dim, latent_dim=config.latent_dim,
                             num_frames=max(1, len(subject)))
    fusion = CsfmConfig(mode=config.fusion_mode, content_dim=content.shape[-1], content_rows=content.shape[-2],
                        dynamic_dim=dynamic_dim, width=config.fusion_width, heads=config.fusion_heads,
                        out_dim=config.audio_dim, window=config.fusion_window)
    return NerfSubjectModel(NerfSubjectConfig(
        field=field.to_json(), fusion=fusion.to_json(), mel_projection=dynamic_dim if mel_projection else 0,
        dynamic_encoder=config.dynamic_encoder, content_encoder=subject.content_encoder, fl_x=subject.fl_x,
        fl_y=subject.fl_y, cx=subject.cx, cy=subject.cy, width=subject.width, height=subject.height,
        convention=subject.convention, num_samples=config.num_samples,
        occupancy_resolution=config.occupancy_resolution, occupancy_threshold=config.occupancy_threshold,
        train_frames=len(subject)))


class NerfTask:
    """DAMC / ER-NeRF per-subject NeRF: coarse MSE over rays, then MSE + LPIPS on patches (eqs. 7-8)."""

    name = "nerf"
    config_class = NerfTrainConfig
    presets = {
        "tiny": _TINY,
        # `make demo` / the ComfyUI workflow: a 64 px, 2 s SynthSinger head in 600 steps (under a minute on CPU)
        "demo": dataclasses.replace(_TINY, steps=600, subject_size=64, checkpoint_every=600, occupancy_start=100,
                                    fine_start=500),
        "paper": _PAPER,
        **{f"paper-{mode}": dataclasses.replace(_PAPER, fusion_mode=mode)  # Table 3 ablations
           for mode in ("content", "dynamic", "concat", "cross")},
    }
    default_preset = "tiny"

    def build(self, config: NerfTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from ..nerf.data import load_subject

        # 1. the subject and its audio: content features as stored, dynamic = frozen E_d(mel) or mel windows
        folder = subject_dir(config, data_dir, cache_dir)
        subject = load_subject(folder, "train")
        if subject.dynamic.shape[1:] != (16, 80):
            raise ValueError(f"nerf task: the dynamic features of '{folder}' are {tuple(subject.dynamic.shape)}; "
                             "need MelEncoder 'mel-80' windows (F, 16, 80)")
        if config.dynamic_encoder:
            from ..nerf.dynamic_sync import DynamicSyncEncoder

            encoder = DynamicSyncEncoder.from_pretrained(config.dynamic_encoder).to(device).eval()
            dynamic = encoder.encode_windows(subject.dynamic).float().cpu()
            dynamic_dim, projection = dynamic.shape[-1], False
            logger.info("nerf task: dynamic branch = frozen Dynamic-Sync Encoder '%s'", config.dynamic_encoder)
        else:
            dynamic, dynamic_dim, projection = subject.dynamic, config.mel_projection_dim, True
            logger.info("nerf task: no dynamic_encoder given; the dynamic branch is a trainable linear projection "
                        "of the mel windows (a stand-in for E_d)")
        # 2. the model; its background is the subject's bc.png (ER-NeRF) or a flat colour
        model = build_model(config, subject, subject.content, dynamic_dim, projection)
        background = subject.background if subject.background is not None else \
            torch.tensor(config.background).expand(subject.height, subject.width, 3).clone()
        with torch.no_grad():
            model.background.copy_(background)
        _scale_grids(model, config.grid_lr_scale)
        # 3. LPIPS for the fine stage (frozen), when its weights are configured
        frozen: dict[str, nn.Module] = {}
        self.lpips_weight = 0.0
        if config.lpips_backbone and config.lpips_weight > 0:
            from ..nerf.lpips import load_lpips

            frozen["lpips"] = load_lpips(config.lpips_backbone, config.lpips_linear, config.lpips_net)
            self.lpips_weight = config.lpips_weight
        logger.info("nerf task: %d training frames %dx%d, fusion %s, LPIPS %s", len(subject), subject.width,
                    subject.height, config.fusion_mode, "on" if self.lpips_weight else "off")
        self.config = config
        return TrainParts(trainable={"nerf": model}, frozen=frozen,
                          data=NerfRays(subject, subject.content, dynamic, background, config))

    def loss(self, models: Mapping[str, nn.Module], batch: Mapping):
        rgb = models["nerf"](batch)                                                       # (K, R, 3)
        target = batch["target"]
        mse = F.mse_loss(rgb, target)
        loss, scalars = mse, {"mse": float(mse.detach()),
                              "psnr": float(-10 * torch.log10(mse.detach().clamp_min(1e-10)))}
        if batch["fine"] and self.lpips_weight > 0:
            p = self.config.patch_size
            patch = rgb.reshape(-1, p, p, 3).permute(0, 3, 1, 2)
            goal = target.reshape(-1, p, p, 3).permute(0, 3, 1, 2)
            perceptual = models["lpips"](patch, goal, normalize=True).mean()
            loss = loss + self.lpips_weight * perceptual
            scalars["lpips"] = float(perceptual.detach())
        model = getattr(models["nerf"], "module", models["nerf"])
        scalars["occupancy"] = model.occupancy.occupancy_ratio()
        return loss, scalars

    def export(self, models: Mapping[str, nn.Module], folder: Path) -> Path:
        model = getattr(models["nerf"], "module", models["nerf"])
        return plain_model(model).save_pretrained(folder)


__all__ = ["NerfTrainConfig", "NerfTask", "NerfRays", "build_model", "plain_model", "subject_dir"]
