"""Evaluation nodes: score a generated clip against whatever reference is connected (PSNR, SSIM, CPBD, LMD,
coefficient errors, mouth-energy correlation, Beat Align Score, diversity) and the Fréchet Video Distance
of two sets of clips with a user-provided I3D TorchScript file."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from .comfy_bridge import (
    DEVICE_CHOICES,
    EVAL_FOLDER,
    FaceIdentityType,
    Motion,
    comfy_progress,
    image_from_uint8,
    model_files,
    model_folder,
    resolve_model_path,
    torch_device,
)
from .web_preview import merge_ui

logger = logging.getLogger(__name__)

I3D_FILE = "i3d_torchscript.pt"  # singer_core.eval.fvd.I3D_FILE (not imported here: nothing heavy at start-up)


def _media(value, who: str, name: str) -> tuple[torch.Tensor, float | None, dict | None]:
    """IMAGE (T, H, W, 3) or VIDEO -> frames, the video's fps (None for IMAGE) and its AUDIO (or None)."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 4 or value.shape[-1] not in (3, 4):
            raise ValueError(f"{who}: {name} must be an IMAGE batch (frames, H, W, 3), got {tuple(value.shape)}")
        return value[..., :3], None, None
    if hasattr(value, "get_components"):
        components = value.get_components()
        images = components.images
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"{who}: the VIDEO on {name} has no frames")
        return images[..., :3], float(components.frame_rate), components.audio
    raise ValueError(f"{who}: {name} must be an IMAGE batch or a VIDEO, got {type(value).__name__}")


def _i3d_options() -> list[str]:
    files = model_files(EVAL_FOLDER, (".pt", ".pth", ".torchscript"))
    return files or [I3D_FILE]


class SingerEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerEvaluate",
            display_name="Evaluate Clip (SINGER)",
            category="SINGER/eval",
            description=("Score a generated clip with every metric its inputs allow: CPBD sharpness always; PSNR and "
                         "SSIM against ground-truth frames; LMD and 3DMM coefficient errors between a generated and a "
                         "ground-truth motion (landmarks projected with the procedural face model); mouth-energy "
                         "correlation and Beat Align Score with the song. Metrics that need a missing input are "
                         "listed as 'n/a (needs ...)'."),
            inputs=[
                io.MultiType.Input("generated", types=[io.Image, io.Video],
                                   tooltip="The generated frames (IMAGE batch) or video (VIDEO). Its CPBD sharpness "
                                           "follows the MATLAB reference (edge() defaults), not the PyPI cpbd 1.0.7 "
                                           "package (r = 0.92, mean |diff| 0.06 on blurred faces)."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate of IMAGE frames (a VIDEO's own rate is used instead)."),
                io.MultiType.Input("ground_truth", types=[io.Image, io.Video], optional=True,
                                   tooltip="Ground-truth frames or video for PSNR / SSIM (trimmed to the shorter "
                                           "clip; resized to the generated size if it differs)."),
                Motion.Input("motion", optional=True,
                             tooltip="The generated SINGER_MOTION (e.g. from Sample Motion): diversity, and with "
                                     "gt_motion LMD and coefficient errors, with audio mouth-energy and BAS."),
                Motion.Input("gt_motion", optional=True,
                             tooltip="The ground-truth SINGER_MOTION (e.g. from SynthSinger Clip)."),
                FaceIdentityType.Input("identity", optional=True,
                                       tooltip="The face whose landmarks are projected (default: the mean face)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The song (ideally the vocals) for mouth-energy correlation and the beats of "
                                       "the Beat Align Score; default: the generated VIDEO's audio."),
                io.String.Input("beat_times", default="", optional=True,
                                tooltip="Music beat times in seconds, comma-separated; empty = estimate beats "
                                        "from the audio's onsets."),
            ],
            outputs=[
                io.String.Output("table", display_name="table", tooltip="A markdown table: metric, generated, reference, better."),
                io.Image.Output("plot", display_name="plot", tooltip="Per-frame PSNR / SSIM curves with ground truth, else a bar chart "
                                                "of the scores in [-1, 1]."),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, beat_times=""):
        try:
            _beat_times(beat_times)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, generated, fps, ground_truth=None, motion=None, gt_motion=None, identity=None, audio=None,
                beat_times="") -> io.NodeOutput:
        from ..singer_core.audio.io import audio_from_comfy
        from ..singer_core.eval.report import evaluate_clip, evaluation_plot, markdown_table

        who = "SingerEvaluate"
        frames, video_fps, video_audio = _media(generated, who, "generated")
        truth = _media(ground_truth, who, "ground_truth")[0] if ground_truth is not None else None
        audio = audio if audio is not None else video_audio
        waveform, sample_rate = (None, None)
        if audio is not None:
            waveform, sample_rate = audio_from_comfy(audio, who)
            waveform = waveform[0]
        try:
            evaluation = evaluate_clip(frames, fps=video_fps or fps, ground_truth=truth, motion=motion,
                                       gt_motion=gt_motion, identity=identity.id if identity is not None else None,
                                       waveform=waveform, sample_rate=sample_rate, beat_times=_beat_times(beat_times),
                                       progress=comfy_progress(4))
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        table = markdown_table(evaluation, title=f"SINGER evaluation: {frames.shape[0]} frames")
        logger.info("%s:\n%s", who, table)
        plot = image_from_uint8(evaluation_plot(evaluation))
        return io.NodeOutput(table, plot, ui=merge_ui(ui.PreviewText(table), ui.PreviewImage(plot, cls=cls)))


def _beat_times(text: str | None) -> list[float] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        values = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"SingerEvaluate: beat_times must be numbers in seconds separated by commas, got "
                         f"{text[:60]!r}") from None
    if any(value < 0 for value in values):
        raise ValueError("SingerEvaluate: beat_times must be >= 0 seconds")
    return values


