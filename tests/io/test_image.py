"""The image converters of singer_core/io/image.py (the nodes reach them through nodes/comfy_bridge.py) against
float64 closed forms, and the portrait's whole way from an IMAGE batch to the VAE's input: what the VAE encoder
receives equals a direct float64 crop + area resize + normalisation of the portrait (node path: the IMAGE
converter the node calls, then the pipeline; library path: numpy float and uint8 portraits)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from singer_core.io.image import (
    from_model,
    portrait_from_batch,
    rgb_channels,
    to_model,
    to_uint8,
    to_unit,
    unit_array,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _unit_values(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 values (k + d) / 255 with |d| <= 0.4 (so round(x * 255) = k exactly), some outside 0..1, and k."""
    rng = np.random.default_rng(seed)
    k = rng.integers(-20, 276, size=shape)
    x = ((k + rng.uniform(-0.4, 0.4, size=shape)) / 255.0).astype(np.float32)
    return x, np.clip(k, 0, 255).astype(np.uint8)


def test_uint8_and_unit_converters_match_closed_forms():
    x, expected = _unit_values((3, 5, 7, 3), seed=0)
    np.testing.assert_array_equal(to_uint8(x), expected)
    np.testing.assert_array_equal(to_uint8(torch.from_numpy(x)), expected)  # torch in, same numbers
    np.testing.assert_array_equal(to_uint8(torch.from_numpy(x).half()), to_uint8(x.astype(np.float16)))
    every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    assert to_uint8(every) is every  # uint8 passes through
    unit = to_unit(every)
    assert unit.dtype == torch.float32
    np.testing.assert_allclose(unit.numpy(), every.astype(np.float64) / 255.0, rtol=0, atol=6e-8)
    np.testing.assert_array_equal(to_uint8(unit), every)  # exact round trip for every byte value
    assert torch.equal(to_unit(torch.from_numpy(every)), unit)
    with pytest.raises(ValueError, match="expected uint8 images"):
        to_unit(np.zeros((2, 2, 3), dtype=np.float32))


