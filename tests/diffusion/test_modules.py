"""Behaviour of the SINGER denoising stack on the tiny configuration (CPU), against independent references:
diffusers' own UNet2DConditionModel (inflation), a float64 loop (AnimateDiff motion module), closed-form
properties of reference attention and of the audio region masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from singer_core.diffusion import DiffusionConfig, RegionMasks, SingerNet, load_sd15_state
from singer_core.diffusion.audio_modules import AudioTransformer
from singer_core.diffusion.motion_module import VanillaTemporalModule
from singer_core.diffusion.reference import reference_unet_kwargs
from singer_core.diffusion.unet3d import SpectralModulePlaceholder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def sd15_net(seed: int, **overrides) -> tuple[SingerNet, torch.nn.Module]:
    """A tiny SingerNet whose UNets carry the weights of a random diffusers UNet2DConditionModel."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    config = DiffusionConfig(**{**DiffusionConfig.tiny().__dict__, **overrides})
    sd15 = UNet2DConditionModel(**reference_unet_kwargs(config)).eval()
    net = SingerNet(config).eval()
    load_sd15_state(net, sd15.state_dict(), source="test")
    return net, sd15


def test_config_json_round_trip_and_errors():
    config = DiffusionConfig.tiny()
    assert DiffusionConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        DiffusionConfig.from_json('{"blocks": 3}')
    with pytest.raises(ValueError, match="divide"):
        DiffusionConfig(block_out_channels=(320, 640, 1280, 1000))


def test_inflated_unet_equals_diffusers_unet_per_frame():
    net, sd15 = sd15_net(0, use_sfm=False)
    batch, frames, size = 2, 3, 16
    sample = torch.randn(batch, 4, frames, size, size)
    tokens = torch.randn(batch, 2, net.config.cross_attention_dim)
    timestep = torch.tensor([10, 700])
    with torch.no_grad():
        ours = net.denoising_unet(sample, timestep, tokens)  # audio None: audio modules skipped; motion = identity
        flat = sample.transpose(1, 2).flatten(0, 1)
        theirs = sd15(flat, timestep.repeat_interleave(frames), tokens.repeat_interleave(frames, 0)).sample
    theirs = theirs.view(batch, frames, 4, size, size).transpose(1, 2)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_reference_attention_duplicate_keys_and_dropping():
    net, _ = sd15_net(1, use_sfm=False)
    control = net.reference_control
    batch, frames, size = 1, 2, 16
    reference = torch.randn(batch, 4, size, size)
    tokens = torch.randn(batch, 2, net.config.cross_attention_dim)
    timestep = torch.tensor([300])

    def run(ref: torch.Tensor, frames_latents: torch.Tensor, keep=None) -> torch.Tensor:
        with control.write():
            net.reference_unet(ref, timestep, encoder_hidden_states=tokens)
        control.read(frames, keep)
        try:
            return net.denoising_unet(frames_latents, timestep, tokens)
        finally:
            control.clear()

    with torch.no_grad():
        same = reference[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()
        plain = net.denoising_unet(same, timestep, tokens)
        # every frame equals the reference: keys [x, x] give the same softmax average as [x]
        torch.testing.assert_close(run(reference, same), plain, atol=2e-5, rtol=1e-4)
        other = torch.randn(batch, 4, frames, size, size)
        with_reference = run(reference, other)
        assert (with_reference - net.denoising_unet(other, timestep, tokens)).abs().max() > 1e-3
        dropped = run(reference, other, keep=torch.tensor([False]))
        torch.testing.assert_close(dropped, net.denoising_unet(other, timestep, tokens), atol=1e-6, rtol=1e-5)


def naive_motion_module(module: VanillaTemporalModule, hidden: torch.Tensor, frames: int) -> torch.Tensor:
    """float64 loop over samples, pixels and heads of the AnimateDiff temporal transformer."""
    tt = module.temporal_transformer
    p = {k: v.double() for k, v in tt.state_dict().items()}
    x = hidden.double()
    total, channels, height, width = x.shape
    groups = tt.norm.num_groups
    g = x.view(total, groups, -1)
    normed = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + 1e-6)).view_as(x)
    normed = normed * p["norm.weight"][:, None, None] + p["norm.bias"][:, None, None]
    out = torch.zeros_like(x)
    block = "transformer_blocks.0."
    heads = module.temporal_transformer.transformer_blocks[0].attention_blocks[0].heads
    head_dim = channels // heads

    def layer_norm(v, name):
        return (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + 1e-5) \
            * p[name + ".weight"] + p[name + ".bias"]

    for b in range(total // frames):
        for i in range(height):
            for j in range(width):
                seq = normed[b * frames:(b + 1) * frames, :, i, j] @ p["proj_in.weight"].T + p["proj_in.bias"]
                for a in range(2):
                    name = f"{block}attention_blocks.{a}."
                    z = layer_norm(seq, f"{block}norms.{a}")
                    pe = torch.tensor([[math.sin(t / 10000 ** (c / channels)) if c % 2 == 0 else
                                        math.cos(t / 10000 ** ((c - 1) / channels)) for c in range(channels)]
                                       for t in range(frames)], dtype=torch.float64)
                    z = z + pe
                    q, k, v = (z @ p[name + n + ".weight"].T for n in ("to_q", "to_k", "to_v"))
                    att = torch.zeros_like(q)
                    for h in range(heads):
                        s = slice(h * head_dim, (h + 1) * head_dim)
                        w = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(head_dim), dim=-1)
                        att[:, s] = w @ v[:, s]
                    seq = seq + att @ p[name + "to_out.0.weight"].T + p[name + "to_out.0.bias"]
                z = layer_norm(seq, f"{block}ff_norm")
                proj = z @ p[f"{block}ff.net.0.proj.weight"].T + p[f"{block}ff.net.0.proj.bias"]
                value, gate = proj.chunk(2, dim=-1)
                gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))
                seq = seq + (value * gelu) @ p[f"{block}ff.net.2.weight"].T + p[f"{block}ff.net.2.bias"]
                res = seq @ p["proj_out.weight"].T + p["proj_out.bias"]
                out[b * frames:(b + 1) * frames, :, i, j] = res
    return out + x


