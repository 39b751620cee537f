"""Training checkpoints of the loop (STYLE rule 7): the folder format, optimizer and RNG state without pickle,
atomic writes, and finding the checkpoint to resume from.

One checkpoint is one folder ``out/checkpoints/step-0000100/``::

    state.safetensors   model tensors ("model.<name>.<key>"), optimizer tensors ("optimizer.state.<param>.<key>"),
                        torch/CUDA RNG ("rng.torch", "rng.cuda.<i>")
    state.json          {"format", "version", "task", "step", "config", "optimizer": param_groups and the
                        non-tensor per-parameter values, "rng": numpy/python RNG, "scalars": last logged values}

It is written into a hidden temporary folder and renamed, so a crash leaves either the whole checkpoint or
none; nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..io.checkpoint import (
    atomic_folder,
    atomic_write_bytes,
    check_finite,
    load_tensors,
    save_tensors,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "singer-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
STATE_TENSORS = "state.safetensors"
# model buffers where +-inf is a value by design (MotionModel's unbounded data range, FrameUNet's ignored
# coefficients); their models list them in infinite_ok_keys
INFINITE_BY_DESIGN = ("exp_low", "exp_high", "pose_low", "pose_high", "motion_std")
STATE_JSON = "state.json"
_STEP_DIR = re.compile(r"^step-(\d{7,})$")


# ---- state (de)serialisation without pickle ------------------------------------------------------
def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def flatten_optimizer_state(state: Mapping) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() -> (tensors "optimizer.state.<param>.<key>", JSON part: param_groups and the
    non-tensor per-parameter values)."""
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = _jsonable(value)
    return tensors, {"param_groups": _jsonable(state["param_groups"]), "state_scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], part: Mapping) -> dict:
    """Inverse of flatten_optimizer_state (lists in param_groups become tuples, "params" stays a list)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer.state."):
            param_id, key = name[len("optimizer.state."):].split(".", 1)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, values in part["state_scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = [{key: (list(value) if key == "params" else tuple(value) if isinstance(value, list) else value)
               for key, value in group.items()} for group in part["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The global RNG states: torch (and CUDA) as tensors, numpy and python as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global RNG tasks may use)
    python = random.getstate()
    return tensors, {"numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
                     "python": [python[0], list(python[1]), python[2]]}


def set_rng_state(tensors: Mapping[str, torch.Tensor], part: Mapping) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((int(name.rsplit(".", 1)[1]), value) for name, value in tensors.items()
                  if name.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([value for _, value in cuda])
    kind, keys, position, has_gauss, cached = part["numpy"]
    np.random.set_state((kind,  # noqa: NPY002
                          np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = part["python"]
    random.setstate((version, tuple(internal), gauss))


def training_state(*, task: str, step: int, config: Mapping, models: Mapping[str, Mapping[str, torch.Tensor]],
                   optimizer: Mapping, scalars: Mapping[str, float]) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of one checkpoint: the models' state dicts under "model.<name>.", the optimizer's
    state_dict flattened, the global RNG states; ``state`` is what state.json holds."""
    tensors = {f"model.{name}.{key}": value for name, state_dict in models.items()
               for key, value in state_dict.items()}
    optim_tensors, optim_part = flatten_optimizer_state(optimizer)
    rng_tensors, rng_part = rng_state()
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "task": task, "step": step,
             "config": config, "optimizer": optim_part, "rng": rng_part, "scalars": scalars}
    return {**tensors, **optim_tensors, **rng_tensors}, state


def model_state(tensors: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The state dict of trainable module `name` from a checkpoint's tensors (inverse of training_state)."""
    prefix = f"model.{name}."
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


# ---- checkpoint folders ----------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every completed checkpoint folder name under out/checkpoints, oldest first
    (not checked for validity; hidden temporary folders are ignored)."""
    root = Path(out) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir()
             if path.is_dir() and (match := _STEP_DIR.match(path.name))]
    return sorted(found)


def write_checkpoint(folder: Path, tensors: Mapping[str, torch.Tensor], state: Mapping) -> Path:
    """Write state.safetensors + state.json into `folder` through a hidden temporary folder and a rename."""
    with atomic_folder(folder) as tmp:
        save_tensors(tmp / STATE_TENSORS, tensors, metadata={"format": CHECKPOINT_FORMAT})
        atomic_write_bytes(tmp / STATE_JSON, json.dumps(state, indent=1).encode())
    _fsync_dir(folder.parent)
    return folder


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a checkpoint folder; a missing, truncated or foreign file is a ValueError."""
    folder = Path(folder)
    path = folder / STATE_JSON
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"read_checkpoint: '{path}' is missing or not valid JSON ({error})") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"read_checkpoint: '{path}' is not a SINGER training checkpoint")
    match = _STEP_DIR.match(folder.name)
    if match and int(match.group(1)) != state.get("step"):
        raise ValueError(f"read_checkpoint: '{folder}' says step {state.get('step')}, its name another")
    tensors = load_tensors(folder / STATE_TENSORS, finite=False)
    # NaN anywhere, or +-inf outside the buffers that hold it by design (a model's infinite_ok_keys), is damage
    by_design = tuple(f".{name}" for name in INFINITE_BY_DESIGN)
    check_finite(tensors, source=f"read_checkpoint: '{folder / STATE_TENSORS}'",
                 infinite_ok=[key for key in tensors if key.endswith(by_design) or key in INFINITE_BY_DESIGN])
    return tensors, state


def newest_valid_checkpoint(out: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor], dict] | None:
    """The newest checkpoint under out/checkpoints that reads back completely (damaged ones are skipped
    with a warning). None when there is none at all; a RuntimeError when all of them are damaged."""
    found = list_checkpoints(out)
    damaged = []
    for _step, folder in reversed(found):
        try:
            tensors, state = read_checkpoint(folder)
        except (ValueError, FileNotFoundError) as error:
            logger.warning("train: skipping damaged checkpoint '%s': %s", folder, error)
            damaged.append(folder.name)
            continue
        return folder, tensors, state
    if damaged:
        raise RuntimeError(f"train: every checkpoint in '{Path(out) / CHECKPOINTS_DIR}' is damaged ({damaged}); "
                           "delete them to start over, or train into a new --out")
    return None


def checkpoint_of_step(out: Path, step: int) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """The checkpoint of exactly `step` (resume_from); newer ones are moved aside (abandoned-step-*), so a
    later plain resume continues this branch of the run, not the abandoned one."""
    found = dict(list_checkpoints(out))
    if step not in found:
        raise ValueError(f"train: no checkpoint of step {step} in '{Path(out) / CHECKPOINTS_DIR}'; saved steps: "
                         f"{sorted(found) or 'none'}; pick one of them with --resume-from")
    try:
        tensors, state = read_checkpoint(found[step])
    except (ValueError, FileNotFoundError) as error:
        earlier = sorted(s for s in found if s < step)
        raise ValueError(f"train: cannot resume from step {step}: {error}; pick an earlier step with "
                         f"--resume-from (saved steps before it: {earlier or 'none'})") from error
    for newer in sorted(s for s in found if s > step):
        target = found[newer].with_name(f"abandoned-{found[newer].name}")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(found[newer], target)
        logger.warning("train: resuming from step %d; moved the newer checkpoint '%s' aside to '%s'", step,
                       found[newer], target)
    return found[step], tensors, state
