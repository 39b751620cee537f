"""Expected tensor names and shapes of the official SINGER `net.pth`, the SD1.5 UNet and AnimateDiff
`mm_sd_v15_v2.ckpt`, enumerated from the naming rules of the official model definitions.

Derivation (read, not copied): Hallo `hallo/models/unet_3d.py`, `unet_3d_blocks.py`, `transformer_3d.py`,
`attention.py`, `motion_module.py`, `face_locator.py`, `image_proj.py`, `audio_proj.py`, SINGER
`models/models/unet_3d_revised.py` + `audio_spectral_embed.py`, and SINGER `configs/inference/inference.yaml`
(`use_audio_module`, `stack_enable_blocks_name: [up, down, mid]`, `stack_enable_blocks_depth: [0,1,2,3]`,
Vanilla motion modules with 8 heads, 2 `Temporal_Self` blocks, `num_transformer_block: 1`, position
table 32, `motion_module_mid_block: true`, `use_landmark=False` so 4 input channels). This module uses
plain Python only and never our model classes, so it is an independent check of them.
`python -m singer_core.diffusion.manifest` rewrites `manifest_net_pth.txt` next to this file.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
MANIFEST_PATH = Path(__file__).with_name("manifest_net_pth.txt")

WIDTHS = (320, 640, 1280, 1280)  # SD1.5 block_out_channels
LAYERS = 2  # layers_per_block
HEADS = 8  # SD1.5 "attention_head_dim" (really heads)
TEMB = 4 * WIDTHS[0]
CROSS = 768  # cross_attention_dim
AUDIO = 768  # audio_attention_dim
MOTION_MAX_LEN = 32


def _linear(out: dict[str, Shape], name: str, n_out: int, n_in: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (n_out, n_in)
    if bias:
        out[f"{name}.bias"] = (n_out,)


def _conv(out: dict[str, Shape], name: str, n_out: int, n_in: int, kernel: int) -> None:
    out[f"{name}.weight"] = (n_out, n_in, kernel, kernel)
    out[f"{name}.bias"] = (n_out,)


def _norm(out: dict[str, Shape], name: str, channels: int) -> None:
    out[f"{name}.weight"] = (channels,)
    out[f"{name}.bias"] = (channels,)


def _attention(out: dict[str, Shape], name: str, dim: int, context: int) -> None:
    """diffusers `Attention(bias=False)`: to_q/to_k/to_v without bias, to_out.0 with bias."""
    _linear(out, f"{name}.to_q", dim, dim, bias=False)
    _linear(out, f"{name}.to_k", dim, context, bias=False)
    _linear(out, f"{name}.to_v", dim, context, bias=False)
    _linear(out, f"{name}.to_out.0", dim, dim)


def _geglu(out: dict[str, Shape], name: str, dim: int) -> None:
    """diffusers `FeedForward(dim, activation_fn="geglu")`: net.0.proj dim -> 2*4*dim, net.2 4*dim -> dim."""
    _linear(out, f"{name}.net.0.proj", 8 * dim, dim)
    _linear(out, f"{name}.net.2", dim, 4 * dim)


def _resnet(out: dict[str, Shape], name: str, n_in: int, n_out: int) -> None:
    _norm(out, f"{name}.norm1", n_in)
    _conv(out, f"{name}.conv1", n_out, n_in, 3)
    _linear(out, f"{name}.time_emb_proj", n_out, TEMB)
    _norm(out, f"{name}.norm2", n_out)
    _conv(out, f"{name}.conv2", n_out, n_out, 3)
    if n_in != n_out:
        _conv(out, f"{name}.conv_shortcut", n_out, n_in, 1)


def _spatial_transformer(out: dict[str, Shape], name: str, channels: int) -> None:
    """Transformer3DModel / Transformer2DModel (conv proj) with one basic block: attn1, attn2, ff."""
    _norm(out, f"{name}.norm", channels)
    _conv(out, f"{name}.proj_in", channels, channels, 1)
    block = f"{name}.transformer_blocks.0"
    _attention(out, f"{block}.attn1", channels, channels)
    _norm(out, f"{block}.norm1", channels)
    _attention(out, f"{block}.attn2", channels, CROSS)
    _norm(out, f"{block}.norm2", channels)
    _geglu(out, f"{block}.ff", channels)
    _norm(out, f"{block}.norm3", channels)
    _conv(out, f"{name}.proj_out", channels, channels, 1)


def _audio_module(out: dict[str, Shape], name: str, channels: int, inner: int) -> None:
    """Transformer3DModel(use_audio_module) with AudioTemporalBasicTransformerBlock, stacked attn2_0..2."""
    _norm(out, f"{name}.norm", channels)
    _conv(out, f"{name}.proj_in", inner, channels, 1)
    block = f"{name}.transformer_blocks.0"
    for part in ("full", "face", "lip"):
        _conv(out, f"{block}.zero_conv_{part}", inner, inner, 1)
    _attention(out, f"{block}.attn1", inner, inner)
    _norm(out, f"{block}.norm1", inner)
    for index in range(3):
        _attention(out, f"{block}.attn2_{index}", inner, AUDIO)
    _norm(out, f"{block}.norm2", inner)
    _geglu(out, f"{block}.ff", inner)
    _norm(out, f"{block}.norm3", inner)
    _conv(out, f"{name}.proj_out", channels, inner, 1)


def _motion_module(out: dict[str, Shape], name: str, channels: int) -> None:
    """VanillaTemporalModule -> TemporalTransformer3DModel: norm, proj_in, 1 block of 2 temporal attns."""
    base = f"{name}.temporal_transformer"
    _norm(out, f"{base}.norm", channels)
    _linear(out, f"{base}.proj_in", channels, channels)
    block = f"{base}.transformer_blocks.0"
    for index in range(2):
        _attention(out, f"{block}.attention_blocks.{index}", channels, channels)
        out[f"{block}.attention_blocks.{index}.pos_encoder.pe"] = (1, MOTION_MAX_LEN, channels)
        _norm(out, f"{block}.norms.{index}", channels)
    _geglu(out, f"{block}.ff", channels)
    _norm(out, f"{block}.ff_norm", channels)
    _linear(out, f"{base}.proj_out", channels, channels)


def sd15_unet_manifest() -> dict[str, Shape]:
    """The 686 tensors of the SD1.5 diffusers `UNet2DConditionModel` (4 in / 4 out channels)."""
    return _unet(motion=False, audio=False)


def motion_module_manifest() -> dict[str, Shape]:
    """The 588 tensors of AnimateDiff `mm_sd_v15_v2.ckpt` (21 modules incl. the mid block)."""
    out: dict[str, Shape] = {}
    for depth, width in enumerate(WIDTHS):
        for layer in range(LAYERS):
            _motion_module(out, f"down_blocks.{depth}.motion_modules.{layer}", width)
    _motion_module(out, "mid_block.motion_modules.0", WIDTHS[-1])
    for index, width in enumerate(WIDTHS[::-1]):
        for layer in range(LAYERS + 1):
            _motion_module(out, f"up_blocks.{index}.motion_modules.{layer}", width)
    return out


def _unet(motion: bool, audio: bool) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    _conv(out, "conv_in", WIDTHS[0], 4, 3)
    _linear(out, "time_embedding.linear_1", TEMB, WIDTHS[0])
    _linear(out, "time_embedding.linear_2", TEMB, TEMB)
    # down blocks: CrossAttnDownBlock3D x 3, DownBlock3D; audio modules sized by the layer input width
    previous = WIDTHS[0]
    for depth, width in enumerate(WIDTHS):
        for layer in range(LAYERS):
            n_in = previous if layer == 0 else width
            _resnet(out, f"down_blocks.{depth}.resnets.{layer}", n_in, width)
            if depth < 3:
                _spatial_transformer(out, f"down_blocks.{depth}.attentions.{layer}", width)
                if audio:
                    _audio_module(out, f"down_blocks.{depth}.audio_modules.{layer}", width, n_in)
        if depth < 3:
            _conv(out, f"down_blocks.{depth}.downsamplers.0.conv", width, width, 3)
        previous = width
    # mid block
    mid = WIDTHS[-1]
    _resnet(out, "mid_block.resnets.0", mid, mid)
    _spatial_transformer(out, "mid_block.attentions.0", mid)
    if audio:
        _audio_module(out, "mid_block.audio_modules.0", mid, mid)
    _resnet(out, "mid_block.resnets.1", mid, mid)
    # up blocks: UpBlock3D, CrossAttnUpBlock3D x 3; audio modules sized by the block input width
    reversed_widths = WIDTHS[::-1]
    previous = reversed_widths[0]
    for index, width in enumerate(reversed_widths):
        block_in = reversed_widths[min(index + 1, 3)]
        for layer in range(LAYERS + 1):
            skip = block_in if layer == LAYERS else width
            n_in = previous if layer == 0 else width
            _resnet(out, f"up_blocks.{index}.resnets.{layer}", n_in + skip, width)
            if index > 0:
                _spatial_transformer(out, f"up_blocks.{index}.attentions.{layer}", width)
                if audio:
                    _audio_module(out, f"up_blocks.{index}.audio_modules.{layer}", width, block_in)
        if index < 3:
            _conv(out, f"up_blocks.{index}.upsamplers.0.conv", width, width, 3)
        previous = width
    _norm(out, "conv_norm_out", WIDTHS[0])
    _conv(out, "conv_out", 4, WIDTHS[0], 3)
    if motion:
        out.update(motion_module_manifest())
    return out


def net_pth_manifest() -> dict[str, Shape]:
    """All 2,662 tensors of SINGER `net.pth`, name -> shape."""
    out: dict[str, Shape] = {}
    sd15 = sd15_unet_manifest()
    for name, shape in sd15.items():
        if not name.startswith(("conv_norm_out.", "conv_out.")):
            out[f"reference_unet.{name}"] = shape
    for name, shape in _unet(motion=True, audio=True).items():
        out[f"denoising_unet.{name}"] = shape
    # SINGER SFM: hidden_spectral_weighting(4, block_out_channels[-1], attention_head_dim[-1] = 8)
    out["denoising_unet.hidden_spectral_weighting.weight"] = (4, 1, WIDTHS[-1], 4, 4)
    out["denoising_unet.hidden_spectral_weighting.fc.0.weight"] = (4, 8)
    out["denoising_unet.hidden_spectral_weighting.fc.2.weight"] = (8, 4)
    # FaceLocator(320, 3, (16, 32, 64, 128))
    locator = (16, 32, 64, 128)
    face: dict[str, Shape] = {}
    _conv(face, "conv_in", locator[0], 3, 3)
    for index, (n_in, n_out) in enumerate(zip(locator[:-1], locator[1:], strict=True)):
        _conv(face, f"blocks.{2 * index}", n_in, n_in, 3)
        _conv(face, f"blocks.{2 * index + 1}", n_out, n_in, 3)
    _conv(face, "conv_out", WIDTHS[0], locator[-1], 3)
    out.update({f"face_locator.{name}": shape for name, shape in face.items()})
    # ImageProjModel(768, 512, 4)
    out["imageproj.proj.weight"] = (4 * CROSS, 512)
    out["imageproj.proj.bias"] = (4 * CROSS,)
    out["imageproj.norm.weight"] = (CROSS,)
    out["imageproj.norm.bias"] = (CROSS,)
    # AudioProjModel(seq_len=5, blocks=12, channels=768, intermediate_dim=512, output_dim=768, context_tokens=32)
    out["audioproj.proj1.weight"] = (512, 5 * 12 * 768)
    out["audioproj.proj1.bias"] = (512,)
    out["audioproj.proj2.weight"] = (512, 512)
    out["audioproj.proj2.bias"] = (512,)
    out["audioproj.proj3.weight"] = (32 * AUDIO, 512)
    out["audioproj.proj3.bias"] = (32 * AUDIO,)
    out["audioproj.norm.weight"] = (AUDIO,)
    out["audioproj.norm.bias"] = (AUDIO,)
    # SINGER MSM: MultiSpectralAttentionLayer(1, 14, 4, 64, 64), chunk 4 -> FC 4 -> 2 -> 1
    out["audioembed.dct_layer.weight"] = (1, 4, 14, 64, 64)
    out["audioembed.fc.0.weight"] = (2, 4)
    out["audioembed.fc.2.weight"] = (1, 2)
    return out


def format_manifest(manifest: dict[str, Shape]) -> str:
    """One `name<TAB>d0,d1,...` line per tensor, sorted by name."""
    return "".join(f"{name}\t{','.join(str(d) for d in shape)}\n" for name, shape in sorted(manifest.items()))


def read_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, Shape]:
    """Parse a manifest file written by `format_manifest`."""
    out: dict[str, Shape] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            name, dims = line.split("\t")
            out[name] = tuple(int(d) for d in dims.split(","))
        except ValueError as error:
            raise ValueError(f"read_manifest: '{path}' line {number} is not 'name<TAB>d0,d1,...': {line!r}") from error
    return out


if __name__ == "__main__":
    MANIFEST_PATH.write_text(format_manifest(net_pth_manifest()))
    print(f"wrote {MANIFEST_PATH}")
