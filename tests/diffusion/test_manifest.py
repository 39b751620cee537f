"""Names and shapes of the SINGER stack vs the official checkpoints (net.pth, SD1.5 UNet, mm_sd_v15_v2).

The expected names come from `singer_core.diffusion.manifest`, a plain-Python enumeration of the naming
rules of the official Hallo/SINGER model definitions (never from our modules); the full-size models are
built on the meta device (no memory).
"""

from __future__ import annotations

import collections

import pytest
import torch

from singer_core.diffusion import (
    DiffusionConfig,
    SingerNet,
    load_motion_module,
    load_net_pth,
    load_sd15_unet,
)
from singer_core.diffusion.loading import is_spatial_key, motion_state
from singer_core.diffusion.manifest import (
    MANIFEST_PATH,
    format_manifest,
    motion_module_manifest,
    net_pth_manifest,
    read_manifest,
    sd15_unet_manifest,
)
from singer_core.diffusion.reference import reference_unet_kwargs
from singer_core.io.checkpoint import save_tensors


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def assert_same(found: dict, expected: dict) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [(k, expected[k], found[k]) for k in expected if k in found and expected[k] != found[k]]
    assert not missing and not unexpected and not wrong, (missing[:5], unexpected[:5], wrong[:5])


@pytest.fixture(scope="module")
def meta_net() -> SingerNet:
    with torch.device("meta"):
        return SingerNet(DiffusionConfig.full())


def test_manifest_file_matches_rules_and_official_counts():
    manifest = read_manifest(MANIFEST_PATH)
    assert MANIFEST_PATH.read_text() == format_manifest(net_pth_manifest())
    counts = collections.Counter(name.split(".")[0] for name in manifest)
    assert counts == {"reference_unet": 682, "denoising_unet": 1949, "face_locator": 16, "imageproj": 4,
                      "audioproj": 8, "audioembed": 3}
    assert len(manifest) == 2662
    assert manifest["audioproj.proj1.weight"] == (512, 46080)
    assert manifest["audioproj.proj3.weight"] == (32 * 768, 512)
    assert manifest["denoising_unet.hidden_spectral_weighting.weight"] == (4, 1, 1280, 4, 4)
    assert manifest["audioembed.dct_layer.weight"] == (1, 4, 14, 64, 64)


def test_full_net_matches_net_pth_manifest(meta_net):
    assert_same(shapes(meta_net), read_manifest())


def test_spatial_parts_match_diffusers_sd15_unet(meta_net):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        sd15 = UNet2DConditionModel(**reference_unet_kwargs(DiffusionConfig.full()))
    sd15_shapes = shapes(sd15)
    assert_same(sd15_shapes, sd15_unet_manifest())  # the rules agree with diffusers itself
    spatial = {k: v for k, v in shapes(meta_net.denoising_unet).items() if is_spatial_key(k)}
    assert_same(spatial, sd15_shapes)
    reference = {k: v for k, v in sd15_shapes.items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    assert_same(shapes(meta_net.reference_unet), reference)


def test_motion_modules_match_mm_sd_v15_v2_layout(meta_net):
    found = {k: tuple(v.shape) for k, v in motion_state(meta_net.denoising_unet).items()}
    expected = motion_module_manifest()
    assert_same(found, expected)
    assert "mid_block.motion_modules.0.temporal_transformer.proj_out.weight" in found
    assert found["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
                 "attention_blocks.0.pos_encoder.pe"] == (1, 32, 320)


def _tiny_state(seed: int) -> tuple[DiffusionConfig, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    config = DiffusionConfig.tiny()
    net = SingerNet(config)
    state = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    return config, state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_net_pth_round_trip_and_named_errors(tmp_path, suffix):
    config, state = _tiny_state(0)
    path = tmp_path / f"net{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_tensors(path, state)
    net = load_net_pth(path, config)
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    broken = dict(state)
    del broken["audioproj.norm.bias"]
    broken["imageproj.proj.bias"] = torch.zeros(3)
    broken["extra.weight"] = torch.zeros(1)
    save_tensors(tmp_path / "broken.safetensors", broken)
    with pytest.raises(ValueError, match=r"audioproj\.norm\.bias.*extra\.weight.*imageproj\.proj\.bias"):
        load_net_pth(tmp_path / "broken.safetensors", config)


def test_load_motion_module_and_sd15_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    config, state = _tiny_state(1)
    net = SingerNet(config)
    motion = {k: v for k, v in state.items() if k.startswith("denoising_unet.") and ".motion_modules." in k}
    motion = {k.removeprefix("denoising_unet."): v for k, v in motion.items()}
    torch.save({"state_dict": motion}, tmp_path / "mm.ckpt")
    load_motion_module(tmp_path / "mm.ckpt", net)
    for name, tensor in motion_state(net.denoising_unet).items():
        assert torch.equal(tensor, motion[name]), name
    save_tensors(tmp_path / "mm_bad.safetensors", {**motion, "down_blocks.9.motion_modules.0.x": torch.zeros(1)})
    with pytest.raises(ValueError, match="down_blocks.9.motion_modules.0.x"):
        load_motion_module(tmp_path / "mm_bad.safetensors", net)

    torch.manual_seed(2)
    sd15 = UNet2DConditionModel(**reference_unet_kwargs(config))
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    save_tensors(tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors", sd15.state_dict())
    load_sd15_unet(tmp_path / "sd", net)
    sd_state = sd15.state_dict()
    for name, tensor in net.reference_unet.state_dict().items():
        assert torch.equal(tensor, sd_state[name]), name
    for name, tensor in net.denoising_unet.state_dict().items():
        if is_spatial_key(name):
            assert torch.equal(tensor, sd_state[name]), name
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        load_sd15_unet(tmp_path, net)