def test_model_layout_converters_match_closed_forms():
    rng = np.random.default_rng(1)
    unit = rng.uniform(0, 1, size=(2, 6, 5, 3)).astype(np.float32)
    pixels = to_model(unit)
    assert tuple(pixels.shape) == (2, 3, 6, 5)
    np.testing.assert_allclose(pixels.numpy(), unit.astype(np.float64).transpose(0, 3, 1, 2) * 2 - 1, atol=1e-7)
    assert tuple(to_model(unit[0]).shape) == (1, 3, 6, 5)  # one (H, W, 3) image gets a batch axis
    signed = torch.from_numpy(rng.uniform(-1.3, 1.3, size=(2, 3, 6, 5))).to(torch.bfloat16)
    back = from_model(signed)
    assert back.dtype == torch.float32 and tuple(back.shape) == (2, 6, 5, 3)
    reference = np.clip(signed.double().numpy() / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(back.numpy(), reference, atol=1e-7)
    torch.testing.assert_close(from_model(pixels), torch.from_numpy(unit), atol=1e-7, rtol=0)


def test_channels_and_the_portrait_of_an_image_batch(caplog):
    rng = np.random.default_rng(2)
    rgba = torch.from_numpy(rng.uniform(-0.2, 1.2, size=(2, 70, 66, 4)).astype(np.float32))
    gray = rgba[..., :1]
    np.testing.assert_array_equal(rgb_channels(gray, "t").numpy(), np.repeat(gray.numpy(), 3, axis=-1))
    np.testing.assert_array_equal(rgb_channels(rgba[..., :2], "t").numpy(), np.repeat(gray.numpy(), 3, axis=-1))
    np.testing.assert_array_equal(rgb_channels(rgba, "t").numpy(), rgba.numpy()[..., :3])
    with pytest.raises(ValueError, match="t: image has 5 channels; give an RGB"):
        rgb_channels(torch.zeros(4, 4, 5), "t")
    with caplog.at_level(logging.WARNING):
        portrait = portrait_from_batch(rgba, "Node", min_side=64)
    assert "the IMAGE batch has 2 images; using the first" in caplog.text
    np.testing.assert_array_equal(portrait.numpy(), np.clip(rgba.numpy()[0, ..., :3], 0, 1))
    assert portrait.is_contiguous() and portrait.dtype == torch.float32
    assert torch.equal(portrait_from_batch(rgba[0], "Node"), portrait)  # one (H, W, C) image
    with pytest.raises(ValueError, match="Node: the portrait is 66x70 px; give at least 80 px on each side"):
        portrait_from_batch(rgba, "Node", min_side=80)
    with pytest.raises(ValueError, match=r"Node: image must be an IMAGE batch \(B, H, W, C\), got ndarray"):
        portrait_from_batch(rgba.numpy(), "Node")
    # the numpy view OpenCV code takes: no copy of a CPU float32 portrait already in 0..1
    view = unit_array(portrait, "t")
    assert np.shares_memory(view, portrait.numpy())
    np.testing.assert_array_equal(unit_array(rgba[0], "t"), np.clip(rgba.numpy()[0, ..., :3], 0, 1))
    np.testing.assert_array_equal(unit_array(to_uint8(portrait), "t"), to_uint8(portrait) / np.float32(255))
    with pytest.raises(ValueError, match=r"t: image must be \(H, W, 3\) RGB, got shape \(2, 70, 66, 4\)"):
        unit_array(rgba, "t")


# ---- the portrait's way to the VAE ---------------------------------------------------------------------------
def _area_weights(source: int, size: int) -> np.ndarray:
    """(size, source) float64 box-filter weights: output pixel u averages source [u s, (u + 1) s), s = source / size,
    each source pixel weighted by the length it overlaps (the definition of area resampling)."""
    scale = source / size
    weights = np.zeros((size, source))
    for u in range(size):
        low, high = u * scale, (u + 1) * scale
        for s in range(int(np.floor(low)), min(source, int(np.ceil(high)))):
            weights[u, s] = max(0.0, min(high, s + 1) - max(low, s))
    return weights / scale


def _reference_vae_input(portrait: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """float64 (1, 3, size, size): the square [x0, x0 + side) x [y0, y0 + side) of the (H, W, 3) portrait with
    edge pixels repeated past the border, area-resized to size, mapped to x * 2 - 1."""
    height, width = portrait.shape[:2]
    rows = np.clip(np.arange(y0, y0 + side), 0, height - 1)
    cols = np.clip(np.arange(x0, x0 + side), 0, width - 1)
    square = portrait.astype(np.float64)[rows][:, cols]
    weights = _area_weights(side, size)
    resized = np.einsum("us,vt,stc->uvc", weights, weights, square)
    return (resized * 2 - 1).transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def pipeline():
    from singer_core.diffusion import DiffusionConfig, SingerNet
    from singer_core.diffusion.pipeline import PipelineOptions, SingerPipeline
    from singer_core.diffusion.vae import tiny_vae

    torch.manual_seed(0)
    vae = tiny_vae(0)
    seen: list[torch.Tensor] = []
    vae.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    options = PipelineOptions(steps=1, dtype="fp32", device="cpu", guidance=1.0, clip_frames=2, motion_frames=0)
    return SingerPipeline.from_parts(SingerNet(DiffusionConfig.tiny()).eval(), vae, config=options), seen


# (face box, crop ratio): a square running past the top edge (side 90), one inside the image (side 72)
@pytest.mark.parametrize(("face_box", "crop_ratio"), [((20.0, 8.0, 50.0, 40.0), 1.8), ((30.0, 25.0, 40.0, 40.0), 1.8)])
def test_the_vae_receives_the_float64_crop_resize_normalize_of_the_portrait(pipeline, face_box, crop_ratio):
    from singer_core.audio.features import SingerAudioFeatures

    pipe, seen = pipeline
    generator = torch.Generator().manual_seed(3)
    features = SingerAudioFeatures(torch.randn(2, 2, 8, generator=generator), fps=25, encoder="random",
                                   sample_rate=16000, num_samples=2 * 640)
    image = torch.rand(1, 83, 97, 4, generator=generator) * 1.2 - 0.1  # an RGBA IMAGE with values past 0..1

    def vae_input(portrait):
        seen.clear()
        result = pipe(portrait, features=features, face_box=face_box, crop_ratio=crop_ratio)
        box = result.face_box
        return seen[0].double().numpy(), (int(box.x), int(box.y), int(box.w))

    node, (x0, y0, side) = vae_input(portrait_from_batch(image, "SingerSampleVideo", min_side=64))
    assert side == round(max(face_box[2:]) * crop_ratio) and side > 64  # a non-integer downscale to 64 px
    reference = _reference_vae_input(np.clip(image[0, ..., :3].double().numpy(), 0, 1), x0, y0, side, 64)
    assert node.shape == reference.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(node, reference, rtol=0, atol=2e-6)  # float32 arithmetic vs float64
    library, _ = vae_input(np.clip(image[0, ..., :3].numpy(), 0, 1))  # a numpy float portrait
    np.testing.assert_array_equal(library, node)
    portrait_u8 = to_uint8(image[0, ..., :3])
    from_bytes, _ = vae_input(portrait_u8)  # a uint8 portrait: x / 255, then the same crop
    np.testing.assert_allclose(from_bytes, _reference_vae_input(portrait_u8 / 255.0, x0, y0, side, 64),
                               rtol=0, atol=2e-6)
