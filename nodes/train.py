"""Training node: run one of the trainer's tasks (``singer_core.train``: motion DiTs, lip expert, Dynamic-Sync
encoder, audio NeRF, SINGER modules, VAE) inside ComfyUI, with progress, loss text, Cancel and resume."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from comfy_api.latest import io, ui

from ..singer_core.train import TASKS
from .comfy_bridge import (
    DEVICE_CHOICES,
    FRAME_MODEL_FOLDER,
    MOTION_MODEL_FOLDER,
    NERF_MODEL_FOLDER,
    SINGER_MODEL_FOLDER,
    input_file_path,
    torch_device,
)

if TYPE_CHECKING:  # the loop module is imported when a run starts
    from ..singer_core.train.loop import StepReport

logger = logging.getLogger(__name__)

RUNS_DIR = "singer_runs"  # runs go to ComfyUI/output/singer_runs/<run name>/
CACHE_DIR = ".cache"  # generated SynthSinger data and audio features: output/singer_runs/.cache (or $SINGER_CACHE_DIR)
# where the final model of a task is copied so that the task's loader node lists it (models/<folder>/<run name>/);
# tasks without a loader node (lip-expert, dynamic-sync, vae, frame-autoencoder: parts other runs take as inputs)
# keep their model in the run folder only
TASK_MODEL_FOLDERS = {"motion": MOTION_MODEL_FOLDER, "frames": FRAME_MODEL_FOLDER, "nerf": NERF_MODEL_FOLDER,
                      "singer": SINGER_MODEL_FOLDER}
# Every task's preset names, listed here so that drawing the node imports no trainer (ComfyUI's start-up must stay
# under 1 s); validate_inputs checks the chosen task's own presets, and tests/comfyui/test_tool_nodes.py checks this
# list against the trainers' `presets`.
PRESET_OPTIONS = ("tiny", "demo", "small", "paper", "paper-joint", "paper-no-mask", "paper-no-sync", "paper-content",
                  "paper-dynamic", "paper-concat", "paper-cross", "tiny-no-msm", "tiny-no-sfm", "tiny-no-both")
TEXT_INTERVAL_S = 0.5  # at most this often a progress text is sent to the browser
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def task_presets() -> dict[str, list[str]]:
    """task -> its preset names (task modules are imported here: they define the presets)."""
    from ..singer_core.train import task_class

    presets = {}
    for task in sorted(TASKS):
        try:
            presets[task] = list(task_class(task).presets)
        except (ImportError, ValueError) as error:  # an optional dependency of one task must not hide the node
            logger.warning("SingerTrain: task %s is unavailable: %s", task, error)
    return presets


def runs_directory() -> Path:
    """ComfyUI/output/singer_runs."""
    import folder_paths

    return Path(folder_paths.get_output_directory()) / RUNS_DIR


def dataset_path(dataset: str) -> Path | None:
    """The dataset folder (relative to ComfyUI's input folder), or None for generated SynthSinger."""
    dataset = dataset.strip()
    if not dataset:
        return None
    return input_file_path(dataset, "SingerTrain: dataset", folder=True,
                           fix="copy the SINGER dataset folder (index.json + clips) into it, or leave the field "
                               "empty to train on generated SynthSinger")


def install_model(final: Path, folder_name: str, run_name: str) -> Path:
    """Copy a run's final model folder to models/<folder_name>/<run_name>/, replacing an older copy atomically
    (the copy is made under a hidden name and renamed)."""
    import folder_paths

    if folder_name in folder_paths.folder_names_and_paths:
        root = Path(folder_paths.get_folder_paths(folder_name)[0])
    else:
        root = Path(folder_paths.models_dir) / folder_name
    root.mkdir(parents=True, exist_ok=True)
    target = root / run_name
    staging = root / f".{run_name}.{uuid.uuid4().hex[:8]}"
    shutil.copytree(final, staging)
    old = None
    if target.exists():
        old = root / f".{run_name}.old.{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _send_text(text: str, node_id: str | None) -> None:
    if node_id is None:
        return
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(text, node_id)
    except (ImportError, AttributeError) as error:  # older ComfyUI: the progress bar alone
        logger.debug("SingerTrain: no progress text (%s)", error)


def training_progress(node_id: str | None, task: str) -> StepReport:
    """progress(step, total, scalars) for singer_core.train.loop.train: ComfyUI's progress bar, a text line with
    the loss under the node (throttled), and Cancel (the interruption check raises; the loop then writes a
    checkpoint of the last finished step and re-raises)."""
    import comfy.model_management
    import comfy.utils

    bar = comfy.utils.ProgressBar(1, node_id=node_id)
    last = [0.0]

    def progress(step: int, total: int, scalars: dict) -> None:
        bar.update_absolute(step, max(total, 1))
        now = time.monotonic()
        if now - last[0] >= TEXT_INTERVAL_S or step >= total:
            last[0] = now
            values = " ".join(f"{key} {value:.4g}" for key, value in scalars.items() if key in ("loss", "lr"))
            _send_text(f"{task}: step {step}/{total} {values}", node_id)
        comfy.model_management.throw_exception_if_processing_interrupted()

    return progress


class SingerTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerTrain",
            display_name="Train (SINGER)",
            category="SINGER/train",
            description=("Train a SINGER model with `singer_core.train` (the same loop as `python -m singer_core.train "
                         f"TASK`). The run goes to output/{RUNS_DIR}/<run name>/ (checkpoints, TensorBoard, final/); "
                         "Cancel keeps a checkpoint of the last step and resume continues from it. The final model "
                         f"of motion / frames / nerf / singer runs is copied to models/{MOTION_MODEL_FOLDER}/, "
                         f"models/{FRAME_MODEL_FOLDER}/, models/{NERF_MODEL_FOLDER}/ or models/{SINGER_MODEL_FOLDER}/ "
                         "as <run name>/ so the loader nodes list it."),
            inputs=[
                io.Combo.Input("task", options=sorted(TASKS), default="motion",
                               tooltip="motion: FD2Talk expression / pose DiTs; lip-expert: its sync expert; "
                                       "dynamic-sync: DAMC's dynamic audio encoder; nerf: DAMC's audio NeRF; "
                                       "singer: SINGER's audio / MSM / SFM modules; vae: the tiny stack's VAE."),
                io.Combo.Input("preset", options=list(PRESET_OPTIONS), default="tiny",
                               tooltip="The task's config preset ('tiny' runs on a CPU in about a minute; 'paper' "
                                       "is the paper's setting, for GPUs). Not every task has every preset."),
                io.String.Input("dataset", default="",
                                tooltip="A SINGER dataset folder inside ComfyUI's input folder (relative path); "
                                        "empty = SynthSinger generated for the preset (cached)."),
                io.String.Input("run_name", default="motion-run",
                                tooltip=f"Name of the run folder output/{RUNS_DIR}/<run name>/ and of the installed "
                                        "model folder (letters, digits, '.', '_', '-')."),
                io.Int.Input("steps", default=0, min=0, max=10_000_000,
                             tooltip="Total optimizer steps (0 = the preset's). Resume with the same value."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue the run of this name from its newest checkpoint (same task, "
                                         "preset and steps); off refuses to overwrite an existing run."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="Where to train; auto = ComfyUI's torch device."),
            ],
            outputs=[
                io.String.Output("model_path", display_name="model path", tooltip="The trained model folder: the installed copy in models/ "
                                                       "for motion / nerf / singer, else the run's final/."),
                io.String.Output("run_folder", display_name="run folder", tooltip="The run folder (checkpoints, tensorboard, final)."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, task, preset, run_name, dataset):
        if task not in TASKS:
            return f"SingerTrain: unknown task '{task}'; tasks: {', '.join(sorted(TASKS))}"
        try:
            presets = task_presets().get(task)
        except Exception as error:  # noqa: BLE001
            return f"SingerTrain: cannot load task '{task}': {error}"
        if presets is None:
            return f"SingerTrain: task '{task}' cannot be loaded here (see the server log)"
        if preset not in presets:
            return f"SingerTrain: task '{task}' has no preset '{preset}'; its presets: {', '.join(presets)}"
        if not _RUN_NAME.match(run_name or ""):
            return (f"SingerTrain: run name {run_name!r} must be 1-64 letters, digits, '.', '_' or '-', starting "
                    "with a letter or digit")
        try:
            dataset_path(dataset)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, task, preset, dataset, run_name, steps, resume, device) -> io.NodeOutput:
        from ..singer_core.train.loop import FINAL_DIR, train

        who = "SingerTrain"
        runs = runs_directory()
        out = runs / run_name
        cache_dir = Path(os.environ["SINGER_CACHE_DIR"]) if os.environ.get("SINGER_CACHE_DIR") else runs / CACHE_DIR
        device = torch_device(device)
        config = {"steps": int(steps)} if steps > 0 else None
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        _send_text(f"{task}: preparing (preset {preset})", node_id)
        try:
            # ComfyUI runs nodes under torch.inference_mode(); training needs autograd back
            with torch.inference_mode(False), torch.enable_grad():
                result = train(task, preset=preset, config=config, data=dataset_path(dataset), out=out,
                               resume=resume, progress=training_progress(node_id, task), device=device,
                               cache_dir=cache_dir, quiet=True)
        except FileExistsError as error:
            raise ValueError(f"{who}: the run '{run_name}' already exists in {runs}; turn 'resume' on to continue "
                             "it or choose another run name") from error
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        if result.name != FINAL_DIR:  # cannot happen without max_steps; keep the message honest anyway
            raise RuntimeError(f"{who}: the run stopped at checkpoint {result}; resume it to finish")
        model_path = result
        if task in TASK_MODEL_FOLDERS:
            model_path = install_model(result, TASK_MODEL_FOLDERS[task], run_name)
        text = f"{task} run '{run_name}' finished: model in {model_path}"
        logger.info("%s: %s", who, text)
        _send_text(text, node_id)
        return io.NodeOutput(str(model_path), str(out), ui=ui.PreviewText(text))
