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

Checkpoints (:mod:`.checkpoints`) are written into a hidden temporary folder and renamed, so a crash leaves
either the whole checkpoint or none; nothing is pickled. The run's config is resolved by :mod:`.config`. The
data of step s depends only on (seed, s) -- a seeded permutation per epoch -- so resuming needs the step
number and the saved RNG states, nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ..io.checkpoint import atomic_write_bytes
from ..io.lock import folder_lock
from .checkpoints import (
    CHECKPOINTS_DIR,
    checkpoint_name,
    checkpoint_of_step,
    list_checkpoints,
    model_state,
    newest_valid_checkpoint,
    set_rng_state,
    training_state,
    unflatten_optimizer_state,
    write_checkpoint,
)
from .config import LoopConfig, config_difference, resolve_config

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
RUN_CONFIG = "config.json"

StepReport = Callable[[int, int, dict], None]  # report(step, total, scalars): see singer_core.progress


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



def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's global RNG and python's random."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 (seed the global RNG third-party code uses)
    torch.manual_seed(seed)


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
    config, resume = _run_config(task, out, preset=preset, config=config, resume=resume, resume_from=resume_from)
    stop = config.steps if max_steps is None else min(int(max_steps), config.steps)
    if stop < 0:
        raise ValueError(f"train: max_steps must be >= 0, got {max_steps}")

    # one job per run folder (on every process of a multi-GPU run only the main one holds the lock)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with folder_lock(out, "train") if main_rank else contextlib.nullcontext():
        # 1. the run folder: same config on resume, no silent mixing of runs
        _prepare_run_folder(out, task.name, config, resume)
        # 2. build (model init draws from the seeded global RNG), optimizer, accelerate
        run = _build_run(task, config, out, data=data, cache_dir=cache_dir, device=device)
        # 3. resume
        if resume:
            _resume(run, resume_from)
        # 4. the steps
        _run_steps(run, stop, progress=progress, quiet=quiet)
        # 5. the result
        return _finish(run)


# ---- the named steps of train() ------------------------------------------------------------------
@dataclasses.dataclass
class _Run:
    """The live state of one training run, shared by the steps of :func:`train`."""

    task: Any  # the Task instance
    config: LoopConfig  # the resolved run config
    config_dict: dict  # config as its JSON object (what out/config.json and every checkpoint record)
    out: Path  # the run folder
    accelerator: Any  # accelerate.Accelerator
    frozen: dict[str, torch.nn.Module]  # TrainParts.frozen, on the device
    data: DataSource  # TrainParts.data
    modules: dict[str, torch.nn.Module]  # the trainable modules as prepared by accelerate, in TrainParts order
    models: dict[str, torch.nn.Module]  # modules and frozen together: what task.loss receives
    params: list[torch.nn.Parameter]  # the optimized parameters (for gradient clipping)
    optimizer: Any  # the prepared optimizer
    step: int = 0  # optimizer steps done
    scalars: dict[str, float] = dataclasses.field(default_factory=dict)  # the last step's logged values
    last_saved: int | None = None  # step of the checkpoint written (or resumed from) last

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def _run_config(task, out: Path, *, preset: str | None, config, resume: bool,
                resume_from: int | None) -> tuple[LoopConfig, bool]:
    """(the run's config, whether to resume): resume_from implies resume; resuming with neither preset nor
    config reads the run's own out/config.json."""
    if resume_from is not None:
        if isinstance(resume_from, bool) or not isinstance(resume_from, int) or resume_from < 1:
            raise ValueError(f"train: resume_from must be a checkpoint step >= 1, got {resume_from!r}")
        resume = True
    run_config_path = out / RUN_CONFIG
    if resume and preset is None and config is None and run_config_path.is_file():
        config = json.loads(run_config_path.read_text()).get("config", {})
    return resolve_config(type(task), preset, config), resume


def _prepare_run_folder(out: Path, task_name: str, config: LoopConfig, resume: bool) -> None:
    """Refuse a started run unless resuming it with the same task and config; create `out`; drop the hidden
    temporary folders of interrupted checkpoint writes."""
    run_config_path = out / RUN_CONFIG
    config_dict = json.loads(config.to_json())
    started = run_config_path.is_file() and (bool(list_checkpoints(out)) or (out / FINAL_DIR).exists())
    if started:  # a run folder with nothing trained yet (e.g. its build failed) may be reused freely
        previous = json.loads(run_config_path.read_text())
        if not resume:
            raise FileExistsError(f"train: '{out}' already holds a run; pass resume=True (--resume) to "
                                  "continue it, or choose another --out")
        if previous.get("task") != task_name or previous.get("config") != config_dict:
            changes = config_difference(previous.get("config", {}), config_dict)
            raise ValueError(f"train: cannot resume '{out}' with a different config (task "
                             f"{previous.get('task')!r} -> {task_name!r}; {'; '.join(changes) or 'no field'}); "
                             "resume with the run's own config (omit --preset/--config) or train into a new --out")
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / CHECKPOINTS_DIR).glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build_run(task, config: LoopConfig, out: Path, *, data, cache_dir, device) -> _Run:
    """Accelerator, the task's parts (built after seeding the global RNG), the optimizer, accelerate's
    prepare; then out/config.json records the run."""
    accelerator = _make_accelerator(device, config.mixed_precision)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
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
    modules = dict(zip(names, prepared[:-1], strict=True))
    config_dict = json.loads(config.to_json())
    run = _Run(task=task, config=config, config_dict=config_dict, out=out, accelerator=accelerator,
               frozen=parts.frozen, data=parts.data, modules=modules, models={**modules, **parts.frozen},
               params=params, optimizer=prepared[-1])
    if run.is_main:
        record = {"task": task.name, "config": config_dict}
        atomic_write_bytes(out / RUN_CONFIG, json.dumps(record, indent=2, sort_keys=True).encode())
    return run


