"""Loaders for third-party weights: SINGER `net.pth`, a diffusers SD1.5 UNet folder, AnimateDiff motion modules.

Nothing is unpickled: `.pth`/`.ckpt`/`.bin` go through `torch.load(weights_only=True)`, `.safetensors`
through safetensors. Mismatches are reported by name (`check_state_dict`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..io.checkpoint import check_state_dict, load_tensors
from .config import DiffusionConfig
from .net import SingerNet

logger = logging.getLogger(__name__)

SD15_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch checkpoint (weights only), unwrapped.

    A top-level `state_dict`/`module` entry is unwrapped and a `module.` prefix (DataParallel) stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_state_dict: '{path}' does not exist; give the path of the weights file")
    if path.suffix == ".safetensors":
        state = load_tensors(path)
    else:
        from ..io.checkpoint import load_torch_file

        state = load_torch_file(path, who="read_state_dict", mmap=True)
    for wrapper in ("state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"read_state_dict: '{path}' does not hold a flat name -> tensor mapping")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _finish(model: nn.Module, source: str, device, dtype) -> None:
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"{source}: tensors left unloaded: {left[:6]}")
    model.to(device=device, dtype=dtype)


def load_net_pth(path: str | os.PathLike, config: DiffusionConfig | None = None, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 forward_mode: str | None = "official-as-run") -> SingerNet:
    """Build `SingerNet` (full size unless `config` says otherwise) and load SINGER's `net.pth` strictly.

    path: net.pth (or a .safetensors with the same names); device, dtype: where/how to put it
    (dtype None keeps the file's dtypes, fp16 for the released weights); forward_mode: the
    `DiffusionConfig.forward_mode` to run it with, "official-as-run" by default because the released
    weights were trained, and are run by the official script, through the training branch of its blocks
    (None keeps `config.forward_mode`).
    The model is built on the meta device and every tensor is moved to `device`/`dtype` one at a time,
    dropping the file's copy before the next, then assigned: the weights are held once, in the compute
    dtype (never the fp16 file plus an fp32 cast of all 2.4 B parameters).
    """
    state = read_state_dict(path)
    config = config or DiffusionConfig()
    if forward_mode is not None and forward_mode != config.forward_mode:
        config = dataclasses.replace(config, forward_mode=forward_mode)
    with torch.device("meta"):
        net = SingerNet(config)
    check_state_dict(net, state, source=f"load_net_pth('{path}')")
    cast_state_in_place(state, device=device, dtype=dtype, source=path)
    net.load_state_dict(state, strict=True, assign=True)
    del state
    _finish(net, f"load_net_pth('{path}')", device, None)
    return net.eval()


class _MappedFilePages:
    """Hands the pages of a memory-mapped weights file back to the kernel once their tensor is cast.

    torch.load with mmap and safetensors map the file; every page a cast reads stays resident in the
    process (and in its peak RSS) until the whole mapping goes, so casting fp16 -> fp32 would still peak
    at the fp32 copy plus the whole fp16 file. `release(tensor)` calls madvise(MADV_DONTNEED) on the
    pages lying wholly inside the tensor, only when they belong to a mapping of this very file. The
    loaders never write to these tensors, so the pages are clean copies of the file and are re-read from
    it if touched again (a tied tensor sharing them still reads the same values). Linux only; elsewhere
    (no /proc/self/maps) it does nothing.
    """

    MADV_DONTNEED = 4

    def __init__(self, path: str | os.PathLike) -> None:
        self.regions: list[tuple[int, int]] = []
        self.madvise = None
        real = os.path.realpath(path)
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[5].strip() == real:
                        start, end = (int(v, 16) for v in parts[0].split("-"))
                        self.regions.append((start, end))
            if self.regions:
                import ctypes

                self.madvise = ctypes.CDLL(None, use_errno=True).madvise
                self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            logger.debug("_MappedFilePages: cannot release file pages on this system", exc_info=True)
            self.regions = []
        self.page = os.sysconf("SC_PAGE_SIZE") if self.regions else 4096

    def release(self, tensor: torch.Tensor) -> None:
        if not self.regions or tensor.device.type != "cpu":
            return
        pointer = tensor.data_ptr()
        start = -(-pointer // self.page) * self.page
        end = (pointer + tensor.numel() * tensor.element_size()) // self.page * self.page
        if end > start and any(low <= start and end <= high for low, high in self.regions):
            self.madvise(start, end - start, self.MADV_DONTNEED)


def cast_state_in_place(state: dict[str, torch.Tensor], *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, source: str | os.PathLike | None = None) -> None:
    """Move every floating tensor of `state` to device/dtype, replacing its entry before the next one.

    Only one source tensor and its cast exist at a time beyond the already cast ones; with `source` (the
    file `state` was memory-mapped from) the pages of each cast tensor are handed back too, so the peak
    is about one copy of the weights in the target dtype. Integer tensors only change device.
    """
    pages = _MappedFilePages(source) if source is not None else None
    for name in list(state):
        tensor = state[name]
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        cast = tensor.to(device=device, dtype=target)
        state[name] = cast
        if pages is not None and cast.data_ptr() != tensor.data_ptr():
            pages.release(tensor)
        del tensor, cast


def _sd15_file(folder: Path) -> Path:
    for base in (folder, folder / "unet"):
        for name in SD15_NAMES:
            if (base / name).is_file():
                return base / name
    raise FileNotFoundError(f"load_sd15_unet: no {' or '.join(SD15_NAMES)} in '{folder}' or '{folder}/unet'; give "
                            "the diffusers stable-diffusion-v1-5 folder (or its unet/ subfolder)")


def is_spatial_key(name: str) -> bool:
    """True for the denoising-UNet names that come from SD1.5 (not motion, audio or SFM)."""
    return not (".motion_modules." in name or ".audio_modules." in name
                or name.startswith("hidden_spectral_weighting."))


def load_sd15_state(net: SingerNet, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load an SD1.5 UNet state dict into both UNets of `net` (inflation: 2D weights apply per frame).

    Every SD1.5 name must exist in the denoising UNet with the same shape and every spatial name of it must
    be given; the reference UNet takes all but conv_norm_out/conv_out.
    """
    denoising = net.denoising_unet
    spatial = {name: tensor for name, tensor in denoising.state_dict().items() if is_spatial_key(name)}
    missing = sorted(set(spatial) - set(state))
    unexpected = sorted(set(state) - set(spatial))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in spatial.items() if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or unexpected or wrong:
        raise ValueError(f"{source}: not an SD1.5 UNet for this configuration: missing {missing[:6]}; "
                         f"unexpected {unexpected[:6]}; wrong shape {wrong[:6]}")
    denoising.load_state_dict(state, strict=False)
    reference_state = {k: v for k, v in state.items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    check_state_dict(net.reference_unet, reference_state, source=source)
    net.reference_unet.load_state_dict(reference_state, strict=True)


def load_sd15_unet(folder: str | os.PathLike, net: SingerNet) -> None:
    """Load the diffusers SD1.5 UNet of `folder` (…/stable-diffusion-v1-5 or its unet/) into `net`'s UNets."""
    path = _sd15_file(Path(folder))
    load_sd15_state(net, read_state_dict(path), source=f"load_sd15_unet('{path}')")


def motion_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The motion-module tensors of a DenoisingUNet3D, by their mm_sd_v15_v2 names."""
    return {name: tensor for name, tensor in unet.state_dict().items() if ".motion_modules." in name}


def load_motion_module(path: str | os.PathLike, net: SingerNet | nn.Module) -> None:
    """Load AnimateDiff motion modules (`mm_sd_v15_v2.ckpt` or .safetensors) into the denoising UNet.

    net: a SingerNet or a DenoisingUNet3D. All 21 modules (with the mid-block one) must be in the file
    with the same shapes; other tensors in the file are an error (a v1 or SDXL file is refused by name).
    """
    unet = net.denoising_unet if isinstance(net, SingerNet) else net
    state = read_state_dict(path)
    expected = motion_state(unet)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or unexpected or wrong:
        raise ValueError(f"load_motion_module('{path}'): not an AnimateDiff SD1.5 v2 motion module for this "
                         f"configuration: missing {missing[:6]} (+{max(len(missing) - 6, 0)}); unexpected "
                         f"{unexpected[:6]}; wrong shape {wrong[:6]}; use mm_sd_v15_v2.ckpt")
    unet.load_state_dict(state, strict=False)
