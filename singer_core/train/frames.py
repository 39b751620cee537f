"""The ``frames`` training task: FD2Talk's frame Diffusion UNet (Sec. 3.3, 3.4.2, eq. 16) on SynthSinger clips.

Each sample is one frame of a clip: its latent J_0 = E(frame) (the frame autoencoder's encoder, frozen), the
reference latent x = E(first frame of the clip), the frame's expression + pose coefficients -- from the
dataset's ground truth, or sampled once per clip from a trained motion model as the paper does (Sec. 3.4.2) --
a timestep and noise. Loss: ||J_0 - theta(J_t, t, beta, p, x)||^2 (x0 prediction), J_t by eq. (2) through
ops/noise_schedule.py. Without an autoencoder given, the tiny VAE (``vae`` task) and its frame fine-tune
(``frame-autoencoder`` task) are trained first into the cache.

Export (``out/final``): ``unet/`` (FrameUNet), ``autoencoder/`` (FrameAutoencoder) and ``fd2talk_frames.json``
(image size, noise schedule, motion source), read by ``diffusion.fd2talk_portrait.load_frame_model``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from ..diffusion.fd2talk_portrait import FRAME_MODEL_INFO
from .config import LoopConfig
from .frame_data import FrameClip, FrameDataConfig, load_frame_clips
from .loop import EpochSampler, TrainParts, step_generator

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FramesTrainConfig(FrameDataConfig):
    """Frame UNet size, its noise schedule, where the motion and the autoencoder come from."""

    # UNet (FrameUNetConfig)
    block_out_channels: tuple[int, ...] = (32, 64)  # UNet level widths
    layers_per_block: int = 1  # resnet + cross-attention layers per encoder level
    norm_num_groups: int = 8  # GroupNorm groups
    attention_head_dim: int = 16  # channels per head
    motion_tokens: int = 4  # tokens of the linear projection of [exp, pose]
    condition_dim: int = 64  # width of the condition tokens
    condition: str = "dual"  # "dual" (phi_1, phi_2: the paper) or "concat" (Table 2 ablation)
    # noise schedule (x0 prediction; the paper: 1000 steps; betas not given: DDPM's linear)
    train_timesteps: int = 1000  # T
    beta_start: float = 1e-4  # first beta
    beta_end: float = 0.02  # last beta
    # conditions
    autoencoder: str | None = None  # FrameAutoencoder folder, or a diffusers AutoencoderKL folder; None = train tiny
    autoencoder_steps: int = 200  # steps of the frame-autoencoder fine-tune trained when autoencoder is None
    vae_steps: int = 400  # steps of the tiny VAE it starts from
    motion_model: str | None = None  # a trained motion model folder: sample the conditions as the paper; None = GT
    motion_steps: int = 20  # DDIM steps of that motion model
    motion_seed: int = 0  # its seed (clip k uses motion_seed + k)

    def __post_init__(self):
        super().__post_init__()
        self.unet_config(self.image_size // 4)  # validates the UNet fields
        if self.autoencoder_steps < 1 or self.vae_steps < 1 or self.motion_steps < 1:
            raise ValueError("FramesTrainConfig: autoencoder_steps, vae_steps and motion_steps must be >= 1")

    def unet_config(self, latent_side: int, latent_channels: int = 4):
        from ..diffusion.fd2talk_frames import FrameUNetConfig

        return FrameUNetConfig(latent_channels=latent_channels, sample_size=latent_side,
                               block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                               norm_num_groups=self.norm_num_groups, attention_head_dim=self.attention_head_dim,
                               motion_tokens=self.motion_tokens, condition_dim=self.condition_dim,
                               condition=self.condition)

    def schedule(self):
        from ..ops.noise_schedule import NoiseSchedule

        return NoiseSchedule.fd2talk(train_steps=self.train_timesteps, beta_start=self.beta_start,
                                     beta_end=self.beta_end)


_TINY = FramesTrainConfig(steps=600, batch_size=16, lr=1e-3, warmup_steps=20, checkpoint_every=100, log_every=10)
# Sec. 4.1: 256 x 256 frames, 64 x 64 latents (an f = 4 KL autoencoder, LDM's), batch 32, Adam, T = 1000
_PAPER = FramesTrainConfig(steps=200_000, batch_size=32, lr=1e-4, warmup_steps=1000, checkpoint_every=5000,
                           log_every=100, image_size=256, block_out_channels=(128, 256, 512), layers_per_block=2,
                           norm_num_groups=32, attention_head_dim=64, motion_tokens=8, condition_dim=256,
                           synth_clips=200, synth_seconds=4.0, synth_clips_per_identity=4, autoencoder_steps=20_000,
                           vae_steps=20_000)


class FrameBatches:
    """Batches of single frames: latent J_0, the clip's reference latent, motion, t and noise, a function of
    (seed, step, rank).

    Args:
        latents: per clip (F_k, d, h, w) latents of every frame.
        motion: per clip (F_k, 70) conditions.
        config: the run config.
    """

    def __init__(self, latents: list[torch.Tensor], motion: list[torch.Tensor], config: FramesTrainConfig):
        self.latents, self.motion, self.config = latents, motion, config
        self.index = [(clip, frame) for clip, clip_latents in enumerate(latents) for frame in range(len(clip_latents))]
        self.sampler = EpochSampler(len(self.index), config.batch_size, config.seed)

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """x0, reference (B, d, h, w); motion (B, 70); t (B,) long; noise (B, d, h, w)."""
        pairs = [self.index[i] for i in self.sampler.indices(step, rank=rank, world=world)]
        x0 = torch.stack([self.latents[clip][frame] for clip, frame in pairs])
        generator = step_generator(self.config.seed, step, rank)
        return {"x0": x0, "reference": torch.stack([self.latents[clip][0] for clip, _ in pairs]),
                "motion": torch.stack([self.motion[clip][frame] for clip, frame in pairs]),
                "t": torch.randint(0, self.config.train_timesteps, (len(pairs),), generator=generator),
                "noise": torch.randn(x0.shape, generator=generator)}


def encode_clip_frames(autoencoder, frames: torch.Tensor, device, chunk: int = 32) -> torch.Tensor:
    """(F, 3, S, S) uint8 -> (F, d, h, w) float32 CPU latents E(frame) (no gradients)."""
    out = []
    with torch.no_grad():
        for start in range(0, frames.shape[0], chunk):
            images = frames[start:start + chunk].to(device).float() / 127.5 - 1.0
            out.append(autoencoder.encode(images).float().cpu())
    return torch.cat(out)


def sampled_motion(folder: str, root: Path, clips: list[FrameClip], cache_dir: Path, steps: int,
                   seed: int) -> list[torch.Tensor]:
    """Per clip (F, 70) motion sampled from the audio by a trained motion model (FD2Talk Sec. 3.4.2)."""
    from ..audio.features import SingerAudioFeatures
    from ..motion.generator import MotionModel
    from .data_cache import AudioSpec, cached_features

    model = MotionModel.from_pretrained(folder)
    paths = cached_features(root, [c.clip_id for c in clips], AudioSpec(model.config.audio_encoder), cache_dir)
    out = []
    for number, clip in enumerate(clips):
        motion = model.generate(SingerAudioFeatures.load(paths[clip.clip_id]), steps=steps, seed=seed + number)
        out.append(torch.cat([motion.exp, motion.angle, motion.trans], 1).float()[:clip.frames.shape[0]])
    return out


class FramesTask:
    """Train FD2Talk's frame Diffusion UNet (x0 prediction) on one frame at a time."""

    name = "frames"
    config_class = FramesTrainConfig
    presets = {
        "tiny": _TINY,  # 64 px SynthSinger of one singer, 16 x 16 latents; CPU minutes (plus the tiny VAE first)
        "paper": _PAPER,  # Sec. 4.1 scale: 256 px, 64 x 64 latents, batch 32 (GPUs)
    }
    default_preset = "tiny"

    def build(self, config: FramesTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from ..diffusion.fd2talk_frames import FrameUNet

        # 1. data, the frozen encoder, every frame's latent once
        root = config.dataset(data_dir, cache_dir)
        clips = load_frame_clips(root, config.split, config.image_size)
        autoencoder_path = self._autoencoder(config, data_dir, cache_dir, device)
        autoencoder = load_frame_autoencoder(autoencoder_path, image_size=config.image_size).to(device)
        latents = [encode_clip_frames(autoencoder, clip.frames, device) for clip in clips]
        channels, side = latents[0].shape[1], latents[0].shape[2]
        # 2. the motion conditions: ground truth, or sampled from the audio by the motion model
        if config.motion_model:
            motion = sampled_motion(config.motion_model, root, clips, cache_dir, config.motion_steps,
                                    config.motion_seed)
        else:
            motion = [clip.motion for clip in clips]
        logger.info("frames task: %d clips, %d frames, latents %d x %d x %d, motion from %s", len(clips),
                    sum(len(x) for x in latents), channels, side, side, config.motion_model or "ground truth")
        # 3. the UNet, with the motion statistics of the training data
        unet = FrameUNet(config.unet_config(side, channels))
        everything = torch.cat(motion)
        unet.set_normalization(everything.mean(0), everything.std(0))
        self.config, self.autoencoder = config, autoencoder_path
        self.alphas_cumprod = config.schedule().alphas_cumprod
        return TrainParts(trainable={"unet": unet}, frozen={}, data=FrameBatches(latents, motion, config))

    def _autoencoder(self, config: FramesTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> str:
        """config.autoencoder, or the tiny frame autoencoder trained on this run's SynthSinger frames (once, cached)."""
        if config.autoencoder:
            return config.autoencoder
        if data_dir is not None:
            raise ValueError("frames task: with your own --data, give autoencoder (a frame-autoencoder task's final "
                             "folder trained on that data, or a diffusers AutoencoderKL folder)")
        from .frame_autoencoder import FrameAutoencoderTask
        from .loop import FINAL_DIR, train

        loop_fields = {f.name for f in dataclasses.fields(LoopConfig)} - {"seed"}
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(FrameDataConfig)
                  if f.name not in loop_fields}
        auto_config = dataclasses.replace(FrameAutoencoderTask.presets["tiny"], **fields, steps=config.autoencoder_steps,
                                          vae_steps=config.vae_steps,
                                          checkpoint_every=min(config.autoencoder_steps, 100))
        digest = hashlib.sha1(auto_config.to_json().encode()).hexdigest()[:12]
        out = Path(cache_dir) / f"frame-autoencoder-{digest}"
        if not (out / FINAL_DIR / "config.json").is_file():
            logger.info("frames task: no autoencoder given; training the tiny one into '%s' first", out)
            train(FrameAutoencoderTask, config=auto_config, out=out, resume=True, device=str(device),
                  cache_dir=cache_dir, quiet=True)
        return str(out / FINAL_DIR)

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        from ..ops.noise_schedule import q_sample

        x0 = batch["x0"]
        noisy = q_sample(x0, batch["noise"], batch["t"], self.alphas_cumprod)  # eq. (2)
        predicted = models["unet"](noisy, batch["t"], batch["motion"], batch["reference"])
        loss = (predicted - x0).square().mean()  # eq. (16)
        return loss, {"mse": float(loss.detach()), "t_mean": float(batch["t"].float().mean())}

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        from ..io.checkpoint import atomic_folder

        unet = getattr(models["unet"], "module", models["unet"])
        config = self.config
        with atomic_folder(folder) as tmp:
            unet.save_pretrained(tmp / "unet")
            source = Path(self.autoencoder)
            if (source / "model.safetensors").is_file():
                shutil.copytree(source, tmp / "autoencoder")
            else:  # a plain diffusers VAE: store the widened FrameAutoencoder built from it
                load_frame_autoencoder(source, image_size=config.image_size).save_pretrained(tmp / "autoencoder")
            info = {"task": self.name, "image_size": config.image_size,
                    "schedule": json.loads(config.schedule().to_json()),
                    "motion": config.motion_model or "ground truth"}
            (tmp / FRAME_MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
        return Path(folder)


def load_frame_autoencoder(folder: str | Path, *, image_size: int | None = None):
    """A FrameAutoencoder folder (save_pretrained), or a diffusers AutoencoderKL folder widened by from_vae."""
    from ..diffusion.fd2talk_decoder import FrameAutoencoder
    from ..diffusion.vae import load_vae

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return FrameAutoencoder.from_pretrained(folder)
    return FrameAutoencoder.from_vae(load_vae(folder), image_size=image_size).eval()