def _resume(run: _Run, resume_from: int | None) -> None:
    """Load models, optimizer and RNG states from the newest valid checkpoint (or that of step resume_from);
    nothing to resume starts at step 0."""
    out = run.out
    found = newest_valid_checkpoint(out) if resume_from is None else checkpoint_of_step(out, resume_from)
    if found is None:
        logger.info("train: nothing to resume in '%s'; starting at step 0", out)
        return
    folder, tensors, state = found
    if state.get("config") != run.config_dict or state.get("task") != run.task.name:
        raise ValueError(f"train: checkpoint '{folder}' belongs to another config/task; train into a new --out")
    for name, module in run.modules.items():
        run.accelerator.unwrap_model(module).load_state_dict(model_state(tensors, name), strict=True)
    run.optimizer.load_state_dict(unflatten_optimizer_state(tensors, state["optimizer"]))
    set_rng_state(tensors, state["rng"])
    run.step = int(state["step"])
    run.last_saved = run.step or None
    logger.info("train: resumed '%s' at step %d from %s", out, run.step, folder.name)


def _optimisation_step(run: _Run) -> dict[str, float]:
    """One optimizer step at step run.step (warm-up learning rate, the task's loss on that step's batch,
    backward, clipping); returns the scalars to log. A non-finite loss is a RuntimeError naming the fix."""
    config, accelerator, optimizer, step = run.config, run.accelerator, run.optimizer, run.step
    lr = learning_rate(config, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batch = run.data.batch(step, rank=accelerator.process_index, world=accelerator.num_processes)
    batch = _to_device(batch, accelerator.device)
    with accelerator.autocast():
        loss, scalars = run.task.loss(run.models, batch)
    if not torch.isfinite(loss.detach()).all():
        saved = [done for done, _ in list_checkpoints(run.out)]
        raise RuntimeError(f"train: loss is {loss.item()} at step {step} of task {run.task.name!r}; lower "
                           f"lr (now {lr:g}) or resume from an earlier checkpoint with --resume-from "
                           f"STEP (saved steps: {saved or 'none'})")
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    scalars = {"loss": float(loss.detach()), **{k: float(v) for k, v in scalars.items()}, "lr": lr}
    if config.grad_clip > 0 and accelerator.sync_gradients:
        scalars["grad_norm"] = float(accelerator.clip_grad_norm_(run.params, config.grad_clip))
    optimizer.step()
    return scalars


def _save(run: _Run, done: int) -> Path:
    """Checkpoint of step `done` (once per step), keeping the newest config.keep_checkpoints."""
    folder = run.out / CHECKPOINTS_DIR / checkpoint_name(done)
    if run.last_saved == done and folder.is_dir():
        return folder
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if run.is_main:
        tensors, state = training_state(
            task=run.task.name, step=done, config=run.config_dict,
            models={name: accelerator.unwrap_model(module).state_dict() for name, module in run.modules.items()},
            optimizer=run.optimizer.state_dict(), scalars=run.scalars)
        write_checkpoint(folder, tensors, state)
        for _old_step, old in list_checkpoints(run.out)[:-run.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    run.last_saved = done
    return folder


def _run_steps(run: _Run, stop: int, *, progress: StepReport | None, quiet: bool) -> None:
    """Optimizer steps until run.step == stop: log every config.log_every, call `progress` (a checkpoint
    is written before its exception propagates), checkpoint every config.checkpoint_every and at stop."""
    config, name = run.config, run.task.name
    writer = _summary_writer(run.out / "tensorboard", purge_step=run.step or None) if run.is_main else None
    bar = None
    if run.is_main and not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop, initial=min(run.step, stop), desc=f"train {name}", unit="step", dynamic_ncols=True)
    for module in run.modules.values():
        module.train()
    try:
        while run.step < stop:
            # 1. one optimizer step
            run.scalars = _optimisation_step(run)
            run.step += 1
            step = run.step
            # 2. report, then let the caller stop us
            if step % config.log_every == 0 or step == stop:
                if writer is not None:
                    for key, value in run.scalars.items():
                        writer.add_scalar(f"{name}/{key}", value, step)
                if bar is not None:
                    bar.set_postfix_str(_format_scalars(run.scalars), refresh=False)
            if bar is not None:
                bar.update(1)
            if progress is not None:
                try:
                    progress(step, stop, dict(run.scalars))
                except BaseException:
                    _save(run, step)
                    raise
            # 3. checkpoint
            if step % config.checkpoint_every == 0 or step == stop:
                _save(run, step)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()


def _finish(run: _Run) -> Path:
    """out/final (the task's export) when the run reached config.steps, else the stopping step's checkpoint."""
    step, accelerator = run.step, run.accelerator
    if step < run.config.steps:
        folder = run.out / CHECKPOINTS_DIR / checkpoint_name(step)
        logger.info("train: stopped at step %d of %d (max_steps); resume with --resume", step, run.config.steps)
        return folder if folder.is_dir() else _save(run, step)
    final = run.out / FINAL_DIR
    accelerator.wait_for_everyone()
    if run.is_main:
        for module in run.modules.values():
            module.eval()
        run.task.export({**{name: accelerator.unwrap_model(module) for name, module in run.modules.items()},
                         **run.frozen}, final)
        logger.info("train: %s done after %d steps; model in '%s'", run.task.name, step, final)
    accelerator.wait_for_everyone()
    return final
