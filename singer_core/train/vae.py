"""The ``vae`` training task: a small diffusers AutoencoderKL (the SD VAE's architecture, scaled down) fitted to
SynthSinger frames, for the tiny SINGER stack that has no pretrained VAE (SINGER itself keeps SD's VAE frozen).

Loss: MSE of the reconstruction in [-1, 1] + l1_weight * L1 + kl_weight * KL(q(z|x) || N(0, I)) (the KL per
latent element, averaged). The exported folder is a diffusers AutoencoderKL (``save_pretrained``) that
``singer_core.diffusion.vae.load_vae`` reads; its ``scaling_factor`` is 1 / std of the latent means over training
frames (how SD's 0.18215 was chosen) unless the config fixes one, so scaled latents have unit variance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.synthetic import SynthSingerConfig
from ..diffusion.vae import VAE_SCALE, autoencoder_kl_kwargs
from ..io.checkpoint import atomic_folder
from .config import LoopConfig
from .data_cache import synth_dataset
from .loop import FINAL_DIR, EpochSampler, TrainParts, step_generator, train

logger = logging.getLogger(__name__)

SCALE_FRAMES = 256  # training frames (at most) whose latent means set the measured scaling_factor


@dataclasses.dataclass(frozen=True)
class VAETrainConfig(LoopConfig):
    """Loop settings + the AutoencoderKL architecture, the loss weights and the SynthSinger frames."""

    # model (diffusers AutoencoderKL keyword arguments)
    image_size: int = 64  # square training frames (pixels); divisible by 2 ** (blocks - 1)
    block_out_channels: tuple[int, ...] = (8, 8, 16)  # encoder/decoder widths; blocks - 1 halvings (tiny: 4x)
    layers_per_block: int = 1  # resnets per encoder block (the decoder has one more)
    norm_num_groups: int = 4  # GroupNorm groups (must divide every width)
    latent_channels: int = 4  # latent channels (SINGER / SD1.5: 4)
    scaling_factor: float | None = None  # latent scale written to the export; None = 1 / std measured at export
    # loss
    kl_weight: float = 1e-6  # weight of the KL term (per latent element); small, as in SD's VAE
    l1_weight: float = 0.0  # weight of an extra L1 reconstruction term (sharper edges than MSE alone)
    # data: SynthSinger frames (generated into the cache when no --data is given)
    split: str = "train"  # dataset split to train on
    frame_stride: int = 1  # keep every this-many-th frame of each clip (consecutive frames are near copies)
    synth_clips: int = 6  # SynthSinger clips generated when no --data is given
    synth_seconds: float = 2.0  # their length in seconds
    synth_seed: int = 0  # their seed
    synth_clips_per_identity: int = 1  # songs per identity (= synth_clips: one singer, as the singer task's tiny)
    synth_textured_background: bool = False  # random smooth backgrounds instead of flat ones

    def __post_init__(self):
        super().__post_init__()
        blocks = tuple(self.block_out_channels)
        object.__setattr__(self, "block_out_channels", blocks)
        if not blocks or any(c < 1 or c % self.norm_num_groups for c in blocks):
            raise ValueError(f"VAETrainConfig: every block width must be a positive multiple of norm_num_groups "
                             f"({self.norm_num_groups}), got {blocks}")
        factor = 2 ** (len(blocks) - 1)
        if self.image_size < 8 or self.image_size % factor or self.image_size % 2:
            raise ValueError(f"VAETrainConfig: image_size must be even, >= 8 and divisible by {factor} (the VAE's "
                             f"downscale for {len(blocks)} blocks), got {self.image_size}")
        if self.kl_weight < 0 or self.l1_weight < 0:
            raise ValueError("VAETrainConfig: kl_weight and l1_weight must be >= 0")
        if self.scaling_factor is not None and not self.scaling_factor > 0:
            raise ValueError(f"VAETrainConfig: scaling_factor must be positive or None, got {self.scaling_factor}")
        if self.frame_stride < 1 or self.layers_per_block < 1 or self.latent_channels < 1:
            raise ValueError("VAETrainConfig: frame_stride, layers_per_block and latent_channels must be >= 1")
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"VAETrainConfig: split must be 'train', 'test' or 'all', got {self.split!r}")
        self.synth_config()

    @property
    def downscale(self) -> int:
        """Pixels per latent pixel: 2 ** (blocks - 1)."""
        return 2 ** (len(self.block_out_channels) - 1)

    def vae_kwargs(self) -> dict:
        """AutoencoderKL keyword arguments of this config."""
        return autoencoder_kl_kwargs(block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                                     latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
                                     image_size=self.image_size, scaling_factor=self.scaling_factor or VAE_SCALE)

    def synth_config(self) -> SynthSingerConfig:
        """The SynthSinger dataset generated when no --data is given (frames at image_size)."""
        return SynthSingerConfig(clips=self.synth_clips, seconds=self.synth_seconds, size=self.image_size,
                                 seed=self.synth_seed, textured_background=self.synth_textured_background,
                                 clips_per_identity=self.synth_clips_per_identity)


_TINY = VAETrainConfig(steps=800, batch_size=16, lr=3e-3, warmup_steps=10, checkpoint_every=100, log_every=10,
                       frame_stride=2, synth_clips=48, synth_seconds=1.0, synth_textured_background=True)
_SMALL = VAETrainConfig(steps=20_000, batch_size=16, lr=4e-4, warmup_steps=200, checkpoint_every=1000, log_every=50,
                        image_size=128, block_out_channels=(32, 64, 128, 128), layers_per_block=2,
                        norm_num_groups=32, l1_weight=0.1, frame_stride=2, synth_clips=60, synth_seconds=4.0,
                        synth_textured_background=True)


def load_frames(root: Path, split: str, image_size: int, stride: int) -> torch.Tensor:
    """(N, 3, S, S) uint8 frames of every clip of `split` (every `stride`-th frame), resized to image_size."""
    from ..data.dataset import SingerClipDataset

    dataset = SingerClipDataset(root, split, window=None, image_size=image_size, with_audio=False)
    out = []
    for item in range(len(dataset)):
        frames = dataset[item]["frames"][::stride]
        out.append(frames.mul(255.0).round_().to(torch.uint8))
    return torch.cat(out)


class FrameBatches:
    """Batches of the vae task: frames in [-1, 1] and the posterior noise, a function of (seed, step, rank).

    Args:
        frames: (N, 3, S, S) uint8 frames.
        config: the run config.
    """

    def __init__(self, frames: torch.Tensor, config: VAETrainConfig):
        self.frames, self.config = frames, config
        self.sampler = EpochSampler(frames.shape[0], config.batch_size, config.seed)
        self.latent_side = config.image_size // config.downscale

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """images (B, 3, S, S) float32 in [-1, 1]; noise (B, latent_channels, S/f, S/f)."""
        index = torch.tensor(self.sampler.indices(step, rank=rank, world=world))
        images = self.frames[index].float() / 127.5 - 1.0
        generator = step_generator(self.config.seed, step, rank)
        side = self.latent_side
        noise = torch.randn(len(index), self.config.latent_channels, side, side, generator=generator)
        return {"images": images, "noise": noise}


class Autoencoder(torch.nn.Module):
    """The trained module: forward = encode, reparameterised sample with the batch's noise, decode."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor, noise: torch.Tensor):
        """images (B, 3, S, S) in [-1, 1], noise (B, C, s, s) -> (reconstruction, mean, logvar)."""
        posterior = self.vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * noise
        return self.vae.decode(latents).sample, posterior.mean, posterior.logvar


