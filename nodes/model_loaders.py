"""The shape every loader of a model the pack trains shares (motion DiTs, FD2Talk frame models, NeRF subjects,
SINGER video stacks): its choices are the sub-folders of its ComfyUI model folder plus the demo's out/models ones,
a missing model refuses the prompt in validate_inputs with what to run, and execute resolves the name or raises
that same message. Each loader node declares one TrainedModels and stays a thin adapter over it; the device
choices and their resolution are comfy_bridge.DEVICE_CHOICES / torch_device."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .comfy_bridge import (
    DEMO_COMMAND,
    DEMO_PREFIXES,
    demo_models_dir,
    model_folder,
    model_locations,
    model_subfolders,
    resolve_model_path,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainedModels:
    """One kind of model folder the trainer writes (`python -m singer_core.train <task>`, its out/final folder).

    label: how messages name it ("motion model"); folder: the ComfyUI model folder (one of comfy_bridge's
    *_FOLDER, with a demo prefix in DEMO_PREFIXES); task, preset: the training command a message suggests;
    marker: the file that makes a sub-folder one of these models; train_node: whether the message also points to
    the Train node; demo_noun: what the demo trains, if it needs naming ("tiny stack"); fetch: where official
    weights come from, "{folder}" standing for the default model folder (a message then offers that third way).
    """

    label: str
    folder: str
    task: str
    preset: str
    marker: str = "config.json"
    train_node: bool = True
    demo_noun: str = ""
    fetch: str | None = None

    def choices(self) -> list[str]:
        """The model folders a loader's combo lists ("name/"), from every directory of the folder."""
        return model_subfolders(self.folder, self.marker)

    def missing(self, model: str) -> str:
        """What to run when `model` is not there: the demo, training one's own, or (with fetch) the official
        weights; then refresh."""
        default = model_folder(self.folder)
        demo = (f"Make the demo's{' ' + self.demo_noun if self.demo_noun else ''} with `{DEMO_COMMAND}` (it trains "
                f"{DEMO_PREFIXES[self.folder]}demo/ into {demo_models_dir()}, listed here)")
        train = (f"`python -m singer_core.train {self.task} --preset {self.preset} --out runs/{self.task}`"
                 + (" (or the Train node)" if self.train_node else "")
                 + f" and put runs/{self.task}/final into {default}/<name>/")
        head = f"{self.label} '{model}' is not in {model_locations(self.folder)}. "
        if self.fetch is None:
            return f"{head}{demo}, or train your own: {train}; then refresh (press R)"
        return f"{head}{demo}; train your own with {train}; or {self.fetch.format(folder=default)}. Then refresh (press R)"

    def validate(self, model: str) -> bool | str:
        """A loader's validate_inputs: True, or the missing message that refuses the prompt before anything runs."""
        return True if resolve_model_path(self.folder, model) is not None else self.missing(model)

    def resolve(self, model: str, who: str) -> Path:
        """The model's absolute path for a loader's execute; a ValueError "<who>: <missing message>" if it has gone
        since validation."""
        path = resolve_model_path(self.folder, model)
        if path is None:
            raise ValueError(f"{who}: {self.missing(model)}")
        return path