def test_motion_module_matches_float64_loop():
    torch.manual_seed(3)
    module = VanillaTemporalModule(8, heads=2, attention_blocks=2, max_len=6, norm_groups=2)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)
        frames = 5
        hidden = torch.randn(2 * frames, 8, 2, 3)
        ours = module(hidden, frames)
    torch.testing.assert_close(ours.double(), naive_motion_module(module, hidden, frames), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="frames"):
        module(torch.randn(7, 8, 2, 2), 7)


def test_region_masks_pyramid_is_block_mean():
    rng = np.random.default_rng(0)
    full = rng.random((2, 3, 16, 8))
    masks = RegionMasks.from_latent_masks(torch.tensor(full), torch.tensor(full[:, :1]), torch.ones(2, 1, 16, 8))
    for depth in range(4):
        s = 2 ** depth
        expected = full.reshape(2, 3, 16 // s, s, 8 // s, s).mean(axis=(3, 5)).reshape(6, -1)
        np.testing.assert_allclose(masks.full[depth].numpy(), expected, atol=1e-6)
        assert masks.face[depth].shape == (6, (16 // s) * (8 // s))


def test_audio_module_ignores_audio_outside_the_masks():
    torch.manual_seed(4)
    module = AudioTransformer(16, 8, heads=2, audio_dim=6, norm_groups=4)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)
        hidden = torch.randn(3, 16, 4, 4)
        region = torch.zeros(3, 16)
        region[:, :5] = 1.0  # pixels 0..4 inside the face, the rest outside every mask
        masks = (region, region * 0.5, region)
        first = module(hidden, torch.randn(3, 7, 6), masks, (1.0, 2.0, 0.5))
        second = module(hidden, torch.randn(3, 7, 6), masks, (1.0, 2.0, 0.5))
    first, second = first.flatten(2), second.flatten(2)
    torch.testing.assert_close(first[:, :, 5:], second[:, :, 5:])
    assert (first[:, :, :5] - second[:, :, :5]).abs().max() > 1e-3


def test_tiny_singer_net_forward_and_motion_frames():
    torch.manual_seed(5)
    config = DiffusionConfig.tiny()
    net = SingerNet(config).eval()
    try:
        from singer_core.spectral.msm import MultiScaleSpectralModule  # noqa: F401
        from singer_core.spectral.sfm import SelfAdaptiveFilterModule  # noqa: F401
        assert not isinstance(net.denoising_unet.hidden_spectral_weighting, SpectralModulePlaceholder)
        assert not isinstance(net.audioembed, SpectralModulePlaceholder)
    except ImportError:
        pass
    with torch.no_grad():  # motion modules start as the identity: give them weights
        for module in net.denoising_unet.modules():
            if isinstance(module, VanillaTemporalModule):
                module.temporal_transformer.proj_out.weight.normal_(0, 0.1)
    batch, frames, size = 2, 3, 16
    latents = torch.randn(batch, 4, frames, size, size)
    inputs = dict(face_embedding=torch.randn(batch, config.face_embedding_dim),
                  audio_windows=torch.randn(batch, frames, config.audio_seq_len, config.audio_blocks,
                                            config.audio_channels),
                  face_mask_image=torch.rand(batch, 3, 8 * size, 8 * size), motion_scale=(1.0, 0.5, 2.0),
                  msm_latents=latents)
    reference = torch.randn(batch, 3, 4, size, size)  # 1 reference image + 2 motion frames
    with torch.no_grad():
        out = net.predict(latents, torch.tensor([900, 20]), reference_latents=reference, **inputs)
        again = net.predict(latents, torch.tensor([900, 20]), reference_latents=reference, **inputs)
        no_motion = net.predict(latents, torch.tensor([900, 20]), reference_latents=reference[:, :1], **inputs)
    assert out.shape == (batch, 4, frames, size, size) and torch.isfinite(out).all()
    torch.testing.assert_close(out, again)
    assert (out - no_motion).abs().max() > 1e-4  # the motion frames reach the mid-block motion module
    with pytest.raises(ValueError, match="divisible by 8"):
        net.denoising_unet(torch.randn(1, 4, 1, 12, 12), 1, torch.randn(1, 2, config.cross_attention_dim))


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(6)
    net = SingerNet(DiffusionConfig.tiny())
    net.save_pretrained(tmp_path / "singer")
    loaded = SingerNet.from_pretrained(tmp_path / "singer")
    assert loaded.config == net.config
    loaded_state = loaded.state_dict()
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, loaded_state[name]), name


def diffusers_ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                         steps_offset=1, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                         timestep_spacing="trailing")


