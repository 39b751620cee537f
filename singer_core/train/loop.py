"""The one training loop every SINGER task shares: seeded, exactly resumable, atomic checkpoints, accelerate.

A task (``motion``, ``lip-expert``, later ``singer``, ``vae``, ``nerf``, ...) says WHAT to train -- its config
class and presets, how to build the models and the data, the loss, and how to export the result; this module
says HOW: optimizer (Adam / AdamW), warm-up, gradient clipping, Hugging Face ``accelerate`` for devices and
multi-GPU (``accelerate launch -m singer_core.train TASK ...``), a tqdm bar, TensorBoard scalars, and
checkpoints that resume bit-identically.

A run folder ``out`` holds::

    out/config.json                       {"task": name, "config": {...}} of the run (resume refuses another)
    out/checkpoints/step-0000100/         state.safetensors (model tensors, optimizer tensors, torch/CUDA RNG)
                                          state.json (step, optimizer hyper-parameters, numpy/python RNG, scalars)
    out/tensorboard/                      TensorBoard event files (when tensorboard is installed)
    out/final/                            the trained model, written by the task's export (save_pretrained)

Checkpoints are written into a hidden temporary folder and renamed, so a crash leaves either the whole
checkpoint or none; nothing is pickled. The data of step s depends only on (seed, s) -- a seeded
permutation per epoch -- so resuming needs the step number and the saved RNG states, nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ..io.checkpoint import (
    atomic_folder,
    atomic_write_bytes,
    check_finite,
    load_tensors,
    save_tensors,
)
from ..io.config import JsonConfig
from ..io.lock import folder_lock

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "singer-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
RUN_CONFIG = "config.json"
STATE_TENSORS = "state.safetensors"
# model buffers where +-inf is a value by design (MotionModel's unbounded data range, FrameUNet's ignored
# coefficients); their models list them in infinite_ok_keys
INFINITE_BY_DESIGN = ("exp_low", "exp_high", "pose_low", "pose_high", "motion_std")
STATE_JSON = "state.json"
OPTIMIZERS = ("adam", "adamw")
MIXED_PRECISION = ("no", "fp16", "bf16")
_STEP_DIR = re.compile(r"^step-(\d{7,})$")

StepReport = Callable[[int, int, dict], None]  # report(step, total, scalars): see singer_core.progress


# ---- configuration ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoopConfig(JsonConfig):
    """Loop settings every task config inherits (a task's config dataclass subclasses this one)."""

    seed: int = 0  # seeds model init, the data order and every random draw of the run
    steps: int = 1000  # optimizer steps of the whole run (the schedule and out/final refer to this)
    batch_size: int = 1  # samples per step and per process
    optimizer: str = "adam"  # "adam" or "adamw" (decoupled weight decay)
    lr: float = 1e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decay rates
    weight_decay: float = 0.0  # L2 (adam) or decoupled (adamw) weight decay
    warmup_steps: int = 0  # linear learning-rate warm-up from lr / warmup_steps to lr
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    keep_checkpoints: int = 3  # keep the newest this many checkpoints (>= 1)
    log_every: int = 10  # TensorBoard / tqdm scalars every this many steps
    mixed_precision: str = "no"  # accelerate mixed precision: "no", "fp16" or "bf16"

    def __post_init__(self):
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{type(self).__name__}: {name} must be an integer >= {minimum}, got {value!r}")

        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            positive_int(name)
        positive_int("warmup_steps", 0)
        positive_int("seed", 0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{type(self).__name__}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"{type(self).__name__}: mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay and grad_clip must be >= 0")


def resolve_config(task_class: type, preset: str | None = None,
                   config: LoopConfig | Mapping | str | os.PathLike | None = None) -> LoopConfig:
    """The run's config: a preset of the task (default "tiny"), with `config` applied on top.

    Args:
        task_class: the Task class (its config_class and presets are used).
        preset: a name in task_class.presets, or None for the task's default_preset (or "tiny").
        config: None; a full config instance (then preset must be None); a mapping of field overrides; or
            the path of a JSON file holding such a mapping.
    """
    config_class, presets = task_class.config_class, task_class.presets
    if isinstance(config, config_class):
        if preset is not None:
            raise ValueError(f"train: give either preset={preset!r} or a full {config_class.__name__}, not both")
        return config
    name = preset or getattr(task_class, "default_preset", "tiny")
    if name not in presets:
        raise ValueError(f"train: task {task_class.name!r} has no preset {name!r}; presets: {sorted(presets)}")
    base = presets[name]
    if config is None:
        return base
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"train: cannot read the config file '{path}' ({error}); give a JSON object of "
                             f"{config_class.__name__} fields") from error
    if not isinstance(config, Mapping):
        raise ValueError(f"train: config must be a {config_class.__name__}, a mapping or a JSON file, got "
                         f"{type(config).__name__}")
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"train: unknown {config_class.__name__} fields {unknown}; known fields: {sorted(known)}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in config.items()}
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    for key, value in values.items():
        problem = _type_problem(str(fields[key].type), value)
        if problem:
            raise ValueError(f"train: config field {key} must be {problem}, got {value!r} "
                             f"({type(value).__name__}); fix it in --config or with --set {key}=VALUE "
                             f"(default {getattr(base, key)!r})")
    try:
        return dataclasses.replace(base, **values)
    except TypeError as error:  # a value of a type __post_init__ did not expect
        raise ValueError(f"train: a config value has the wrong type ({error}); the fields and their types: "
                         f"python -m singer_core.train {task_class.name} --help") from error


