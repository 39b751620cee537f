"""The shared training loop: exact resume, interruption, damaged checkpoints, config checks, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from singer_core.io.checkpoint import PretrainedMixin, load_tensors
from singer_core.train import TASKS, task_class
from singer_core.train.checkpoints import (
    flatten_optimizer_state,
    list_checkpoints,
    unflatten_optimizer_state,
)
from singer_core.train.config import LoopConfig, resolve_config
from singer_core.train.loop import EpochSampler, TrainParts, step_generator, train

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class ToyConfig(LoopConfig):
    """Config of the toy regression task."""

    width: int = 16  # hidden width
    samples: int = 7  # dataset size (odd, so epochs straddle steps)


class ToyNet(torch.nn.Module, PretrainedMixin):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.net = torch.nn.Sequential(torch.nn.Linear(3, config.width), torch.nn.Tanh(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(config.width, 2))

    def forward(self, x):
        return self.net(x)


class ToyData:
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


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_tensors(folder / "model.safetensors")


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_is_bit_identical(tmp_path):
    straight = train(ToyTask, out=tmp_path / "a", device="cpu", cache_dir=tmp_path, quiet=True)
    stopped = train(ToyTask, out=tmp_path / "b", max_steps=3, device="cpu", cache_dir=tmp_path, quiet=True)
    assert stopped.name == "step-0000003" and not (tmp_path / "b" / "final").exists()
    resumed = train(ToyTask, out=tmp_path / "b", resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    assert straight.name == resumed.name == "final"
    _assert_identical(_weights(straight), _weights(resumed))
    # the optimizer state of the last checkpoints (step 6) must match too
    _assert_identical(load_tensors(tmp_path / "a/checkpoints/step-0000006/state.safetensors"),
                      load_tensors(tmp_path / "b/checkpoints/step-0000006/state.safetensors"))
    # and training did something: weights moved from the seeded initialisation
    torch.manual_seed(0)
    initial = ToyNet(ToyTask.presets["tiny"]).state_dict()
    assert not torch.equal(initial["net.0.weight"], _weights(straight)["net.0.weight"])
    assert (tmp_path / "a" / "tensorboard").is_dir()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["task"] == "toy"


def test_interrupt_leaves_valid_checkpoint_and_resumes(tmp_path):
    class Stop(Exception):
        pass

    seen = []

    def progress(step, total, scalars):
        seen.append((step, total, sorted(scalars)))
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train(ToyTask, out=tmp_path / "run", progress=progress, device="cpu", cache_dir=tmp_path, quiet=True)
    assert [s[0] for s in seen] == [1, 2, 3] and seen[0][1] == 6
    assert {"loss", "lr", "grad_norm", "jitter"} <= set(seen[0][2])
    steps = [step for step, _ in list_checkpoints(tmp_path / "run")]
    assert steps == [2, 3]  # the periodic one and the one of the interrupted step
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temporary folder left
    resumed = train(ToyTask, out=tmp_path / "run", resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    straight = train(ToyTask, out=tmp_path / "ref", device="cpu", cache_dir=tmp_path, quiet=True)
    _assert_identical(_weights(straight), _weights(resumed))


def test_damaged_checkpoint_is_skipped_and_all_damaged_is_an_error(tmp_path):
    out = tmp_path / "run"
    train(ToyTask, out=out, max_steps=4, device="cpu", cache_dir=tmp_path, quiet=True)
    newest = out / "checkpoints" / "step-0000004" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short, as by a crash
    resumed = train(ToyTask, out=out, resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    straight = train(ToyTask, out=tmp_path / "ref", device="cpu", cache_dir=tmp_path, quiet=True)
    _assert_identical(_weights(straight), _weights(resumed))  # it went on from step 2, exactly

    out2 = tmp_path / "run2"
    train(ToyTask, out=out2, max_steps=2, device="cpu", cache_dir=tmp_path, quiet=True)
    (out2 / "checkpoints" / "step-0000002" / "state.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="damaged"):
        train(ToyTask, out=out2, resume=True, device="cpu", cache_dir=tmp_path, quiet=True)


def test_config_checks(tmp_path):
    out = tmp_path / "run"
    train(ToyTask, out=out, max_steps=1, device="cpu", cache_dir=tmp_path, quiet=True)
    with pytest.raises(FileExistsError, match="resume"):
        train(ToyTask, out=out, device="cpu", cache_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match=r"different config.*lr: 0.01 -> 0.02"):
        train(ToyTask, config={"lr": 0.02}, out=out, resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="unknown ToyConfig fields"):
        resolve_config(ToyTask, None, {"learning_rate": 1})
    with pytest.raises(ValueError, match="no preset 'huge'"):
        resolve_config(ToyTask, "huge")
    assert resolve_config(ToyTask, None, {"betas": [0.5, 0.6]}).betas == (0.5, 0.6)


def test_epoch_sampler_is_a_permutation_per_epoch_and_shards_disjointly():
    sampler = EpochSampler(10, 2, seed=5)
    first_epoch = [i for step in range(5) for i in sampler.indices(step)]
    assert sorted(first_epoch) == list(range(10))
    two_ranks = [i for step in range(5) for rank in range(2) for i in sampler.indices(step, rank=rank, world=2)]
    assert sorted(two_ranks[:10]) == list(range(10)) and sorted(two_ranks[10:]) == list(range(10))
    assert EpochSampler(10, 2, seed=6).indices(0) != sampler.indices(0) or \
        EpochSampler(10, 2, seed=6).indices(1) != sampler.indices(1)


def test_optimizer_state_round_trip():
    param = torch.nn.Parameter(torch.randn(4))
    optimizer = torch.optim.Adam([param], lr=0.1, betas=(0.8, 0.9))
    param.sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    tensors, part = flatten_optimizer_state(state)
    json.dumps(part)  # JSON-able
    back = unflatten_optimizer_state(tensors, part)
    assert back["param_groups"][0]["betas"] == (0.8, 0.9)
    for key, value in state["state"][0].items():
        assert torch.equal(back["state"][0][key], value)


def test_cli_help_and_unknown_task():
    run = [sys.executable, "-m", "singer_core.train"]
    general = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert general.returncode == 0 and all(name in general.stdout for name in TASKS)
    unknown = subprocess.run([*run, "nope"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown training task 'nope'" in unknown.stderr
    assert "motion" in unknown.stderr and "lip-expert" in unknown.stderr
    motion = subprocess.run([*run, "motion", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert motion.returncode == 0
    for text in ("paper-no-sync", "lambda_sync (float, default 0.05): weight of L_sync", "--resume", "tiny: steps="):
        assert text in motion.stdout, text


def test_unknown_task_in_python():
    with pytest.raises(ValueError, match="tasks: "):
        task_class("nope")
