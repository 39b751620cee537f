"""SINGER training: one shared, exactly resumable loop (``loop``) and the tasks that plug into it.

Command line: ``python -m singer_core.train TASK [--preset NAME] [--config F] [--data DIR] [--out DIR] [--resume]``;
several GPUs / nodes: ``accelerate launch -m singer_core.train TASK ...``. In Python:
``singer_core.train.loop.train("motion", preset="tiny", out="runs/motion")``.

``TASKS`` maps a task name to "module:Class"; modules are imported only when the task is used, so adding a
task costs nothing at import. A module path starting with "." is relative to this package.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

TASKS: dict[str, str] = {
    "dynamic-sync": ".dynamic_sync:DynamicSyncTask",  # DAMC's Dynamic-Sync Encoder E_d + lip-sync expert (§2.2)
    "frame-autoencoder": ".frame_autoencoder:FrameAutoencoderTask",  # FD2Talk §3.4.2 E / 2d-input D fine-tune
    "frames": ".frames:FramesTask",  # FD2Talk stage 2: the frame Diffusion UNet (§3.3, eq. 16)
    "lip-expert": ".lip_expert:LipExpertTask",  # FD2Talk's lip expert on mouth-vertex motion (contrastive)
    "motion": ".motion:MotionTask",  # FD2Talk stage 1: expression / pose DiTs (eq. 12)
    "nerf": ".nerf:NerfTask",  # DAMC §2.4 per-subject audio-driven NeRF (ER-NeRF head) + jointly trained CSFM
    "singer": ".singer:SingerTask",  # SINGER (§3, §6.1.1): audio projection + MSM + SFM on the frozen stack
    "vae": ".vae:VAETask",  # a small AutoencoderKL on SynthSinger frames (the tiny stack's frozen VAE)
}


def task_class(name: str) -> type:
    """Import and return the Task class registered as `name` (a ValueError listing the tasks otherwise)."""
    if name not in TASKS:
        raise ValueError(f"unknown training task {name!r}; tasks: {', '.join(sorted(TASKS))}")
    module_name, _, class_name = TASKS[name].partition(":")
    module = importlib.import_module(module_name, package=__name__ if module_name.startswith(".") else None)
    try:
        return getattr(module, class_name)
    except AttributeError as error:
        raise ValueError(f"training task {name!r}: {module.__name__} has no class {class_name!r}") from error
