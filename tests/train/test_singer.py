"""The `vae` and `singer` training tasks: exported folders load, the paper rule trains exactly audioproj + MSM FC +
SFM, exact resume, and the loss against a float64 v-prediction reference with the zero-SNR schedule written out."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from singer_core.diffusion import DiffusionConfig, SingerNet
from singer_core.io.checkpoint import load_tensors
from singer_core.train.config import resolve_config
from singer_core.train.loop import seed_everything, train
from singer_core.train.singer import SingerTask, apply_trainable

SMALL_DATA = dict(synth_clips=2, synth_seconds=0.4)  # 10 frames per clip
# cheap singer runs: a 2x VAE, 16-px frames -> 8 x 8 latents (no SFM: it needs >= 16), 2-frame samples
CHEAP = dict(SMALL_DATA, image_size=16, frames=2, motion_frames=1, window_stride=2, use_sfm=False, lr=1e-3,
             warmup_steps=0, checkpoint_every=3, log_every=1)


def _vae(folder, blocks):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) *
                        len(blocks), up_block_types=("UpDecoderBlock2D",) * len(blocks), block_out_channels=blocks,
                        layers_per_block=1, norm_num_groups=4, sample_size=32)
    vae.save_pretrained(folder)
    return str(folder)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("singer_train")
    return {"root": root, "cache": root / "cache", "vae2": _vae(root / "vae2", (8, 8)),
            "vae4": _vae(root / "vae4", (8, 8, 16))}


def test_vae_task_writes_a_loadable_diffusers_folder(work):
    from singer_core.diffusion.vae import encode_images, load_vae
    from singer_core.train.data_cache import synth_dataset
    from singer_core.train.vae import VAETask, load_frames

    config = dict(SMALL_DATA, image_size=32, block_out_channels=[8, 8], steps=2, batch_size=2, checkpoint_every=2)
    final = train("vae", preset="tiny", config=config, out=work["root"] / "vae_run", device="cpu",
                  cache_dir=work["cache"], quiet=True)
    vae = load_vae(final)
    assert (final / "diffusion_pytorch_model.safetensors").is_file()
    assert tuple(vae.config.block_out_channels) == (8, 8)
    # the measured scaling factor makes the scaled latent means of the training frames unit-variance
    run = resolve_config(VAETask, "tiny", config)
    frames = load_frames(synth_dataset(run.synth_config(), work["cache"]), "train", 32, 1)
    latents = encode_images(vae, frames.double().div(127.5).sub(1.0).float()).double()
    assert latents.shape[1:] == (4, 16, 16)
    assert abs(float(latents.std()) - 1.0) < 1e-3


def test_singer_tiny_export_loads(work):
    config = dict(SMALL_DATA, vae=work["vae4"], frames=2, motion_frames=1, steps=2, checkpoint_every=2)
    final = train("singer", preset="tiny", config=config, out=work["root"] / "singer_tiny", device="cpu",
                  cache_dir=work["cache"], quiet=True)
    net = SingerNet.from_pretrained(final)
    assert net.config.sample_size == 16 and net.config.use_sfm and net.config.use_msm
    # mel-80 rows: audio projection input 1 x 16 x 80 (what the pipeline feeds from mel features)
    assert (net.config.audio_seq_len, net.config.audio_blocks, net.config.audio_channels) == (1, 16, 80)
    info = json.loads((final / "singer_training.json").read_text())
    assert info["vae"] == work["vae4"] and info["audio"]["encoder"] == "mel-80"
    # written through the typed SingerTrainingInfo: what the loader reads back
    from singer_core.diffusion.model_folder import SingerTrainingInfo

    typed = SingerTrainingInfo.read(final)
    assert (typed.task, typed.vae, typed.frames, typed.motion_frames) == ("singer", work["vae4"], 2, 1)
    assert typed.audio.encoder == "mel-80" and typed.schedule.train_steps == 1000 and typed.sampling is None


def test_singer_tiny_trains_its_vae_first_and_ships_it(work):
    from singer_core.diffusion.vae import load_vae

    config = dict(SMALL_DATA, vae=None, vae_steps=2, frames=2, motion_frames=0, steps=1, checkpoint_every=1)
    final = train("singer", preset="tiny", config=config, out=work["root"] / "singer_auto_vae", device="cpu",
                  cache_dir=work["cache"], quiet=True)
    assert json.loads((final / "singer_training.json").read_text())["vae"] == "vae"
    assert load_vae(final / "vae").config.scaling_factor != 0.18215  # measured by the vae task's export
    assert SingerNet.from_pretrained(final).config.sample_size == 16


def test_paper_rule_trainable_names_on_meta_device():
    with torch.device("meta"):
        net = SingerNet(DiffusionConfig.full())
    names = set(apply_trainable(net, "paper"))
    expected = {f"audioproj.{layer}.{kind}" for layer in ("proj1", "proj2", "proj3", "norm")
                for kind in ("weight", "bias")}
    expected |= {"audioembed.fc.0.weight", "audioembed.fc.2.weight"}  # the MSM's DCT weight is a buffer
    expected |= {f"denoising_unet.hidden_spectral_weighting.{n}" for n in ("weight", "fc.0.weight", "fc.2.weight")}
    assert names == expected
    assert {n for n, p in net.named_parameters() if p.requires_grad} == expected


def test_paper_rule_trains_only_its_parts(work):
    # a tiny base whose audio zero-convs are non-zero (else no gradient reaches the audio projection)
    torch.manual_seed(1)
    base = SingerNet(dataclasses.replace(DiffusionConfig.tiny(), audio_seq_len=1, audio_blocks=16,
                                         audio_channels=80))
    with torch.no_grad():
        for name, param in base.named_parameters():
            if "zero_conv" in name:
                param.normal_(0.0, 0.1)
    base.save_pretrained(work["root"] / "base")
    config = resolve_config(SingerTask, "tiny", dict(SMALL_DATA, vae=work["vae4"], frames=2, motion_frames=1,
                                                     trainable="paper", base_weights=str(work["root"] / "base"),
                                                     drop_reference=0.0, drop_audio=0.0))
    task = SingerTask()
    seed_everything(0)
    parts = task.build(config, None, work["cache"], torch.device("cpu"))
    models = {**parts.trainable, **parts.frozen}
    loss, _ = task.loss(models, parts.data.batch(0))
    loss.backward()
    prefixes = ("audioproj.", "audioembed.fc.", "denoising_unet.hidden_spectral_weighting.")
    net = parts.trainable["net"].net
    for name, param in net.named_parameters():
        if name.startswith(prefixes):
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
        else:
            assert param.grad is None, name
    # checkpoints hold only the trained tensors; the frozen ones came from the base unchanged
    state = parts.trainable["net"].state_dict()
    assert state and all(key.startswith(tuple("net." + p for p in ("audioproj.", "audioembed.",
                                                                    "denoising_unet.hidden_spectral_weighting.")))
                         for key in state)
    base_state = base.state_dict()
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, base_state[name]), name


def test_singer_exact_resume(work):
    config = dict(CHEAP, vae=work["vae2"], steps=6)
    whole = train("singer", preset="tiny", config=config, out=work["root"] / "whole", device="cpu",
                  cache_dir=work["cache"], quiet=True)
    part = work["root"] / "parts"
    train("singer", preset="tiny", config=config, out=part, device="cpu", cache_dir=work["cache"], quiet=True,
          max_steps=3)
    resumed = train("singer", preset="tiny", config=config, out=part, device="cpu", cache_dir=work["cache"],
                    quiet=True, resume=True)
    a, b = load_tensors(whole / "model.safetensors"), load_tensors(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    middle = load_tensors(part / "checkpoints" / "step-0000003" / "state.safetensors")
    assert any(not torch.equal(middle[f"model.net.net.{key}"], a[key]) for key in a)  # steps 4-6 did train


def _alphas_cumprod_float64(steps=1000, start=0.00085, end=0.012):
    """Zero-terminal-SNR linear schedule (Lin et al. 2024, Algorithm 1) in float64 numpy."""
    alphas_bar = np.cumprod(1.0 - np.linspace(start, end, steps))
    root = np.sqrt(alphas_bar)
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    return root ** 2


def test_singer_loss_is_v_prediction_mse(work):
    config = resolve_config(SingerTask, "tiny", dict(CHEAP, vae=work["vae2"], batch_size=2, lambda_face=0.5,
                                                     lambda_lip=3.0, drop_reference=0.5, drop_audio=0.5))
    task = SingerTask()
    seed_everything(0)
    parts = task.build(config, None, work["cache"], torch.device("cpu"))
    models = {**parts.trainable, **parts.frozen}
    batch = parts.data.batch(1)
    seen = {}
    hook = models["net"].register_forward_hook(lambda module, args, out: seen.update(x_t=args[0], out=out))
    try:
        loss, scalars = task.loss(models, batch)
    finally:
        hook.remove()
    x0, eps = batch["x0"].double(), batch["noise"].double()
    abar = torch.from_numpy(_alphas_cumprod_float64())[batch["t"]].view(-1, 1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0
    torch.testing.assert_close(seen["x_t"].double(), x_t, rtol=1e-5, atol=1e-6)
    weight = 1.0 + 0.5 * batch["face"].double()[:, :, None] + 3.0 * batch["lip"].double()[:, :, None]
    error = (seen["out"].double() - v) ** 2
    assert float(loss) == pytest.approx(float((weight * error).mean()), rel=1e-5)
    assert scalars["mse"] == pytest.approx(float(error.mean()), rel=1e-5)


def test_tie_unet_init_starts_the_denoising_unet_from_the_reference_unet():
    """Hallo / SINGER start both UNets from SD1.5; from scratch, tie_unet_init copies every reference-UNet tensor
    into its twin and leaves the denoising UNet's own parts (motion / audio modules) alone."""
    from singer_core.train.singer import tie_unet_init

    torch.manual_seed(3)
    net = SingerNet(DiffusionConfig.tiny())
    before = {name: value.clone() for name, value in net.denoising_unet.state_dict().items()}
    reference = {name[len("reference_unet."):]: value for name, value in net.state_dict().items()
                 if name.startswith("reference_unet.")}
    copied = tie_unet_init(net)
    after = net.denoising_unet.state_dict()
    assert copied == len(reference) > 100
    for name, value in reference.items():
        assert torch.equal(after[name], value), name
    own = [name for name in after if name not in reference]
    assert own and any(".motion_modules." in name for name in own) and any("audio_modules" in name for name in own)
    for name in own:
        assert torch.equal(after[name], before[name]), name
    assert not all(torch.equal(after[name], before[name]) for name in reference)  # something actually changed
