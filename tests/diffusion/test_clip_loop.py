"""Clip-by-clip SINGER sampling (singer_core.diffusion.clip_loop) on a tiny random stack: the official plan
equals sampling.sample_long clip for clip, the reference-bank cache equals recomputing the banks, guidance
runs on the asked share of the steps, per-clip audio windows equal the padded song windows, and a 60 s
song streams through the pipeline within 10 % of the peak RSS of a 10 s song."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from singer_core.audio.frames import frame_windows
from singer_core.diffusion import DiffusionConfig, SingerNet
from singer_core.diffusion.clip_loop import SamplerPlan, clip_windows, iter_clips
from singer_core.diffusion.sampling import sample_long
from tests.memory_probe import can_reset_peak, run_child

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_net(mode: str) -> SingerNet:
    torch.manual_seed(0)
    net = SingerNet(dataclasses.replace(DiffusionConfig.tiny(), forward_mode=mode)).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    return net


def song(net: SingerNet, frames: int) -> dict:
    config = net.config
    gen = torch.Generator().manual_seed(2)
    return dict(reference_latent=torch.randn(1, 4, 16, 16, generator=gen),
                face_embedding=torch.randn(1, config.face_embedding_dim, generator=gen),
                face_mask_image=torch.rand(1, 3, 128, 128, generator=gen),
                features=torch.randn(frames, config.audio_blocks, config.audio_channels, generator=gen))


def test_clip_windows_equal_padded_song_windows():
    features = torch.randn(7, 2, 3)
    padded = frame_windows(features, 2)
    padded = torch.cat([padded, padded[-1:].expand(5, *padded.shape[1:])])  # sample_long's padding
    for start, end in ((0, 4), (4, 8), (8, 12)):
        torch.testing.assert_close(clip_windows(features, start, end, 2), padded[start:end])


@pytest.mark.parametrize("mode", ["official-as-run", "clean"])
def test_official_plan_equals_sample_long_and_cache_equals_recompute(mode):
    net = tiny_net(mode)
    inputs = song(net, 9)
    features = inputs.pop("features")
    common = dict(clip_frames=4, motion_frames=2, seed=3, reencode=lambda x: 0.9 * x, **inputs)
    plan = SamplerPlan(steps=2)
    with torch.no_grad():
        expected = sample_long(net, audio_windows=frame_windows(features, 2)[None], steps=2, **common)
        clips = list(iter_clips(net, audio_features=features, plan=plan, **common))
        cached = list(iter_clips(net, audio_features=features, plan=dataclasses.replace(plan, cache_reference=True),
                                 **common))
    assert [c.shape[2] for c in clips] == [4, 4, 1]
    torch.testing.assert_close(torch.cat(clips, dim=2), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(cached, dim=2), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("solver", ["ddim", "dpmpp", "unipc"])
def test_guidance_on_part_of_the_steps(solver):
    net = tiny_net("official-as-run")
    inputs = song(net, 4)
    batches = []
    net.denoising_unet.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    plan = SamplerPlan(solver=solver, steps=4, guided_share=0.5, cache_reference=True)
    with torch.no_grad():
        out = list(iter_clips(net, audio_features=inputs.pop("features"), plan=plan, clip_frames=4, **inputs))
    assert batches == [2, 2, 1, 1]  # [uncond, cond] on the first half, cond alone after
    assert torch.isfinite(out[0]).all()


@pytest.mark.slow  # about a CPU minute: 110 tiny clips
@pytest.mark.skipif(not can_reset_peak(), reason="needs Linux /proc/self/clear_refs")
def test_pipeline_memory_is_flat_in_song_length(tmp_path):
    result = run_child(f"""
        import json, torch
        from singer_core.audio.features import SingerAudioFeatures
        from singer_core.diffusion import DiffusionConfig, SingerNet
        from singer_core.diffusion.pipeline import SingerPipeline
        from singer_core.diffusion.vae import tiny_vae
        from singer_core.io.video_write import VideoWriter
        from tests.memory_probe import peak_rss, reset_peak
        torch.set_num_threads(1)
        torch.manual_seed(0)
        pipe = SingerPipeline(SingerNet(DiffusionConfig.tiny()).eval(), tiny_vae(0))
        portrait = torch.rand(128, 128, 3)

        def render(seconds, name):
            frames = int(seconds * 25)
            features = SingerAudioFeatures(torch.randn(frames, 2, 8), fps=25, encoder="random", sample_rate=16000,
                                           num_samples=frames * 640)
            with VideoWriter({str(tmp_path)!r} + "/" + name + ".mp4", 25, preset="ultrafast") as writer:
                result = pipe(portrait, features=features, face_box=(32, 32, 64, 64), steps=1, guidance=1.0,
                              dtype="fp32", device="cpu", frame_sink=writer.write)
            assert result.frames is None and result.frame_count == frames == writer.frames_written

        render(1, "warm")
        peaks = {{}}
        for seconds in (10, 60):
            reset_peak()
            render(seconds, str(seconds))
            peaks[seconds] = peak_rss()
        print(json.dumps(peaks))
    """)
    short, long = result["10"], result["60"]
    # a 60 s video at 128 px kept in memory as float32 frames alone would add 295 MB
    print(f"peak RSS: 10 s song {short / 2**20:.1f} MiB, 60 s song {long / 2**20:.1f} MiB")
    assert long <= 1.10 * short, result
