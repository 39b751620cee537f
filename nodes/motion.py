"""Motion nodes (FD2Talk stage 1): load a trained motion DiT pair and sample 3DMM expression + head pose
from a song's per-frame audio features."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from .comfy_bridge import (
    DEVICE_CHOICES,
    MOTION_MODEL_FOLDER,
    AudioFeatures,
    Motion,
    MotionModelType,
    comfy_progress,
    torch_device,
)
from .model_loaders import TrainedModels

logger = logging.getLogger(__name__)


MOTION_MODELS = TrainedModels("motion model", MOTION_MODEL_FOLDER, task="motion", preset="demo")


class SingerMotionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerMotionLoader",
            display_name="Load Motion Model (SINGER)",
            category="SINGER/motion",
            description=("Load a motion model (FD2Talk: an expression DiT and a head-pose DiT) trained with "
                         "`python -m singer_core.train motion` or the Train node. Put the run's `final` folder "
                         f"(config.json + model.safetensors) into models/{MOTION_MODEL_FOLDER}/."),
            inputs=[
                io.Combo.Input("model", options=MOTION_MODELS.choices(),
                               tooltip=f"A folder in models/{MOTION_MODEL_FOLDER}/ holding config.json and "
                                       "model.safetensors."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="Where to run sampling; auto = ComfyUI's torch device."),
            ],
            outputs=[MotionModelType.Output("motion_model", display_name="motion model", tooltip="The motion model, for Sample Motion.")],
        )

    @classmethod
    def validate_inputs(cls, model):
        # a missing model refuses the prompt before anything runs (every output of the shipped workflow needs it)
        return MOTION_MODELS.validate(model)

    @classmethod
    def execute(cls, model, device) -> io.NodeOutput:
        from ..singer_core.motion.generator import MotionModel

        path = MOTION_MODELS.resolve(model, "SingerMotionLoader")
        return io.NodeOutput(MotionModel.from_pretrained(path, device=torch_device(device)))


class SingerSampleMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerSampleMotion",
            display_name="Sample Motion (SINGER)",
            category="SINGER/motion",
            description=("Sample per-frame 3DMM expression (64) and head pose (3 angles + 3 translations) from "
                         "the song's audio features with the motion DiTs (DDIM, FD2Talk eq. 5). Any song length: "
                         "windows of the training length overlap and are stitched without jumps."),
            inputs=[
                MotionModelType.Input("motion_model", tooltip="From Load Motion Model."),
                AudioFeatures.Input("features", tooltip="Per-frame audio features from Audio Encode; the "
                                                        "encoder must be the one the model was trained on."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps (paper: 50)."),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="DDIM stochasticity: 0 = deterministic, 1 = DDPM-like."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same motion."),
                io.Float.Input("pose_scale", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Scale of head motion around the average pose (0 = still head)."),
                io.Float.Input("expression_scale", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Scale of facial expression around the average (mouth, brows, eyes)."),
            ],
            outputs=[Motion.Output("motion", display_name="motion", tooltip="Expression + head pose per frame at the features' fps.")],
        )

    @classmethod
    def execute(cls, motion_model, features, steps, eta, seed, pose_scale, expression_scale) -> io.NodeOutput:
        motion = motion_model.generate(features, steps=steps, eta=eta, seed=seed, pose_scale=pose_scale,
                                       expression_scale=expression_scale, progress=comfy_progress(steps))
        return io.NodeOutput(motion)
