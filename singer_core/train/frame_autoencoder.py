"""The ``frame-autoencoder`` training task: FD2Talk's E / D fine-tune (Sec. 3.4.2, eqs. 13-15). Two frames F_1, F_2
of one clip per sample; loss lambda_rec ||F_2 - D([E(F_1), E(F_2)])||^2 + lambda_per LPIPS(F_2, D(...)) (the
perceptual term with user-provided LPIPS weights; off without them). Starts from a pretrained diffusers
AutoencoderKL (``vae``), or from the tiny VAE trained first by the ``vae`` task on the same frames.

Export: a FrameAutoencoder folder (config.json + model.safetensors) whose scaling_factor is re-measured on the
training frames (1 / std of the latent means, as the vae task does).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from .frame_data import FrameDataConfig, load_frame_clips
from .loop import EpochSampler, TrainParts

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FrameAutoencoderTrainConfig(FrameDataConfig):
    """Where the autoencoder starts and the weights of eq. (15)."""

    vae: str | None = None  # diffusers AutoencoderKL folder to start from; None = train the tiny VAE first
    vae_steps: int = 400  # steps of that tiny VAE (the vae task's tiny preset on this run's frames)
    rec_weight: float = 1.0  # lambda_rec of eq. (15)
    per_weight: float = 0.0  # lambda_per (needs both LPIPS weight files)
    lpips_net: str = "alex"  # LPIPS backbone: "alex" or "vgg"
    lpips_backbone: str | None = None  # torchvision backbone weights (e.g. alexnet-owt-7be5be79.pth)
    lpips_linear: str | None = None  # LPIPS linear heads (lpips/weights/v0.1/alex.pth)

    def __post_init__(self):
        super().__post_init__()
        if self.rec_weight < 0 or self.per_weight < 0 or self.vae_steps < 1:
            raise ValueError("FrameAutoencoderTrainConfig: rec_weight and per_weight must be >= 0, vae_steps >= 1")
        if (self.lpips_backbone is None) != (self.lpips_linear is None):
            raise ValueError("FrameAutoencoderTrainConfig: give both lpips_backbone and lpips_linear (or neither)")


_TINY = FrameAutoencoderTrainConfig(steps=200, batch_size=8, lr=5e-4, warmup_steps=10, checkpoint_every=100,
                                    log_every=10)
_PAPER = FrameAutoencoderTrainConfig(steps=20_000, batch_size=16, lr=4.5e-6, warmup_steps=500, checkpoint_every=2000,
                                     log_every=100, image_size=256, per_weight=1.0, synth_clips=200, synth_seconds=4.0,
                                     synth_clips_per_identity=4)


class FramePairs:
    """Two frames (F_1, F_2) of one clip per sample, drawn from (seed, step, rank).

    Args:
        frames: per clip (F_k, 3, S, S) uint8.
        config: the run config.
    """

    def __init__(self, frames: list[torch.Tensor], config: FrameAutoencoderTrainConfig):
        self.frames, self.config = frames, config
        self.index = [(clip, frame) for clip, clip_frames in enumerate(frames) for frame in range(len(clip_frames))]
        self.sampler = EpochSampler(len(self.index), config.batch_size, config.seed)

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """first, second: (B, 3, S, S) float32 in [-1, 1] (second = the epoch's frame, first = a random frame
        of the same clip)."""
        from .loop import step_generator

        generator = step_generator(self.config.seed, step, rank)
        pairs = [self.index[i] for i in self.sampler.indices(step, rank=rank, world=world)]
        firsts = [int(torch.randint(0, len(self.frames[clip]), (), generator=generator)) for clip, _ in pairs]
        first = torch.stack([self.frames[clip][f] for (clip, _), f in zip(pairs, firsts, strict=True)])
        second = torch.stack([self.frames[clip][frame] for clip, frame in pairs])
        return {"first": first.float() / 127.5 - 1.0, "second": second.float() / 127.5 - 1.0}


class FrameAutoencoderTask:
    """Fine-tune E and the 2d-input D on pairs of frames (eqs. 13-15)."""

    name = "frame-autoencoder"
    config_class = FrameAutoencoderTrainConfig
    presets = {
        "tiny": _TINY,  # the tiny VAE on 64 px SynthSinger of one singer, widened; about a CPU minute
        "paper": _PAPER,  # 256 px from a given KL-f4 VAE, with LPIPS (GPUs)
    }
    default_preset = "tiny"

    def build(self, config: FrameAutoencoderTrainConfig, data_dir: Path | None, cache_dir: Path,
              device) -> TrainParts:
        from ..diffusion.fd2talk_decoder import FrameAutoencoder
        from ..diffusion.vae import load_vae

        root = config.dataset(data_dir, cache_dir)
        frames = [clip.frames for clip in load_frame_clips(root, config.split, config.image_size)]
        vae = load_vae(self._vae_path(config, data_dir, cache_dir, device))
        model = FrameAutoencoder.from_vae(vae, image_size=config.image_size).train()
        frozen = {}
        if config.lpips_backbone and config.per_weight > 0:
            from ..nerf.lpips import load_lpips

            frozen["lpips"] = load_lpips(config.lpips_backbone, config.lpips_linear, net=config.lpips_net)
        self.config, self.frames = config, frames
        logger.info("frame-autoencoder task: %d clips, %d frames of %d px", len(frames), sum(len(f) for f in frames),
                    config.image_size)
        return TrainParts(trainable={"autoencoder": model}, frozen=frozen, data=FramePairs(frames, config))

    def _vae_path(self, config: FrameAutoencoderTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> str:
        if config.vae:
            return config.vae
        if data_dir is not None:
            raise ValueError("frame-autoencoder task: give vae (a diffusers AutoencoderKL folder) for your own data")
        from .vae import VAETask, cached_tiny_vae

        vae_config = dataclasses.replace(VAETask.presets["tiny"], image_size=config.image_size,
                                         synth_clips=config.synth_clips, synth_seconds=config.synth_seconds,
                                         synth_seed=config.synth_seed,
                                         synth_clips_per_identity=config.synth_clips_per_identity,
                                         synth_textured_background=False, split=config.split, seed=config.seed,
                                         steps=config.vae_steps, checkpoint_every=min(config.vae_steps, 100))
        return cached_tiny_vae(vae_config, cache_dir, device, "frame-autoencoder task")

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        from ..diffusion.fd2talk_decoder import reconstruction_loss

        model = models["autoencoder"]
        return reconstruction_loss(getattr(model, "module", model), batch["first"], batch["second"],
                                   rec_weight=self.config.rec_weight, per_weight=self.config.per_weight,
                                   perceptual=models.get("lpips"))

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        from .vae import measure_scaling_factor

        model = getattr(models["autoencoder"], "module", models["autoencoder"])
        # the scale measured on the unscaled posterior means of the training frames
        scale = measure_scaling_factor(model.vae, torch.cat(self.frames))
        model.config = dataclasses.replace(model.config, scaling_factor=scale)
        logger.info("frame-autoencoder task: scaling_factor %.5f (measured)", scale)
        return model.save_pretrained(folder)
