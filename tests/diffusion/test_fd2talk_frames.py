"""FD2Talk stage 2: the frame Diffusion UNet (two cross-attentions, x0 prediction, DDIM through the one schedule),
the 2d-input decoder against diffusers' own decode, and the frames / frame-autoencoder trainer tasks (exact
resume, motion sampled by a motion model)."""

from __future__ import annotations

import pytest
import torch

from singer_core.diffusion.fd2talk_decoder import FrameAutoencoder, reconstruction_loss
from singer_core.diffusion.fd2talk_frames import FrameUNet, FrameUNetConfig, sample_frame_latents
from singer_core.io.checkpoint import load_tensors
from singer_core.ops.noise_schedule import NoiseSchedule, ddim_step
from singer_core.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL_UNET = dict(block_out_channels=(16, 32), norm_num_groups=4, attention_head_dim=8, condition_dim=16,
                  motion_tokens=2, sample_size=8)


def small_unet(seed=0, **overrides):
    torch.manual_seed(seed)
    return FrameUNet(FrameUNetConfig(**{**SMALL_UNET, **overrides})).eval()


def inputs(batch=3, side=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, side, side, generator=generator), torch.randint(0, 1000, (batch,), generator=generator),
            torch.randn(batch, 70, generator=generator), torch.randn(batch, 4, side, side, generator=generator))


def test_every_encoder_and_decoder_block_has_two_distinct_cross_attentions():
    unet = small_unet()
    blocks = [*unet.down_attentions, unet.mid_attention, *unet.up_attentions]
    assert len(unet.down_attentions) == 2 and len(unet.up_attentions) == 4
    for block in blocks:
        assert block.phi1 is not block.phi2
        assert block.phi1.to_k.in_features == block.phi2.to_k.in_features == 16
    concat = small_unet(condition="concat")
    assert all(not hasattr(block, "phi2") for block in concat.down_attentions)


@pytest.mark.parametrize("condition", ["dual", "concat"])
def test_frame_unet_shapes_and_dependence_on_both_conditions(condition):
    unet = small_unet(condition=condition)
    x, t, motion, reference = inputs()
    with torch.no_grad():
        out = unet(x, t, motion, reference)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert not torch.allclose(unet(x, t, motion + 1.0, reference), out, atol=1e-5)  # phi_1 is used
        assert not torch.allclose(unet(x, t, motion, reference.flip(-1)), out, atol=1e-5)  # phi_2 sees positions
        tokens = unet.condition_tokens(motion, reference)
        torch.testing.assert_close(unet(x, t, tokens=tokens), out)
    unet.set_normalization(torch.zeros(70), torch.cat([torch.ones(69), torch.zeros(1)]))  # the last never moves
    with torch.no_grad():
        moved = motion.clone()
        moved[:, -1] += 100.0
        torch.testing.assert_close(unet(x, t, moved, reference), unet(x, t, motion, reference))
    with pytest.raises(ValueError, match=r"motion must be \(B, 70\)"):
        unet(x, t, motion[:, :64], reference)
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(torch.randn(1, 4, 7, 7), t[:1], motion[:1], reference[:1])


def test_frame_unet_save_load_round_trip(tmp_path):
    unet = small_unet()
    unet.set_normalization(torch.linspace(-1, 1, 70), torch.linspace(0.5, 2, 70))
    unet.save_pretrained(tmp_path / "unet")
    loaded = FrameUNet.from_pretrained(tmp_path / "unet")
    assert loaded.config == unet.config
    x, t, motion, reference = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, motion, reference), unet(x, t, motion, reference), atol=0, rtol=0)


def test_sampler_is_deterministic_and_is_ddim_of_the_one_schedule():
    unet = small_unet()
    motion, reference = torch.randn(5, 70), torch.randn(1, 4, 8, 8)
    first = sample_frame_latents(unet, motion, reference, steps=4, seed=3, frame_batch=2)
    assert first.shape == (5, 4, 8, 8)
    torch.testing.assert_close(sample_frame_latents(unet, motion, reference, steps=4, seed=3, frame_batch=5), first)
    assert not torch.allclose(sample_frame_latents(unet, motion, reference, steps=4, seed=4), first)
    # a hand-written loop of eq. (5) over leading timesteps 750, 500, 250, 0 -> clean
    schedule = NoiseSchedule.fd2talk()
    x = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    timesteps = [750, 500, 250, 0]
    with torch.no_grad():
        for number, t in enumerate(timesteps):
            x0 = unet(x, torch.full((5,), t), motion, reference.expand(5, -1, -1, -1))
            a_prev = schedule.alpha_bar(timesteps[number + 1]) if number + 1 < 4 else 1.0
            x = ddim_step(x, x0, schedule.alpha_bar(t), a_prev)
    torch.testing.assert_close(first, x, atol=1e-5, rtol=1e-5)


def test_x0_training_step_reduces_the_loss_on_a_tiny_overfit():
    from singer_core.ops.noise_schedule import q_sample

    unet = small_unet().train()
    schedule = NoiseSchedule.fd2talk()
    x0, _, motion, reference = inputs(batch=4)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-3)
    t = torch.tensor([50, 200, 400, 600])
    noise = torch.randn(x0.shape, generator=generator)

    def loss():
        return (unet(q_sample(x0, noise, t, schedule.alphas_cumprod), t, motion, reference) - x0).square().mean()

    with torch.no_grad():
        start = float(loss())
    for _ in range(40):
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(loss()) < 0.3 * start


