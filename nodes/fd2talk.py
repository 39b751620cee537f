"""FD2Talk frame-stage nodes: load a trained frame model and animate a portrait with a sampled motion."""

from __future__ import annotations

import logging
from fractions import Fraction

from comfy_api.latest import InputImpl, Types, io

from .comfy_bridge import (
    DEVICE_CHOICES,
    FRAME_MODEL_FOLDER,
    FrameModelType,
    Motion,
    comfy_progress,
    portrait_from_image,
    torch_device,
)
from .model_loaders import TrainedModels
from .web_preview import video_preview_ui

logger = logging.getLogger(__name__)
MARKER = "fd2talk_frames.json"
FRAME_MODELS = TrainedModels("frame model", FRAME_MODEL_FOLDER, task="frames", preset="tiny", marker=MARKER,
                             train_node=False)


class SingerFrameModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerFrameModelLoader",
            display_name="Load Frame Model (FD2Talk)",
            category="SINGER/motion",
            description=("Load FD2Talk's frame stage (a frame Diffusion UNet conditioned on motion and on the "
                         "portrait's latent, and its autoencoder) trained with `python -m singer_core.train frames`. "
                         f"Put the run's `final` folder into models/{FRAME_MODEL_FOLDER}/."),
            inputs=[
                io.Combo.Input("model", options=FRAME_MODELS.choices(),
                               tooltip=f"A folder in models/{FRAME_MODEL_FOLDER}/ holding unet/, autoencoder/ and "
                                       f"{MARKER}."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="Where to run; auto = ComfyUI's torch device."),
            ],
            outputs=[FrameModelType.Output("frame_model", display_name="frame model", tooltip="The frame model, for Animate Portrait.")],
        )

    @classmethod
    def validate_inputs(cls, model):
        return FRAME_MODELS.validate(model)

    @classmethod
    def execute(cls, model, device) -> io.NodeOutput:
        from ..singer_core.diffusion.fd2talk_portrait import load_frame_model

        path = FRAME_MODELS.resolve(model, "SingerFrameModelLoader")
        return io.NodeOutput(load_frame_model(path, device=torch_device(device)))


class SingerAnimatePortrait(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerAnimatePortrait",
            display_name="Animate Portrait (FD2Talk)",
            category="SINGER/video",
            description=("Animate a portrait with a motion (expression + head pose per frame, e.g. from Sample "
                         "Motion): every frame is denoised by the frame UNet conditioned on its motion and on the "
                         "portrait (DDIM, FD2Talk eq. 5) and decoded together with the portrait's latent. Any song "
                         "length; memory is bounded by frame_batch. Progress = frames x steps."),
            inputs=[
                FrameModelType.Input("frame_model", tooltip="From Load Frame Model."),
                Motion.Input("motion", tooltip="Per-frame expression + pose (Sample Motion); sets the frame count "
                                               "and the frame rate."),
                io.Image.Input("image", tooltip="The portrait (first image of a batch); its centred square is "
                                                "resized to the model's frame size."),
                io.Audio.Input("audio", optional=True, tooltip="The song, attached to the video."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps per frame (paper: 50)."),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="DDIM stochasticity: 0 = deterministic, 1 = DDPM-like."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same video."),
                io.Int.Input("frame_batch", default=16, min=1, max=256,
                             tooltip="Frames denoised together: more is faster on a GPU, uses more memory."),
            ],
            outputs=[
                io.Video.Output("video", display_name="video", tooltip="The animated portrait with the song attached (for Save Video)."),
                io.Image.Output("frames", display_name="frames", tooltip="The frames as an IMAGE batch at the model's frame size."),
            ],
        )

    @classmethod
    def execute(cls, frame_model, motion, image, steps, eta, seed, frame_batch, audio=None) -> io.NodeOutput:
        from ..singer_core.audio.io import audio_from_comfy
        from ..singer_core.diffusion.fd2talk_portrait import animate_portrait

        who = "SingerAnimatePortrait"
        portrait = portrait_from_image(image, who)
        count = motion.exp.shape[0]
        try:
            frames = animate_portrait(frame_model, portrait, motion, steps=steps, eta=eta, seed=seed,
                                      frame_batch=frame_batch, progress=comfy_progress(count * steps))
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        song = None
        if audio is not None:
            items, rate = audio_from_comfy(audio, who)
            song = {"waveform": items[:1].float().cpu(), "sample_rate": int(rate)}
        fps = float(motion.fps)
        video = InputImpl.VideoFromComponents(Types.VideoComponents(
            images=frames, audio=song, frame_rate=Fraction(fps).limit_denominator(1001)))
        return io.NodeOutput(video, frames, ui=video_preview_ui(frames, fps, song, "singer_animate_portrait"))


__all__ = ["SingerAnimatePortrait", "SingerFrameModelLoader"]
