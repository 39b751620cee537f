"""The shared training loop: exact resume, interruption, damaged checkpoints, config checks, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from singer_core.io.checkpoint import load_tensors
from singer_core.train import TASKS, task_class
from singer_core.train.checkpoints import (
    flatten_optimizer_state,
    list_checkpoints,
    unflatten_optimizer_state,
)
from singer_core.train.config import resolve_config
from singer_core.train.loop import EpochSampler, train
from tests.cli_run import run_cli
from tests.toy_models import ToyNet, ToyTask, assert_identical, exported_weights


def test_resume_is_bit_identical(tmp_path):
    straight = train(ToyTask, out=tmp_path / "a", device="cpu", cache_dir=tmp_path, quiet=True)
    stopped = train(ToyTask, out=tmp_path / "b", max_steps=3, device="cpu", cache_dir=tmp_path, quiet=True)
    assert stopped.name == "step-0000003" and not (tmp_path / "b" / "final").exists()
    resumed = train(ToyTask, out=tmp_path / "b", resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    assert straight.name == resumed.name == "final"
    assert_identical(exported_weights(straight), exported_weights(resumed))
    # the optimizer state of the last checkpoints (step 6) must match too
    assert_identical(load_tensors(tmp_path / "a/checkpoints/step-0000006/state.safetensors"),
                      load_tensors(tmp_path / "b/checkpoints/step-0000006/state.safetensors"))
    # and training did something: weights moved from the seeded initialisation
    torch.manual_seed(0)
    initial = ToyNet(ToyTask.presets["tiny"]).state_dict()
    assert not torch.equal(initial["net.0.weight"], exported_weights(straight)["net.0.weight"])
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
    assert_identical(exported_weights(straight), exported_weights(resumed))


def test_damaged_checkpoint_is_skipped_and_all_damaged_is_an_error(tmp_path):
    out = tmp_path / "run"
    train(ToyTask, out=out, max_steps=4, device="cpu", cache_dir=tmp_path, quiet=True)
    newest = out / "checkpoints" / "step-0000004" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short, as by a crash
    resumed = train(ToyTask, out=out, resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    straight = train(ToyTask, out=tmp_path / "ref", device="cpu", cache_dir=tmp_path, quiet=True)
    assert_identical(exported_weights(straight), exported_weights(resumed))  # it went on from step 2, exactly

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


def test_cli_unknown_task():
    """In-process (the help texts are tests/test_cli_help.py; the subprocess start tests/test_bad_inputs_cli.py)."""
    from singer_core.train.__main__ import main

    code, _, err = run_cli(main, ["nope"])
    assert code == 2 and "unknown training task 'nope'" in err
    assert all(name in err for name in TASKS)


def test_unknown_task_in_python():
    with pytest.raises(ValueError, match="tasks: "):
        task_class("nope")