def vae_loss(recon: torch.Tensor, images: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             kl_weight: float, l1_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE + l1_weight * L1 + kl_weight * mean_i 0.5 (mu_i^2 + var_i - 1 - logvar_i); returns (loss, scalars)."""
    mse = F.mse_loss(recon, images)
    l1 = F.l1_loss(recon, images)
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
    loss = mse + l1_weight * l1 + kl_weight * kl
    psnr = 10.0 * torch.log10(4.0 / mse.detach().clamp_min(1e-12))  # signal range 2 ([-1, 1])
    return loss, {"mse": float(mse.detach()), "l1": float(l1.detach()), "kl": float(kl.detach()),
                  "psnr": float(psnr)}


class VAETask:
    """Fit a small AutoencoderKL to SynthSinger frames (the tiny SINGER stack's frozen VAE)."""

    name = "vae"
    config_class = VAETrainConfig
    presets = {
        "tiny": _TINY,  # diffusion.vae.tiny_vae_config's architecture, 64 px -> 4 x 16 x 16; about 1-2 CPU minutes
        "small": _SMALL,  # SD-like 8x VAE at 128 px -> 4 x 16 x 16 latents; a GPU run
    }
    default_preset = "tiny"

    def build(self, config: VAETrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from diffusers import AutoencoderKL

        root = Path(data_dir) if data_dir is not None else synth_dataset(config.synth_config(), cache_dir)
        frames = load_frames(root, config.split, config.image_size, config.frame_stride)
        logger.info("vae task: %d frames of %d px from '%s'", frames.shape[0], config.image_size, root)
        self.config, self.frames = config, frames
        vae = AutoencoderKL(**config.vae_kwargs())
        return TrainParts(trainable={"vae": Autoencoder(vae)}, frozen={}, data=FrameBatches(frames, config))

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        recon, mean, logvar = models["vae"](batch["images"], batch["noise"])
        return vae_loss(recon, batch["images"], mean, logvar, self.config.kl_weight, self.config.l1_weight)

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        vae = models["vae"].vae
        scale = self.config.scaling_factor or measure_scaling_factor(vae, self.frames)
        vae.register_to_config(scaling_factor=float(scale))
        logger.info("vae task: scaling_factor %.5f (%s)", scale, "given" if self.config.scaling_factor else "measured")
        return save_vae(vae, folder)


def cached_tiny_vae(vae_config: VAETrainConfig, cache_dir: str | os.PathLike, device, who: str) -> str:
    """The final folder of a VAE trained with `vae_config` into cache_dir/vae-tiny-<config digest>/: trained
    the first time (resuming an interrupted run), reused after. `who` names the task in the log line."""
    digest = hashlib.sha1(vae_config.to_json().encode()).hexdigest()[:12]
    out = Path(cache_dir) / f"vae-tiny-{digest}"
    if not (out / FINAL_DIR / "config.json").is_file():
        logger.info("%s: no vae given; training the tiny VAE into '%s' first", who, out)
        train(VAETask, config=vae_config, out=out, resume=True, device=str(device), cache_dir=cache_dir, quiet=True)
    return str(out / FINAL_DIR)


def measure_scaling_factor(vae, frames: torch.Tensor, count: int = SCALE_FRAMES) -> float:
    """1 / std of the posterior means of (at most `count`, evenly spaced) uint8 frames (N, 3, S, S)."""
    param = next(vae.parameters())
    pick = torch.linspace(0, frames.shape[0] - 1, min(count, frames.shape[0])).round().long()
    means = []
    with torch.no_grad():
        for chunk in pick.split(32):
            images = frames[chunk].to(device=param.device, dtype=param.dtype) / 127.5 - 1.0
            means.append(vae.encode(images).latent_dist.mean.double().cpu())
    std = float(torch.cat(means).std())
    if not std > 0:
        raise RuntimeError("vae task: the latents of the training frames are constant; the VAE did not train "
                           "(check the data and lr)")
    return 1.0 / std


def save_vae(vae, folder: str | os.PathLike) -> Path:
    """Write `vae` with diffusers' save_pretrained (safetensors) into `folder` atomically (temporary folder +
    rename; an existing folder is replaced). Returns the folder."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    return folder
