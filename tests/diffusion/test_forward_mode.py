"""The two forward modes of the SINGER denoising UNet, checked against the semantics of the official code.

"official-as-run" is what `yl4467/singer` `scripts/inference_new.py` computes: its denoising UNet stays in
training mode with gradient checkpointing on, so every `if self.training and self.gradient_checkpointing:`
branch of `models/models/unet_3d_blocks.py` runs. Read from that file and `mutual_self_attention.py`:
- CrossAttnDownBlock3D / CrossAttnUpBlock3D (training branch): `hidden, motion_frame = attn(...)`;
  motion frames = the layer's own bank entry past the reference image, `torch.cat([motion_frames, hidden],
  dim=2)` into the motion module, `[:, :, n_motion_frames:]` after; audio module called with `motion_scale`.
- DownBlock3D / UpBlock3D (training branch): resnet only, no motion module.
- UNetMidBlock3DCrossAttn (no branch): motion frames prepended, audio module with motion_scale.
- an empty bank gives `torch.zeros(b, c, 4, h, w)` motion frames;
- write mode: `attn2(..., encoder_hidden_states=encoder_hidden_states.repeat(tmp, 1, 1))`.
The expected tables below are written from those lines, not from our classes; hooks record what runs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from singer_core.diffusion import DiffusionConfig, SingerNet, load_net_pth
from singer_core.diffusion.audio_modules import AudioTransformer, RegionMasks
from singer_core.diffusion.motion_module import VanillaTemporalModule
from singer_core.diffusion.unet_blocks import BlockInputs

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FRAMES, MOTION, SIZE = 3, 2, 16
SCALE = (0.7, 1.3, 2.5)


def tiny_net(mode: str, seed: int = 0, **overrides) -> SingerNet:
    torch.manual_seed(seed)
    config = dataclasses.replace(DiffusionConfig.tiny(), forward_mode=mode, **overrides)
    net = SingerNet(config).eval()
    with torch.no_grad():  # motion modules and zero convs start as the identity / zero: give them weights
        for name, param in net.denoising_unet.named_parameters():
            if "proj_out" in name and "motion_modules" in name or "zero_conv" in name:
                param.normal_(0, 0.1)
    return net


def inputs(config: DiffusionConfig, batch: int = 1, motion: int = MOTION) -> dict:
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, 4, FRAMES, SIZE, SIZE, generator=gen)
    return dict(latents=latents, timestep=torch.tensor([500] * batch),
                reference_latents=torch.randn(batch, 1 + motion, 4, SIZE, SIZE, generator=gen),
                face_embedding=torch.randn(batch, config.face_embedding_dim, generator=gen),
                audio_windows=torch.randn(batch, FRAMES, config.audio_seq_len, config.audio_blocks,
                                          config.audio_channels, generator=gen),
                face_mask_image=torch.rand(batch, 3, 8 * SIZE, 8 * SIZE, generator=gen), motion_scale=SCALE)


def run_predict(net: SingerNet, **kw) -> torch.Tensor:
    args = inputs(net.config, **kw)
    with torch.no_grad():
        return net.predict(args.pop("latents"), args.pop("timestep"), **args)


def motion_names() -> dict[str, str]:
    """Every motion module of the official layout -> the block class that owns it."""
    names = {}
    for block, kind in ((0, "CrossAttnDown"), (1, "CrossAttnDown"), (2, "CrossAttnDown"), (3, "Down")):
        names.update({f"down_blocks.{block}.motion_modules.{j}": kind for j in range(2)})
    for block, kind in ((0, "Up"), (1, "CrossAttnUp"), (2, "CrossAttnUp"), (3, "CrossAttnUp")):
        names.update({f"up_blocks.{block}.motion_modules.{j}": kind for j in range(3)})
    names["mid_block.motion_modules.0"] = "Mid"
    return names


def expected_frames(kind: str, mode: str) -> int | None:
    """Frames entering a motion module in the official code (None: it does not run)."""
    if mode == "official-as-run":  # training branch
        return {"CrossAttnDown": FRAMES + MOTION, "CrossAttnUp": FRAMES + MOTION, "Mid": FRAMES + MOTION,
                "Down": None, "Up": None}[kind]
    return FRAMES + MOTION if kind == "Mid" else FRAMES  # `else:` branch: attn(...).sample drops the frames


@pytest.mark.parametrize("mode", ["official-as-run", "clean"])
def test_motion_frames_per_block_and_skipped_modules(mode):
    net = tiny_net(mode)
    seen: dict[str, int] = {}
    handles = []
    for name, module in net.denoising_unet.named_modules():
        if isinstance(module, VanillaTemporalModule):
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, name=name: seen.__setitem__(name, args[1])))
    run_predict(net)
    for handle in handles:
        handle.remove()
    names = motion_names()
    assert set(names) == {n for n, m in net.denoising_unet.named_modules() if isinstance(m, VanillaTemporalModule)}
    expected = {name: expected_frames(kind, mode) for name, kind in names.items()}
    assert seen == {name: frames for name, frames in expected.items() if frames is not None}


def test_prepended_frames_are_the_layers_own_bank_entries():
    """The first M frames entering down_blocks.1 / up_blocks.2 motion modules are the reference UNet's norm1
    tokens of the motion-frame images at the same layer ("b f (d1 d2) c -> b c f d1 d2")."""
    net = tiny_net("official-as-run")
    written, entering = {}, {}
    for path in ("down_blocks.1.attentions.0", "up_blocks.2.attentions.1"):
        attn1 = net.reference_unet.get_submodule(f"{path}.transformer_blocks.0.attn1")
        attn1.register_forward_pre_hook(lambda _m, args, path=path: written.__setitem__(path, args[0].clone()))
        motion = net.denoising_unet.get_submodule(path.replace("attentions", "motion_modules"))
        motion.register_forward_pre_hook(lambda _m, args, path=path: entering.__setitem__(path, args[0].clone()))
    run_predict(net)
    for path, tokens in written.items():  # tokens: (1 + M, h*w, C) for batch 1
        side = int(tokens.shape[1] ** 0.5)
        bank_frames = tokens[1:].reshape(MOTION, side, side, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(entering[path][:MOTION], bank_frames)
        assert entering[path].shape[0] == MOTION + FRAMES


@pytest.mark.parametrize("mode", ["official-as-run", "clean"])
def test_audio_module_scales(mode):
    net = tiny_net(mode)
    seen = {}
    for name, module in net.denoising_unet.named_modules():
        if isinstance(module, AudioTransformer):
            module.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[3]))
    run_predict(net)
    assert len(seen) == 3 * 2 + 3 * 3 + 1  # audio modules of the cross-attention blocks and the mid block
    for name, weights in seen.items():
        # official: training branch passes motion_scale positionally everywhere; `else:` branch only in mid
        official = SCALE if mode == "official-as-run" or name.startswith("mid_block") else None
        assert (None if weights is None else tuple(weights)) == official, name


@pytest.mark.parametrize("mode", ["official-as-run", "clean"])
def test_reference_token_order_under_cfg(mode):
    net = tiny_net(mode)
    config = net.config
    batch, images = 2, 1 + MOTION  # CFG halves [uncond, cond], images [ref, m1, m2] each
    tokens = torch.randn(batch, config.face_tokens, config.cross_attention_dim)
    latents = torch.randn(batch, images, 4, SIZE, SIZE)
    seen = []
    attn2 = net.reference_unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn2")
    attn2.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()),
                                    with_kwargs=True)
    with torch.no_grad():
        net.write_reference(latents, tokens)
    net.reference_control.clear()
    # official: reference images are `ref_image_latents.repeat(2, 1, 1, 1)` = [ref, m1, m2, ref, m1, m2]
    # (b s) order and the write-mode block uses `encoder_hidden_states.repeat(tmp, 1, 1)` -> row i: i % B
    if mode == "official-as-run":
        order = [i % batch for i in range(batch * images)]
        assert order == [0, 1, 0, 1, 0, 1]
    else:
        order = [i // images for i in range(batch * images)]
    torch.testing.assert_close(seen[0], tokens[order])


def test_empty_bank_gives_four_zero_motion_frames():
    """Without a written reference the official training-branch blocks prepend torch.zeros(b, c, 4, h, w)."""
    net = tiny_net("official-as-run")
    entering = {}
    for name in ("down_blocks.0.motion_modules.0", "mid_block.motion_modules.0"):
        net.denoising_unet.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: entering.__setitem__(name, (args[0].clone(), args[1])))
    config = net.config
    with torch.no_grad():
        net.denoising_unet(torch.randn(1, 4, FRAMES, SIZE, SIZE), 10,
                           torch.randn(1, config.face_tokens, config.cross_attention_dim))
    for hidden, frames in entering.values():
        assert frames == FRAMES + 4
        assert hidden[:4].abs().max() == 0 and hidden[4:].abs().max() > 0


def test_cross_attention_down_block_matches_official_training_branch():
    """down_blocks.1 as-run against the official training-branch loop, written out in (b, c, f, h, w)."""
    net = tiny_net("official-as-run", seed=3)
    config = net.config
    block = net.denoising_unet.down_blocks[1]
    width, side = config.block_out_channels[0], SIZE // 2
    hidden = torch.randn(FRAMES, width, side, side)
    temb = torch.randn(FRAMES, config.time_embed_dim)
    context = torch.randn(FRAMES, config.face_tokens, config.cross_attention_dim)
    audio = torch.randn(FRAMES, config.audio_tokens, config.audio_attention_dim)
    masks = RegionMasks.ones(FRAMES, SIZE, SIZE)
    ref_latents = torch.randn(1, 1 + MOTION, 4, SIZE, SIZE)
    with torch.no_grad():
        net.write_reference(ref_latents, torch.randn(1, config.face_tokens, config.cross_attention_dim))
        net.reference_control.read(FRAMES)
        banks = [block.attentions[j].transformer_blocks[0].attn1.processor.bank[0] for j in range(2)]
        ours = block.forward_down(hidden, BlockInputs(temb, context, audio, masks, SCALE, FRAMES, as_run=True))[0]
        # official loop (b=1): resnet -> attn -> audio(motion_scale) -> cat(motion frames) -> motion -> cut
        h = hidden
        for j in range(2):
            h = block.resnets[j](h, temb)
            h = block.attentions[j](h, encoder_hidden_states=context, return_dict=False)[0]
            level = (masks.full[1], masks.face[1], masks.lip[1])
            h = block.audio_modules[j](h, audio, level, SCALE)
            motion = banks[j][1:].reshape(MOTION, side, side, -1).permute(0, 3, 1, 2)  # b f (d1 d2) c -> f c d1 d2
            joined = torch.cat([motion, h], dim=0)
            h = block.motion_modules[j](joined, MOTION + FRAMES)[MOTION:]
        h = block.downsamplers[0](h)
    net.reference_control.clear()
    torch.testing.assert_close(ours, h)


def test_modes_differ_and_bank_fp16_rounds_the_bank():
    clean = run_predict(tiny_net("clean"))
    as_run = run_predict(tiny_net("official-as-run"))
    assert (clean - as_run).abs().max() > 1e-4
    net = tiny_net("official-as-run", reference_bank_fp16=True)
    rounded = run_predict(net)
    assert 0 < (rounded - as_run).abs().max() < 1e-2 * as_run.abs().max()
    ref = torch.randn(1, 1 + MOTION, 4, SIZE, SIZE)
    with torch.no_grad():
        net.write_reference(ref, torch.randn(1, net.config.face_tokens, net.config.cross_attention_dim))
    net.reference_control.read(FRAMES)
    for writer, reader in net.reference_control.pairs:
        assert torch.equal(reader.bank[0], writer.bank[0].half().float())
    net.reference_control.clear()


def test_set_forward_mode_and_loader_defaults(tmp_path):
    from safetensors.torch import save_file

    net = tiny_net("clean")
    net.save_pretrained(tmp_path / "ours")
    assert SingerNet.from_pretrained(tmp_path / "ours").forward_mode == "clean"  # our folders keep their mode
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "net.safetensors"))
    loaded = load_net_pth(tmp_path / "net.safetensors", DiffusionConfig.tiny(), dtype=torch.float32)
    assert loaded.forward_mode == "official-as-run" and loaded.denoising_unet.forward_mode == "official-as-run"
    assert {t.dtype for t in loaded.state_dict().values()} == {torch.float32}
    assert load_net_pth(tmp_path / "net.safetensors", DiffusionConfig.tiny(), forward_mode=None).forward_mode == "clean"
    loaded.set_forward_mode("clean", reference_bank_fp16=True)
    assert loaded.config.forward_mode == "clean" and loaded.reference_control.bank_fp16
    with pytest.raises(ValueError, match="forward_mode"):
        loaded.set_forward_mode("eval")
    with pytest.raises(ValueError, match="forward_mode"):
        DiffusionConfig(forward_mode="training")