def _clips(frames: torch.Tensor, length: int, who: str, name: str) -> torch.Tensor:
    """(T, H, W, 3) -> (T // length, length, H, W, 3) consecutive clips (the remainder is dropped)."""
    count = frames.shape[0] // length
    if count < 2:
        raise ValueError(f"{who}: {name} has {frames.shape[0]} frames: fewer than two {length}-frame clips; FVD "
                         f"needs at least 2 clips per set (give >= {2 * length} frames or lower clip_frames)")
    return frames[: count * length].reshape(count, length, *frames.shape[1:])


class SingerFVD(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerFVD",
            display_name="Fréchet Video Distance (SINGER)",
            category="SINGER/eval",
            description=("FVD (Unterthiner et al. 2018) between two sets of clips: each input is cut into consecutive "
                         "clips of clip_frames frames, embedded with I3D and the Fréchet distance of the two "
                         f"Gaussians is reported. Needs {I3D_FILE} (StyleGAN-V's TorchScript I3D) in "
                         f"models/{EVAL_FOLDER}/. Meaningful only with many clips (hundreds)."),
            inputs=[
                io.MultiType.Input("videos_a", types=[io.Image, io.Video],
                                   tooltip="The first set, e.g. generated frames (IMAGE batch or VIDEO)."),
                io.MultiType.Input("videos_b", types=[io.Image, io.Video],
                                   tooltip="The second set, e.g. ground-truth frames (IMAGE batch or VIDEO)."),
                io.Combo.Input("i3d_model", options=_i3d_options(),
                               tooltip=f"The I3D TorchScript file in models/{EVAL_FOLDER}/ ({I3D_FILE})."),
                io.Int.Input("clip_frames", default=16, min=10, max=256,
                             tooltip="Frames per clip (FVD usually uses 16; I3D needs at least 10)."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="Where to run I3D; auto = ComfyUI's torch device."),
            ],
            outputs=[
                io.Float.Output("fvd", display_name="FVD", tooltip="The Fréchet Video Distance (lower = more alike)."),
                io.String.Output("report", display_name="report", tooltip="One line: FVD, clip counts and clip length."),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, i3d_model):
        if resolve_model_path(EVAL_FOLDER, i3d_model) is None:
            return (f"SingerFVD: the I3D feature extractor '{i3d_model}' is not in {model_folder(EVAL_FOLDER)}; "
                    f"download {I3D_FILE} (StyleGAN-V's converted Kinetics-400 I3D, "
                    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt) and put it in that folder "
                    f"(ComfyUI/models/{EVAL_FOLDER}/{I3D_FILE}), then refresh the node list")
        return True

    @classmethod
    def execute(cls, videos_a, videos_b, i3d_model, clip_frames, device) -> io.NodeOutput:
        from ..singer_core.eval.fvd import fvd

        who = "SingerFVD"
        path = resolve_model_path(EVAL_FOLDER, i3d_model)
        if path is None:
            raise ValueError(cls.validate_inputs(i3d_model))
        a = _clips(_media(videos_a, who, "videos_a")[0], clip_frames, who, "videos_a")
        b = _clips(_media(videos_b, who, "videos_b")[0], clip_frames, who, "videos_b")
        device = torch_device(device)
        try:
            value = fvd(a, b, path, device=device, progress=comfy_progress(a.shape[0] + b.shape[0]))
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"{who}: {error}") from error
        report = f"FVD {value:.4f} ({a.shape[0]} vs {b.shape[0]} clips of {clip_frames} frames, {path.name})"
        logger.info("%s: %s", who, report)
        return io.NodeOutput(value, report, ui=ui.PreviewText(report))