_SCALARS = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "a string"),
            "bool": ((bool,), "true or false")}


def _type_problem(annotation: str, value) -> str | None:
    """What `value` should be for a field annotated `annotation` ("int", "float | None", "tuple[float, float]",
    ...), or None when it fits (annotations this does not understand are left to the config's own checks)."""
    options = [part.strip() for part in annotation.split("|")]
    if "None" in options:
        if value is None:
            return None
        options.remove("None")
    if len(options) != 1:
        return None
    kind = options[0]
    if kind in _SCALARS:
        accepted, words = _SCALARS[kind]
        ok = isinstance(value, accepted) and (kind == "bool" or not isinstance(value, bool))
        return None if ok else words + (" or null" if "None" in annotation else "")
    if kind.startswith("tuple["):
        inner = [part.strip() for part in kind[len("tuple["):-1].split(",")]
        if not isinstance(value, tuple):
            return f"a list of {len(inner)} values" if "..." not in inner else "a list"
        if "..." not in inner and len(value) != len(inner):
            return f"a list of {len(inner)} values"
        for item, item_kind in zip(value, inner if "..." not in inner else [inner[0]] * len(value), strict=False):
            if _type_problem(item_kind, item):
                return f"a list of {_SCALARS.get(item_kind, ((), item_kind))[1]} values"
    return None


def describe_config(config_class: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, comment) of every field, the comment read from the class source."""
    comments: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE):
            comments[match.group(1)] = match.group(2).strip()
    rows = []
    for field in dataclasses.fields(config_class):
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
        rows.append((field.name, str(field.type), default, comments.get(field.name, "")))
    return rows


def config_difference(old: Mapping, new: Mapping) -> list[str]:
    """'field: old -> new' for every field that differs between two config dicts."""
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


# ---- the task protocol ---------------------------------------------------------------------------
@dataclasses.dataclass
class TrainParts:
    """What a task's build() returns.

    trainable: name -> module the optimizer trains (each is prepared by accelerate; DDP-wrapped on several
        processes); their state is saved in checkpoints under "model.<name>.".
    frozen: name -> module used but not trained (moved to the device, eval mode, no gradients, not saved).
    data: the data source: ``data.batch(step, rank=..., world=...)`` -> the batch of that step.
    """

    trainable: dict[str, torch.nn.Module]
    frozen: dict[str, torch.nn.Module]
    data: DataSource


@runtime_checkable
class DataSource(Protocol):
    """Gives the batch of any step, deterministically in (config seed, step, rank, world) -- no iterator state."""

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> Any:
        """The batch of 0-based step `step` for process `rank` of `world` (tensors anywhere in nested
        dicts / lists / tuples are moved to the training device by the loop)."""


@runtime_checkable
class Task(Protocol):
    """A training task. Implementations are classes with a no-argument constructor.

    name: the CLI name (``python -m singer_core.train NAME``).
    config_class: a frozen dataclass subclassing LoopConfig.
    presets: preset name -> config; must contain "tiny" (CPU, about a minute or less).
    default_preset: preset used when none is given (optional; "tiny" when absent).
    build(config, data_dir, cache_dir, device) -> TrainParts. Model initialisation may use the global torch
        RNG (the loop seeds it first). data_dir is None when the user gave no dataset (generate one under
        cache_dir). Expensive preprocessing (features) is cached under cache_dir.
    loss(models, batch) -> (scalar loss tensor with grad, {name: float} scalars to log). `models` maps the
        names of TrainParts.trainable (as prepared by accelerate) and TrainParts.frozen to modules.
    export(models, folder) -> Path: write the trained result (save_pretrained of unwrapped modules).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Any]]

    def build(self, config: Any, data_dir: Path | None, cache_dir: Path, device: torch.device) -> TrainParts:
        ...

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        ...

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        ...