def tiny_vae(seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=1,
                         norm_num_groups=4, sample_size=32).eval()


def test_widened_decoder_starts_as_the_pretrained_decoder_and_round_trips(tmp_path):
    vae = tiny_vae()
    model = FrameAutoencoder.from_vae(vae).eval()
    assert model.vae.decoder.conv_in.in_channels == 8
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    scale = vae.config.scaling_factor
    with torch.no_grad():
        latent = model.encode(images)
        torch.testing.assert_close(latent, vae.encode(images).latent_dist.mean * scale)
        expected = vae.decode(latent / scale).sample  # diffusers' own decode of the frame latent
        torch.testing.assert_close(model.decode(torch.randn_like(latent), latent), expected, atol=1e-5, rtol=1e-5)
        loss, scalars = reconstruction_loss(model, images.flip(0), images)
        torch.testing.assert_close(loss, (model(images.flip(0), images) - images).square().mean())
    model.save_pretrained(tmp_path / "auto")
    loaded = FrameAutoencoder.from_pretrained(tmp_path / "auto")
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, images), model(images, images), atol=0, rtol=0)


FRAMES_RUN = dict(image_size=32, synth_clips=2, synth_seconds=0.4, synth_clips_per_identity=2, batch_size=4,
                  block_out_channels=[16, 32], norm_num_groups=4, attention_head_dim=8, condition_dim=16,
                  motion_tokens=2, lr=1e-3, warmup_steps=0, checkpoint_every=3, log_every=1)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    tiny_vae().save_pretrained(root / "vae")
    return {"root": root, "cache": root / "cache", "vae": str(root / "vae")}


def test_frames_task_resumes_exactly_and_exports_a_loadable_model(work):
    config = dict(FRAMES_RUN, autoencoder=work["vae"], steps=6)
    whole = train("frames", config=config, out=work["root"] / "whole", device="cpu", cache_dir=work["cache"],
                  quiet=True)
    part = work["root"] / "part"
    train("frames", config=config, out=part, device="cpu", cache_dir=work["cache"], quiet=True, max_steps=3)
    resumed = train("frames", config=config, out=part, device="cpu", cache_dir=work["cache"], quiet=True,
                    resume=True)
    a, b = load_tensors(whole / "unet" / "model.safetensors", finite=False), load_tensors(resumed / "unet" / "model.safetensors", finite=False)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    unet = FrameUNet.from_pretrained(whole / "unet")
    autoencoder = FrameAutoencoder.from_pretrained(whole / "autoencoder")
    assert unet.config.sample_size == 8 and autoencoder.vae.decoder.conv_in.in_channels == 8
    assert float(unet.motion_std.min()) > 0 and not torch.equal(unet.motion_std, torch.ones(70))
    assert bool(torch.isinf(unet.motion_std).any())  # coefficients SynthSinger never moves are ignored
    # the exported folder animates a portrait; the result does not depend on how frames are batched
    from singer_core.diffusion.fd2talk_portrait import animate_portrait, load_frame_model

    model = load_frame_model(whole)
    portrait, motion, calls = torch.rand(40, 48, 3), torch.randn(5, 70), []
    video = animate_portrait(model, portrait, motion, steps=2, seed=1, frame_batch=2,
                             progress=lambda done, total: calls.append((done, total)))
    assert video.shape == (5, 32, 32, 3) and 0 <= float(video.min()) and float(video.max()) <= 1
    assert calls[-1] == (10, 10) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    torch.testing.assert_close(animate_portrait(model, portrait, motion, steps=2, seed=1, frame_batch=5), video,
                               atol=2e-4, rtol=0)  # batched convolutions round differently
    with pytest.raises(FileNotFoundError, match="unet/"):
        load_frame_model(work["root"])


def test_frame_autoencoder_task_trains_from_a_vae_and_rescales(work):
    final = train("frame-autoencoder", config=dict(image_size=32, synth_clips=2, synth_seconds=0.4,
                                                   synth_clips_per_identity=2, batch_size=2, steps=2,
                                                   checkpoint_every=2, vae=work["vae"]),
                  out=work["root"] / "auto", device="cpu", cache_dir=work["cache"], quiet=True)
    model = FrameAutoencoder.from_pretrained(final)
    assert model.config.scaling_factor != pytest.approx(tiny_vae().config.scaling_factor)


def test_frames_task_takes_its_motion_from_a_motion_model(work):
    from singer_core.motion.generator import MotionModel, MotionModelConfig
    from singer_core.train.config import resolve_config
    from singer_core.train.frame_data import load_frame_clips
    from singer_core.train.frames import FramesTask
    from singer_core.train.loop import seed_everything

    torch.manual_seed(0)
    folder = work["root"] / "motion_model"
    MotionModel(MotionModelConfig(width=16, layers=1, heads=2, time_dim=8, frames=8)).save_pretrained(folder)
    config = resolve_config(FramesTask, "tiny", dict(FRAMES_RUN, autoencoder=work["vae"], motion_model=str(folder),
                                                     motion_steps=2))
    seed_everything(0)
    parts = FramesTask().build(config, None, work["cache"], torch.device("cpu"))
    data = parts.data
    clips = load_frame_clips(config.dataset(None, work["cache"]), "train", 32)
    assert len(data.motion) == len(clips) and data.motion[0].shape == clips[0].motion.shape
    assert not torch.allclose(data.motion[0], clips[0].motion)  # sampled, not the ground truth
