"""FD2Talk's frame autoencoder (Sec. 3.3, 3.4.2, eqs. 13-15): a KL autoencoder E / D whose decoder reads the
reference latent concatenated with the denoised latent (2 x d input channels; the first convolution replaced),
so D([E(F_1), E(F_2)]) reconstructs F_2 with the appearance of F_1 at hand.

The autoencoder is a diffusers AutoencoderKL (the LDM / SD architecture the paper fine-tunes) with
`decoder.conv_in` swapped; `from_vae` starts it from a pretrained VAE with the new reference half of the
convolution at zero, so before fine-tuning it decodes exactly as the pretrained decoder.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig
from .vae import autoencoder_kl_kwargs

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FrameAutoencoderConfig(JsonConfig):
    """The AutoencoderKL architecture (diffusers keyword arguments) and its latent scale."""

    image_size: int = 64  # square frames (pixels)
    block_out_channels: tuple[int, ...] = (8, 8, 16)  # encoder / decoder widths; len - 1 halvings
    layers_per_block: int = 1  # resnets per encoder block (the decoder has one more)
    norm_num_groups: int = 4  # GroupNorm groups
    latent_channels: int = 4  # d
    scaling_factor: float = 0.18215  # latents = posterior mean * scaling_factor (SD's convention)

    def __post_init__(self):
        blocks = tuple(self.block_out_channels)
        object.__setattr__(self, "block_out_channels", blocks)
        if not blocks or any(c < 1 or c % self.norm_num_groups for c in blocks):
            raise ValueError(f"FrameAutoencoderConfig: widths must be positive multiples of norm_num_groups "
                             f"({self.norm_num_groups}), got {blocks}")
        if self.image_size % 2 ** (len(blocks) - 1) or not self.scaling_factor > 0:
            raise ValueError(f"FrameAutoencoderConfig: image_size {self.image_size} must be divisible by "
                             f"{2 ** (len(blocks) - 1)} and scaling_factor positive ({self.scaling_factor})")

    @property
    def downscale(self) -> int:
        """f = H / h."""
        return 2 ** (len(self.block_out_channels) - 1)

    def vae_kwargs(self) -> dict:
        return autoencoder_kl_kwargs(block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                                     latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
                                     image_size=self.image_size, scaling_factor=self.scaling_factor)


class FrameAutoencoder(nn.Module, PretrainedMixin):
    """E and the 2d-input D of FD2Talk.

    Submodule `vae`: a diffusers AutoencoderKL whose `decoder.conv_in` takes 2 x latent_channels.

    Args:
        config: a FrameAutoencoderConfig.
    """

    config_class = FrameAutoencoderConfig

    def __init__(self, config: FrameAutoencoderConfig):
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = config
        self.vae = AutoencoderKL(**config.vae_kwargs())
        old = self.vae.decoder.conv_in
        self.vae.decoder.conv_in = nn.Conv2d(2 * config.latent_channels, old.out_channels, old.kernel_size,
                                             padding=old.padding)

    @classmethod
    def from_vae(cls, vae, *, image_size: int | None = None) -> FrameAutoencoder:
        """Start from a pretrained AutoencoderKL (Down/UpDecoderBlock2D): every tensor copied, the first decoder
        convolution widened to 2d inputs with the reference half zero (so D([x, z]) = the old D(z))."""
        kwargs = vae.config
        if any(kind != "DownEncoderBlock2D" for kind in kwargs.down_block_types):
            raise ValueError("FrameAutoencoder.from_vae: the VAE must use DownEncoderBlock2D / UpDecoderBlock2D blocks "
                             f"(an SD-style AutoencoderKL), got {tuple(kwargs.down_block_types)}")
        config = FrameAutoencoderConfig(image_size=int(image_size or kwargs.sample_size),
                                        block_out_channels=tuple(kwargs.block_out_channels),
                                        layers_per_block=int(kwargs.layers_per_block),
                                        norm_num_groups=int(kwargs.norm_num_groups),
                                        latent_channels=int(kwargs.latent_channels),
                                        scaling_factor=float(getattr(kwargs, "scaling_factor", 0.18215)))
        model = cls(config)
        state = {k: v for k, v in vae.state_dict().items() if not k.startswith("decoder.conv_in.")}
        missing, unexpected = model.vae.load_state_dict(state, strict=False)
        if unexpected or sorted(missing) != ["decoder.conv_in.bias", "decoder.conv_in.weight"]:
            raise ValueError(f"FrameAutoencoder.from_vae: the VAE does not match its own config (missing {missing}, "
                             f"unexpected {unexpected})")
        old = vae.decoder.conv_in
        d = config.latent_channels
        with torch.no_grad():
            model.vae.decoder.conv_in.weight.zero_()
            model.vae.decoder.conv_in.weight[:, d:] = old.weight.to(model.vae.decoder.conv_in.weight)
            model.vae.decoder.conv_in.bias.copy_(old.bias)
        return model

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """E: images (B, 3, H, W) in [-1, 1] -> scaled latents (B, d, H/f, W/f) (posterior mean x scale)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FrameAutoencoder.encode: images must be (B, 3, H, W), got {tuple(images.shape)}")
        return self.vae.encode(images).latent_dist.mean * self.config.scaling_factor

    def decode(self, reference: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """D([x, J]): reference latent x and frame latent J, both (B, d, h, w) scaled -> (B, 3, H, W) in ~[-1, 1]."""
        if reference.shape != latent.shape or latent.ndim != 4 or latent.shape[1] != self.config.latent_channels:
            raise ValueError(f"FrameAutoencoder.decode: reference {tuple(reference.shape)} and latent "
                             f"{tuple(latent.shape)} must both be (B, {self.config.latent_channels}, h, w)")
        vae, scale = self.vae, self.config.scaling_factor
        # 1. each half through post_quant_conv, as the pretrained decoder sees a latent
        both = vae.post_quant_conv(torch.cat([reference, latent]) / scale)
        reference, latent = both.chunk(2)
        # 2. the decoder with its widened first convolution on [x, J] (eq. 13's D([E(F_1), E(F_2)]))
        return vae.decoder(torch.cat([reference, latent], dim=1))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """D([E(F_1), E(F_2)]): frames (B, 3, H, W) in [-1, 1] -> reconstruction of F_2."""
        return self.decode(self.encode(first), self.encode(second))


def reconstruction_loss(model: FrameAutoencoder, first: torch.Tensor, second: torch.Tensor, *,
                        rec_weight: float = 1.0, per_weight: float = 0.0,
                        perceptual: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. (15): rec_weight ||F_2 - D([E(F_1), E(F_2)])||^2 (eq. 13, mean) + per_weight LPIPS (eq. 14's
    perceptual term [56], when a `perceptual` module is given). first, second: (B, 3, H, W) in [-1, 1]."""
    recon = model(first, second)
    mse = (recon - second).square().mean()
    loss = rec_weight * mse
    scalars = {"mse": float(mse.detach()), "psnr": float(10 * torch.log10(4.0 / mse.detach().clamp_min(1e-12)))}
    if perceptual is not None and per_weight > 0:
        per = perceptual(recon, second).mean()
        loss = loss + per_weight * per
        scalars["lpips"] = float(per.detach())
    return loss, scalars