# ---- deterministic data helpers ------------------------------------------------------------------
def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, step, stream): the random draws of one step (noise,
    timesteps, shifts) without any state carried between steps."""
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator()
    generator.manual_seed(int(state) & ((1 << 63) - 1))
    return generator


class EpochSampler:
    """Sample indices of any step: sample k = (step * world + rank) * batch_size + b falls in epoch
    k // size at position k % size of that epoch's permutation, seeded by (seed, epoch).

    Args:
        size: number of samples (>= 1).
        batch_size: samples per step and process.
        seed: the run seed.
    """

    def __init__(self, size: int, batch_size: int, seed: int):
        if size < 1:
            raise ValueError("EpochSampler: the dataset is empty; give a dataset with at least one sample")
        self.size, self.batch_size, self.seed = int(size), int(batch_size), int(seed)
        self._cache: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """(size,) int64 permutation of epoch `epoch`."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, int(epoch)]).permutation(self.size))
        return self._cache[1]

    def indices(self, step: int, *, rank: int = 0, world: int = 1) -> list[int]:
        """The batch_size sample indices of `step` for process `rank` of `world`."""
        first = (int(step) * world + rank) * self.batch_size
        out = []
        for k in range(first, first + self.batch_size):
            epoch, position = divmod(k, self.size)
            out.append(int(self.order(epoch)[position]))
        return out

    def epoch(self, step: int, world: int = 1) -> float:
        """Epochs done at the start of `step` (fractional)."""
        return step * world * self.batch_size / self.size


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


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's global RNG and python's random."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 (seed the global RNG third-party code uses)
    torch.manual_seed(seed)


# ---- checkpoints ---------------------------------------------------------------------------------
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


def _checkpoint_of_step(out: Path, step: int) -> tuple[Path, dict[str, torch.Tensor], dict]:
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


