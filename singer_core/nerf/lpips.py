"""LPIPS perceptual distance (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018; v0.1 of github richzhang/PerceptualSimilarity), on user-provided weights, no download.

d(x, y) = sum_l mean_{h,w} sum_c w_l,c (n(F_l(x))_{c,h,w} - n(F_l(y))_{c,h,w})^2

with F_l the ReLU outputs of five backbone stages, n(f) = f / (sqrt(sum_c f_c^2) + 1e-10) the channel
normalisation, and w_l the 1x1 "linear" heads lin0..lin4. Inputs in [-1, 1] are first scaled by the
ScalingLayer: (x - shift) / scale, shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450).

Backbones (torchvision model definitions built with weights=None, then loaded from a file):
* "alex": AlexNet ``features`` cut after modules 1, 4, 7, 9, 11 (channels 64, 192, 384, 256, 256);
* "vgg":  VGG16 ``features`` cut after modules 3, 8, 15, 22, 29 (channels 64, 128, 256, 512, 512).

Weight files (safetensors, or a torch file read with ``weights_only=True``; nothing is unpickled):
* backbone: a torchvision state dict of the whole model (``features.N.weight`` ... ; ``classifier.*`` is
  ignored) or of ``features`` alone (``N.weight``), e.g. ``alexnet-owt-7be5be79.pth`` /
  ``vgg16-397923af.pth`` from torchvision's model zoo;
* linear heads: the official ``lpips/weights/v0.1/alex.pth`` / ``vgg.pth`` (keys ``lin0.model.1.weight`` ..
  ``lin4.model.1.weight``, shape (1, C, 1, 1)); any prefix before ``linK.`` (e.g. ``net.``) and the
  dropout-free ``model.0`` form are accepted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

BACKBONES = {
    "alex": {"cuts": (2, 5, 8, 10, 12), "channels": (64, 192, 384, 256, 256)},
    "vgg": {"cuts": (4, 9, 16, 23, 30), "channels": (64, 128, 256, 512, 512)},
}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
_HOW_TO_GET = ("get the backbone from torchvision's model zoo (alexnet-owt-7be5be79.pth or vgg16-397923af.pth, "
               "download.pytorch.org/models/) and the linear heads from the lpips package "
               "(github richzhang/PerceptualSimilarity, lpips/weights/v0.1/alex.pth or vgg.pth)")


def read_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file (weights_only=True); FileNotFoundError if absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS: the {what} file '{path}' does not exist; {_HOW_TO_GET}")
    if path.suffix == ".safetensors":
        from ..io.checkpoint import load_tensors

        return dict(load_tensors(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"LPIPS: '{path}' does not hold a state dict ({type(state).__name__})")
    return state


def channel_normalize(features: torch.Tensor) -> torch.Tensor:
    """f / (sqrt(sum_c f^2) + 1e-10) over the channel axis of (B, C, H, W)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with a frozen backbone.

    Args:
        net: "alex" or "vgg".
        backbone: path of the backbone weights (module docstring); None leaves it randomly initialised
            (tests only).
        linear: path of the linear-head weights; None leaves them at 1 (the "baseline" LPIPS variant).
    Call:
        lpips(x (B, 3, H, W), y (B, 3, H, W), normalize=False) -> (B,) distances; inputs in [-1, 1], or in
        [0, 1] with normalize=True. Differentiable with respect to the inputs (a training loss).
    """

    def __init__(self, net: str = "alex", backbone: str | Path | None = None, linear: str | Path | None = None):
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS: net must be one of {sorted(BACKBONES)}, got {net!r}")
        import torchvision

        spec = BACKBONES[net]
        model = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
        features = model.features
        if backbone is not None:
            state = read_weights(backbone, f"{net} backbone")
            if any(key.startswith("features.") for key in state):
                state = {key[len("features."):]: value for key, value in state.items()
                         if key.startswith("features.")}
            missing, unexpected = features.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"LPIPS: the backbone file '{backbone}' does not match torchvision's {net} features "
                                 f"(missing {missing[:4]}, unexpected {unexpected[:4]}); {_HOW_TO_GET}")
        cuts = (0,) + spec["cuts"]
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(cuts[k], cuts[k + 1])])
                                    for k in range(5))
        self.lins = nn.ParameterList(nn.Parameter(torch.ones(1, c, 1, 1)) for c in spec["channels"])
        if linear is not None:
            self.load_linear(linear)
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None], persistent=False)
        self.net = net
        self.requires_grad_(False)
        self.eval()
        for module in self.modules():  # the official heads run with inplace ReLUs; ours must keep inputs intact
            if isinstance(module, nn.ReLU):
                module.inplace = False

    def load_linear(self, path: str | Path) -> None:
        """Load lin0..lin4 from the official weight file (module docstring)."""
        state = read_weights(path, "LPIPS linear-head")
        found = {}
        for key, value in state.items():
            match = re.search(r"lin(\d)\.model\.\d\.weight$", key)
            if match:
                found[int(match.group(1))] = value
        if sorted(found) != [0, 1, 2, 3, 4]:
            raise ValueError(f"LPIPS: '{path}' lacks the linear heads lin0..lin4 (keys like 'lin0.model.1.weight'; "
                             f"found {sorted(found)}); {_HOW_TO_GET}")
        for k, param in enumerate(self.lins):
            if tuple(found[k].shape) != tuple(param.shape):
                raise ValueError(f"LPIPS: lin{k} in '{path}' has shape {tuple(found[k].shape)}, the {self.net} "
                                 f"backbone needs {tuple(param.shape)}: use the {self.net}.pth heads")
            with torch.no_grad():
                param.copy_(found[k])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Five (B, C_l, H_l, W_l) stage outputs of scaled inputs."""
        out = []
        for stage in self.slices:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS: inputs must both be (B, 3, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        shift, scale = self.shift.to(x.dtype), self.scale.to(x.dtype)
        fx, fy = self.features((x - shift) / scale), self.features((y - shift) / scale)
        total = x.new_zeros(x.shape[0])
        for a, b, weight in zip(fx, fy, self.lins, strict=True):
            diff = (channel_normalize(a) - channel_normalize(b)).square()
            total = total + (diff * weight.to(diff.dtype)).sum(dim=1).mean(dim=(1, 2))
        return total


def load_lpips(backbone: str | Path, linear: str | Path, net: str = "alex") -> LPIPS:
    """LPIPS with both weight files (FileNotFoundError naming the missing one and where to get it)."""
    for path, what in ((backbone, f"{net} backbone"), (linear, "LPIPS linear-head")):
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(f"LPIPS: the {what} file '{path}' does not exist; {_HOW_TO_GET}")
    return LPIPS(net, backbone, linear)
