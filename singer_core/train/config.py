"""Run configuration of the training loop: :class:`LoopConfig` (the settings every task config inherits) and
how a run's config is resolved from a task preset, a JSON file or ``--set`` overrides, with type errors that
name the field and the fix; ``describe_config`` feeds the CLI's ``--help``."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io.config import JsonConfig

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw")
MIXED_PRECISION = ("no", "fp16", "bf16")


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