# ---- the loop ------------------------------------------------------------------------------------
def load_task(task: str | type | Any) -> Any:
    """A Task instance from a registry name, a Task class or an instance."""
    if isinstance(task, str):
        from . import task_class

        return task_class(task)()
    if isinstance(task, type):
        return task()
    return task


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def learning_rate(config: LoopConfig, step: int) -> float:
    """Learning rate of 0-based `step`: linear warm-up over warmup_steps, then constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def default_cache_dir() -> Path:
    """$SINGER_CACHE_DIR, else ~/.cache/singer."""
    return Path(os.environ.get("SINGER_CACHE_DIR") or Path.home() / ".cache" / "singer")


def _make_accelerator(device: str | torch.device | None, mixed_precision: str):
    from accelerate import Accelerator

    device = None if device is None else torch.device(device)
    accelerator = Accelerator(cpu=device is not None and device.type == "cpu", mixed_precision=mixed_precision)
    if device is not None and device.type != accelerator.device.type:
        raise ValueError(f"train: device {str(device)!r} was asked for but accelerate chose "
                         f"{accelerator.device}; use --device cpu or configure accelerate (accelerate config)")
    return accelerator


def _summary_writer(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("train: tensorboard is not installed; no event files (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def _format_scalars(scalars: Mapping[str, float]) -> str:
    return " ".join(f"{key}={value:.4g}" for key, value in scalars.items())


def train(task, *, preset: str | None = None, config=None, data: str | os.PathLike | None = None,
          out: str | os.PathLike, resume: bool = False, max_steps: int | None = None,
          progress: StepReport | None = None, device: str | torch.device | None = None,
          cache_dir: str | os.PathLike | None = None, quiet: bool = False,
          resume_from: int | None = None) -> Path:
    """Train `task` into the run folder `out`.

    Args:
        task: a registry name ("motion"), a Task class or a Task instance.
        preset: preset name (default: the task's default, "tiny"); with resume and neither preset nor config,
            the run's own out/config.json is used.
        config: a full config, a mapping / JSON file of field overrides on top of the preset.
        data: dataset folder (SINGER clip format) or None to let the task generate / fetch its own.
        out: the run folder (created).
        resume: continue from the newest valid checkpoint in out (a fresh start if there is none; an error
            if the config differs from the run's).
        max_steps: stop once this many steps (counted from 0, not from the resume point) are done, with a
            checkpoint; the schedule still refers to config.steps. None = run to config.steps.
        progress: callback(step done, total, scalars) after every step; it may raise to stop the run: a
            checkpoint of the last completed step is written and the exception propagates.
        device: "cpu", "cuda", ... or None for accelerate's choice.
        cache_dir: where generated datasets and features are cached (default $SINGER_CACHE_DIR or
            ~/.cache/singer).
        quiet: no tqdm bar.
        resume_from: resume from the checkpoint of exactly this step (implies resume), e.g. one before the
            training diverged; newer checkpoints are moved aside to out/checkpoints/abandoned-step-*.

    Returns:
        out/final when the run reached config.steps, else the checkpoint folder of the stopping step.

    Raises:
        FolderLockedError: another job is training into `out` (its PID is named).
        FileSystemError: `out` is a file, read-only or on a full disk.
    """
    task = load_task(task)
    out = Path(out)
    if resume_from is not None:
        if isinstance(resume_from, bool) or not isinstance(resume_from, int) or resume_from < 1:
            raise ValueError(f"train: resume_from must be a checkpoint step >= 1, got {resume_from!r}")
        resume = True
    run_config_path = out / RUN_CONFIG
    if resume and preset is None and config is None and run_config_path.is_file():
        config = json.loads(run_config_path.read_text()).get("config", {})
    config = resolve_config(type(task), preset, config)
    config_dict = json.loads(config.to_json())
    stop = config.steps if max_steps is None else min(int(max_steps), config.steps)
    if stop < 0:
        raise ValueError(f"train: max_steps must be >= 0, got {max_steps}")

    # one job per run folder (on every process of a multi-GPU run only the main one holds the lock)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with folder_lock(out, "train") if main_rank else contextlib.nullcontext():
        # 1. the run folder: same config on resume, no silent mixing of runs
        run_record = {"task": task.name, "config": config_dict}
        started = run_config_path.is_file() and (bool(list_checkpoints(out)) or (out / FINAL_DIR).exists())
        if started:  # a run folder with nothing trained yet (e.g. its build failed) may be reused freely
            previous = json.loads(run_config_path.read_text())
            if not resume:
                raise FileExistsError(f"train: '{out}' already holds a run; pass resume=True (--resume) to "
                                      "continue it, or choose another --out")
            if previous.get("task") != task.name or previous.get("config") != config_dict:
                changes = config_difference(previous.get("config", {}), config_dict)
                raise ValueError(f"train: cannot resume '{out}' with a different config (task "
                                 f"{previous.get('task')!r} -> {task.name!r}; {'; '.join(changes) or 'no field'}); "
                                 "resume with the run's own config (omit --preset/--config) or train into a new --out")
        out.mkdir(parents=True, exist_ok=True)
        for stale in (out / CHECKPOINTS_DIR).glob(".step-*"):
            shutil.rmtree(stale, ignore_errors=True)

        accelerator = _make_accelerator(device, config.mixed_precision)
        is_main = accelerator.is_main_process
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

        # 2. build (model init draws from the seeded global RNG), optimizer, accelerate
        seed_everything(config.seed)
        parts = task.build(config, Path(data) if data is not None else None, cache_dir, accelerator.device)
        if not parts.trainable:
            raise ValueError(f"train: task {task.name!r} built no trainable module")
        for module in parts.frozen.values():
            module.to(accelerator.device).eval().requires_grad_(False)
        names = list(parts.trainable)
        params = [p for name in names for p in parts.trainable[name].parameters() if p.requires_grad]
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        prepared = accelerator.prepare(*[parts.trainable[name] for name in names], optimizer)
        modules, optimizer = dict(zip(names, prepared[:-1], strict=True)), prepared[-1]
        models = {**modules, **parts.frozen}
        if is_main:
            atomic_write_bytes(run_config_path, json.dumps(run_record, indent=2, sort_keys=True).encode())

        # 3. resume
        step = 0
        if resume:
            found = newest_valid_checkpoint(out) if resume_from is None else _checkpoint_of_step(out, resume_from)
            if found is None:
                logger.info("train: nothing to resume in '%s'; starting at step 0", out)
            else:
                folder, tensors, state = found
                if state.get("config") != config_dict or state.get("task") != task.name:
                    raise ValueError(f"train: checkpoint '{folder}' belongs to another config/task; train into a "
                                     "new --out")
                for name in names:
                    prefix = f"model.{name}."
                    own = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
                    accelerator.unwrap_model(modules[name]).load_state_dict(own, strict=True)
                optimizer.load_state_dict(unflatten_optimizer_state(tensors, state["optimizer"]))
                set_rng_state(tensors, state["rng"])
                step = int(state["step"])
                logger.info("train: resumed '%s' at step %d from %s", out, step, folder.name)

        # 4. the steps
        writer = _summary_writer(out / "tensorboard", purge_step=step or None) if is_main else None
        bar = None
        if is_main and not quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop, initial=min(step, stop), desc=f"train {task.name}", unit="step", dynamic_ncols=True)
        last_saved = step if resume and step else None

        def save(done: int) -> Path:
            nonlocal last_saved
            folder = out / CHECKPOINTS_DIR / checkpoint_name(done)
            if last_saved == done and folder.is_dir():
                return folder
            accelerator.wait_for_everyone()
            if is_main:
                tensors = {f"model.{name}.{key}": value for name in names
                           for key, value in accelerator.unwrap_model(modules[name]).state_dict().items()}
                optim_tensors, optim_part = flatten_optimizer_state(optimizer.state_dict())
                rng_tensors, rng_part = rng_state()
                state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "task": task.name, "step": done,
                         "config": config_dict, "optimizer": optim_part, "rng": rng_part, "scalars": scalars}
                write_checkpoint(folder, {**tensors, **optim_tensors, **rng_tensors}, state)
                for _old_step, old in list_checkpoints(out)[:-config.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            accelerator.wait_for_everyone()
            last_saved = done
            return folder

        scalars: dict[str, float] = {}
        for module in modules.values():
            module.train()
        try:
            while step < stop:
                # 4a. one optimizer step
                lr = learning_rate(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = parts.data.batch(step, rank=accelerator.process_index, world=accelerator.num_processes)
                batch = _to_device(batch, accelerator.device)
                with accelerator.autocast():
                    loss, scalars = task.loss(models, batch)
                if not torch.isfinite(loss.detach()).all():
                    saved = [done for done, _ in list_checkpoints(out)]
                    raise RuntimeError(f"train: loss is {loss.item()} at step {step} of task {task.name!r}; lower "
                                       f"lr (now {lr:g}) or resume from an earlier checkpoint with --resume-from "
                                       f"STEP (saved steps: {saved or 'none'})")
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                scalars = {"loss": float(loss.detach()), **{k: float(v) for k, v in scalars.items()}, "lr": lr}
                if config.grad_clip > 0 and accelerator.sync_gradients:
                    scalars["grad_norm"] = float(accelerator.clip_grad_norm_(params, config.grad_clip))
                optimizer.step()
                step += 1

                # 4b. report, then let the caller stop us
                if step % config.log_every == 0 or step == stop:
                    if writer is not None:
                        for key, value in scalars.items():
                            writer.add_scalar(f"{task.name}/{key}", value, step)
                    if bar is not None:
                        bar.set_postfix_str(_format_scalars(scalars), refresh=False)
                if bar is not None:
                    bar.update(1)
                if progress is not None:
                    try:
                        progress(step, stop, dict(scalars))
                    except BaseException:
                        save(step)
                        raise
                if step % config.checkpoint_every == 0 or step == stop:
                    save(step)
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()

        # 5. the result
        if step < config.steps:
            folder = out / CHECKPOINTS_DIR / checkpoint_name(step)
            logger.info("train: stopped at step %d of %d (max_steps); resume with --resume", step, config.steps)
            return folder if folder.is_dir() else save(step)
        final = out / FINAL_DIR
        accelerator.wait_for_everyone()
        if is_main:
            for module in modules.values():
                module.eval()
            task.export({**{name: accelerator.unwrap_model(module) for name, module in modules.items()},
                         **parts.frozen}, final)
            logger.info("train: %s done after %d steps; model in '%s'", task.name, step, final)
        accelerator.wait_for_everyone()
        return final