def test_schedule_and_ddim_match_diffusers_scheduler():
    from singer_core.ops.noise_schedule import NoiseSchedule, q_sample, sample_ddim, v_target

    reference = diffusers_ddim()
    schedule = NoiseSchedule()
    cumprod = schedule.alphas_cumprod
    torch.testing.assert_close(cumprod.float(), reference.alphas_cumprod, atol=1e-6, rtol=1e-5)
    assert cumprod[-1] == 0.0
    reference.set_timesteps(40)
    assert schedule.timesteps(40)[:, 0].tolist() == reference.timesteps.tolist()
    x0, noise, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 500, 999])
    torch.testing.assert_close(q_sample(x0, noise, t, cumprod), reference.add_noise(x0, noise, t))
    torch.testing.assert_close(v_target(x0, noise, t, cumprod), reference.get_velocity(x0, noise, t))

    weight = torch.randn(4, 4) * 0.3

    def model(x, t):  # a fixed, time-dependent toy network
        return torch.einsum("ij,bjhw->bihw", weight, x) * (1 + float(t) / 1000)

    start = torch.randn(2, 4, 3, 3)
    calls = []
    ours = sample_ddim(model, start, schedule.timesteps(40), schedule=schedule,
                       callback=lambda done, total: calls.append(done))
    x = start.clone()
    for t in reference.timesteps:
        x = reference.step(model(x, t), t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)
    assert calls == list(range(1, 41))


