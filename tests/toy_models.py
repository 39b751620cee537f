"""Tiny models several test modules share: a seeded motion DiT checkpoint and the training loop's toy task.

Imported as ``from tests.toy_models import ...``: pytest (``--import-mode=importlib``, rootdir = the repo) names
the test modules ``tests.<package>.test_*`` and registers the ``tests`` package, so no ``sys.path`` edit is needed.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from singer_core.io.checkpoint import PretrainedMixin, load_tensors
from singer_core.train.config import LoopConfig
from singer_core.train.loop import EpochSampler, TrainParts, step_generator

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# a tiny motion DiT


def tiny_motion_config(**changes):
    """A MotionModelConfig small enough to build and save in milliseconds; keyword arguments override fields."""
    from singer_core.motion.generator import MotionModelConfig

    fields = dict(width=32, layers=1, heads=2, mlp_ratio=2.0, time_dim=32, diffusion_steps=10) | changes
    return MotionModelConfig(**fields)


def save_tiny_motion_model(folder: Path, **changes) -> Path:
    """Build a seeded (torch seed 0) tiny MotionModel and ``save_pretrained`` it to ``folder``; returns the folder."""
    from singer_core.motion.generator import MotionModel

    torch.manual_seed(0)
    return MotionModel(tiny_motion_config(**changes)).save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------
# the toy regression task of the training loop


@dataclasses.dataclass(frozen=True)
class ToyConfig(LoopConfig):
    """Config of the toy regression task."""

    width: int = 16  # hidden width
    samples: int = 7  # dataset size (odd, so epochs straddle steps)


class ToyNet(torch.nn.Module, PretrainedMixin):
    """(N, 3) -> (N, 2) two-layer MLP with dropout (so resuming must restore the RNG)."""

    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.net = torch.nn.Sequential(torch.nn.Linear(3, config.width), torch.nn.Tanh(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(config.width, 2))

    def forward(self, x):
        return self.net(x)


class ToyData:
    """Seeded regression targets (x.sum, x0 * x1) with per-step noise drawn from the step's generator."""

    def __init__(self, config: ToyConfig):
        generator = torch.Generator().manual_seed(123)
        self.x = torch.randn(config.samples, 3, generator=generator)
        self.y = torch.stack([self.x.sum(1), self.x[:, 0] * self.x[:, 1]], 1)
        self.sampler = EpochSampler(config.samples, config.batch_size, config.seed)
        self.seed = config.seed

    def batch(self, step, *, rank=0, world=1):
        index = torch.tensor(self.sampler.indices(step, rank=rank, world=world))
        noise = 0.01 * torch.randn(len(index), 2, generator=step_generator(self.seed, step))
        return {"x": self.x[index], "y": self.y[index] + noise}


class ToyTask:
    """A toy regression task for the loop's tests."""

    name = "toy"
    config_class = ToyConfig
    presets = {"tiny": ToyConfig(steps=6, batch_size=3, lr=1e-2, checkpoint_every=2, keep_checkpoints=10,
                                 log_every=1, warmup_steps=2, optimizer="adamw", weight_decay=0.01)}

    def build(self, config, data_dir, cache_dir, device):
        return TrainParts(trainable={"net": ToyNet(config)}, frozen={}, data=ToyData(config))

    def loss(self, models, batch):
        # global-RNG draws inside the step (besides dropout) must also resume exactly
        jitter = 1.0 + 1e-3 * torch.rand(())
        loss = torch.nn.functional.mse_loss(models["net"](batch["x"]) * jitter, batch["y"])
        return loss, {"jitter": float(jitter)}

    def export(self, models, folder):
        return models["net"].save_pretrained(folder)


def exported_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of an exported model folder (``model.safetensors``)."""
    return load_tensors(folder / "model.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same keys, bit-identical tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
