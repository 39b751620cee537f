"""VAE glue for the SINGER/Hallo pipeline: diffusers AutoencoderKL (sd-vae-ft-mse) encode/decode with the SD1.5
latent scale 0.18215, frame-sliced decoding, and a tiny AutoencoderKL for CPU tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..io.image import from_model
from ..progress import Progress

logger = logging.getLogger(__name__)

VAE_SCALE = 0.18215  # SD1.5 latent scaling factor (sd-vae-ft-mse config "scaling_factor")
SD_VAE_FT_MSE = "stabilityai/sd-vae-ft-mse"  # hub id of the VAE Hallo/SINGER decode with


def autoencoder_kl_kwargs(*, block_out_channels: tuple[int, ...], layers_per_block: int, latent_channels: int,
                          norm_num_groups: int, image_size: int, scaling_factor: float) -> dict:
    """AutoencoderKL keyword arguments of an SD-layout RGB VAE with len(block_out_channels) blocks (one halving
    between blocks): the one place the pack's own VAEs (tests, the vae task, FD2Talk's autoencoder) are shaped."""
    blocks = len(block_out_channels)
    return dict(in_channels=3, out_channels=3, latent_channels=latent_channels,
                down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                norm_num_groups=norm_num_groups, sample_size=image_size, scaling_factor=scaling_factor)


def tiny_vae_config() -> dict:
    """AutoencoderKL keyword arguments of a very small VAE for CPU tests.

    Three blocks (two halvings): 64 x 64 images <-> 4 x 16 x 16 latents, the latent size of
    `DiffusionConfig.tiny()`. Runs in milliseconds on a CPU.
    """
    return autoencoder_kl_kwargs(block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=4,
                                 norm_num_groups=4, image_size=64, scaling_factor=VAE_SCALE)


def tiny_vae(seed: int = 0):
    """A randomly initialised (seeded) AutoencoderKL from `tiny_vae_config()`, in eval mode."""
    from diffusers import AutoencoderKL

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        vae = AutoencoderKL(**tiny_vae_config())
    finally:
        torch.random.set_rng_state(generator_state)
    return vae.eval()


def vae_downscale(vae) -> int:
    """Pixels per latent pixel of an AutoencoderKL: 2 ** (blocks - 1) (8 for SD1.5)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_vae(folder_or_hub_id: str | os.PathLike = SD_VAE_FT_MSE, *, local_files_only: bool = True,
             cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None):
    """Load a diffusers AutoencoderKL (sd-vae-ft-mse, or the vae/ of a stable-diffusion-v1-5 folder).

    folder_or_hub_id: a folder with config.json + diffusion_pytorch_model.safetensors (or one whose vae/
    subfolder has them), or a hub id such as "stabilityai/sd-vae-ft-mse"; local_files_only: True = never
    download (hub ids must already be in the cache); cache_dir: hub cache folder; device, dtype: where/how
    to put it (dtype None keeps float32). Returns the AutoencoderKL in eval mode.
    """
    from diffusers import AutoencoderKL

    source = str(folder_or_hub_id)
    path = Path(source).expanduser()
    subfolder = None
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
            subfolder = "vae"
        elif not (path / "config.json").is_file():
            raise FileNotFoundError(f"load_vae: '{path}' has no config.json (nor vae/config.json); give the "
                                    "sd-vae-ft-mse folder or a stable-diffusion-v1-5 folder")
        source = str(path)
    elif path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"load_vae: '{source}' is not a diffusers VAE folder (nor a hub id such as "
                                f"'{SD_VAE_FT_MSE}'); give the sd-vae-ft-mse folder")
    try:
        vae = AutoencoderKL.from_pretrained(source, subfolder=subfolder, local_files_only=local_files_only,
                                            cache_dir=None if cache_dir is None else str(cache_dir))
    except (OSError, ValueError) as error:
        hint = " (it is not in the local cache; download it first or pass local_files_only=False)" \
            if local_files_only and not path.is_dir() else ""
        raise RuntimeError(f"load_vae: cannot load an AutoencoderKL from '{source}'{hint}: {error}") from error
    if vae.config.latent_channels != 4:
        logger.warning("load_vae: '%s' has %d latent channels; SINGER/Hallo use 4", source,
                       vae.config.latent_channels)
    return vae.to(device=device, dtype=dtype).eval()


def encode_images(vae, images: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None,
                  slice_size: int = 8) -> torch.Tensor:
    """Scaled latents of images, as Hallo makes the reference latent (`latent_dist.mean * 0.18215`).

    vae: AutoencoderKL; images: (N, 3, H, W) in [-1, 1] (H, W divisible by `vae_downscale(vae)`);
    sample: draw from the latent distribution instead of taking its mean (training); generator: for
    sample=True; slice_size: images encoded at a time. Returns (N, C, H/s, W/s) in the VAE's dtype.
    """
    if images.dim() != 4 or images.shape[1] != vae.config.in_channels:
        raise ValueError(f"encode_images: images must be (N, {vae.config.in_channels}, H, W), got "
                         f"{tuple(images.shape)}")
    scale = float(getattr(vae.config, "scaling_factor", VAE_SCALE))
    param = next(vae.parameters())
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], max(1, int(slice_size))):
            batch = images[start:start + slice_size].to(device=param.device, dtype=param.dtype)
            dist = vae.encode(batch).latent_dist
            out.append((dist.sample(generator) if sample else dist.mean) * scale)
    return torch.cat(out)


def decode_latents(vae, latents: torch.Tensor, *, slice_frames: int = 8,
                   out: torch.Tensor | None = None, progress: Progress | None = None) -> torch.Tensor:
    """Decode video latents a few frames at a time (memory bounded by `slice_frames`).

    vae: AutoencoderKL; latents: (B, C, F, h, w) scaled latents (or (N, C, h, w) images);
    slice_frames: frames decoded per VAE call; out: optional float32 (B*F, H, W, 3) CPU tensor to fill;
    progress: (done, total) frames after each slice, may raise to stop.
    Returns (B*F, H, W, 3) float32 on the CPU in [0, 1] (Hallo: video / 2 + 0.5, clamped), frames in
    batch-major order.
    """
    if latents.dim() == 5:
        flat = latents.transpose(1, 2).flatten(0, 1)
    elif latents.dim() == 4:
        flat = latents
    else:
        raise ValueError(f"decode_latents: latents must be (B, C, F, h, w) or (N, C, h, w), got "
                         f"{tuple(latents.shape)}")
    if slice_frames < 1:
        raise ValueError(f"decode_latents: slice_frames must be >= 1, got {slice_frames}")
    scale = float(getattr(vae.config, "scaling_factor", VAE_SCALE))
    factor = vae_downscale(vae)
    total, _, height, width = flat.shape
    shape = (total, height * factor, width * factor, vae.config.out_channels)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32)
    elif tuple(out.shape) != shape:
        raise ValueError(f"decode_latents: out must have shape {shape}, got {tuple(out.shape)}")
    param = next(vae.parameters())
    with torch.no_grad():
        for start in range(0, total, slice_frames):
            stop = min(total, start + slice_frames)
            batch = flat[start:stop].to(device=param.device, dtype=param.dtype) / scale
            images = vae.decode(batch).sample
            out[start:stop] = from_model(images)
            if progress is not None:
                progress(stop, total)
    return out