def test_sample_clip_runs_with_guidance_and_stops_on_progress_error():
    from singer_core.diffusion.sampling import sample_clip

    torch.manual_seed(7)
    config = DiffusionConfig.tiny()
    net = SingerNet(config).eval()
    batch, frames, size = 1, 2, 16
    kwargs = dict(reference_latents=torch.randn(batch, 3, 4, size, size),
                  face_embedding=torch.randn(batch, config.face_embedding_dim),
                  audio_windows=torch.randn(batch, frames, config.audio_seq_len, config.audio_blocks,
                                            config.audio_channels),
                  face_mask_image=torch.rand(batch, 3, 8 * size, 8 * size), steps=3)
    noise = torch.randn(batch, 4, frames, size, size)
    out = sample_clip(net, noise, **kwargs)
    assert out.shape == noise.shape and torch.isfinite(out).all()
    torch.testing.assert_close(sample_clip(net, noise, **kwargs), out)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_clip(net, noise, progress=stop, **kwargs)
    assert all(not reader.bank for _, reader in net.reference_control.pairs)  # banks cleared after the stop


def test_sample_long_chains_clips_and_reports_progress():
    from singer_core.diffusion.sampling import sample_clip, sample_long

    torch.manual_seed(8)
    config = DiffusionConfig.tiny()
    net = SingerNet(config).eval()
    size, frames = 16, 5
    portrait = torch.randn(1, 4, size, size)
    face = torch.randn(1, config.face_embedding_dim)
    audio = torch.randn(1, frames, config.audio_seq_len, config.audio_blocks, config.audio_channels)
    calls = []
    out = sample_long(net, reference_latent=portrait, face_embedding=face, audio_windows=audio, clip_frames=2,
                      motion_frames=2, steps=2, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert out.shape == (1, 4, frames, size, size)
    assert calls == [(k, 6) for k in range(1, 7)]
    # clip 2 equals one sample_clip call conditioned on the last two frames of clip 1
    noise = torch.randn(1, 4, 2, size, size, generator=torch.Generator().manual_seed(4))
    references = torch.cat([portrait[:, None], out[:, :, 0:2].transpose(1, 2)], dim=1)
    second = sample_clip(net, noise, reference_latents=references, face_embedding=face,
                         audio_windows=audio[:, 2:4], steps=2)
    torch.testing.assert_close(out[:, :, 2:4], second)


def test_sample_long_reencodes_motion_frames_before_the_next_clip():
    from singer_core.diffusion.sampling import sample_clip, sample_long

    torch.manual_seed(9)
    config = DiffusionConfig.tiny()
    net = SingerNet(config).eval()
    size = 16
    portrait = torch.randn(1, 4, size, size)
    face = torch.randn(1, config.face_embedding_dim)
    audio = torch.randn(1, 4, config.audio_seq_len, config.audio_blocks, config.audio_channels)
    seen = []

    def round_trip(latents):  # stands in for the VAE decode + encode: any map the next clip must read
        seen.append(latents.clone())
        return latents.flip(-1) * 0.5

    out = sample_long(net, reference_latent=portrait, face_embedding=face, audio_windows=audio, clip_frames=2,
                      motion_frames=2, steps=2, seed=3, reencode=round_trip)
    assert len(seen) == 1 and seen[0].shape == (2, 4, size, size)  # once, between the two clips
    torch.testing.assert_close(seen[0], out[0, :, 0:2].transpose(0, 1))
    noise = torch.randn(1, 4, 2, size, size, generator=torch.Generator().manual_seed(4))
    references = torch.cat([portrait[:, None], (out[:, :, 0:2].transpose(1, 2).flip(-1) * 0.5)], dim=1)
    second = sample_clip(net, noise, reference_latents=references, face_embedding=face,
                         audio_windows=audio[:, 2:4], steps=2)
    torch.testing.assert_close(out[:, :, 2:4], second)
