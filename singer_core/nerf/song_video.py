"""Render a trained per-subject audio NeRF (DAMC §2.4, TTS-/song-driven inference of §2.3) for a whole song
along a camera path.

A subject model folder is the nerf task's ``out/final`` (config.json + model.safetensors). It may also hold
the subject's ``transforms_train.json`` (the demo's train_demo_nerf copies it; copy it by hand for other runs):
its camera poses then give the "static" view (the first training pose), the "training" path, and the
video frame rate the audio features must have. Without it the frame rate is 25 fps (DAMC / ER-NeRF) and the
static view is the frontal camera of the SynthSinger generator (nerf.data.head_camera_poses with a still head).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..audio.features import check_features as check_audio_features
from ..audio.features import same_encoder
from ..progress import Progress
from .subject import load_subject_model

logger = logging.getLogger(__name__)


DEFAULT_FPS = 25.0  # frame rate assumed for models whose folder has no transforms_train.json (DAMC / ER-NeRF)
POSES_FILE = "transforms_train.json"  # optional copy of the subject's training transforms next to the model
CAMERA_PATHS = ("static", "sway", "training")


@dataclasses.dataclass(frozen=True, eq=False)
class NerfSubjectRenderer:
    """A loaded subject model with what rendering a song needs.

    model: NerfSubjectModel in eval mode; poses: (N, 4, 4) float32 camera-to-canonical training poses or None;
    fps: video frame rate the audio features must have; name: folder name (for messages);
    dynamic_encoder: the frozen Dynamic-Sync Encoder E_d when the model's dynamic branch reads E_d features
    (None: the model projects mel windows itself).
    """

    model: torch.nn.Module
    poses: torch.Tensor | None
    fps: float
    name: str
    dynamic_encoder: torch.nn.Module | None = None

    @property
    def width(self) -> int:
        return int(self.model.config.width)

    @property
    def height(self) -> int:
        return int(self.model.config.height)

    @property
    def content_encoder(self) -> str:
        return str(self.model.config.content_encoder)

    def describe(self) -> str:
        """One line: size, fps, fusion, what features it expects."""
        fusion = self.model.fusion
        needs = []
        if fusion.uses_dynamic:
            needs.append(f"{MEL_ENCODER_NAME} (dynamic)")
        if fusion.uses_content:
            needs.append(f"{self.content_encoder} (content)")
        poses = f"{self.poses.shape[0]} training poses" if self.poses is not None else "no training poses"
        return (f"{self.name}: {self.width}x{self.height} px, {self.fps:g} fps, fusion "
                f"{fusion.config.mode}, features {' + '.join(needs)}, {poses}")


def _read_poses(path: Path) -> tuple[torch.Tensor, float | None]:
    try:
        meta = json.loads(path.read_text())
        poses = torch.tensor([frame["transform_matrix"] for frame in meta["frames"]], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"load_nerf_subject: '{path}' is not a readable transforms file ({error}); copy the "
                         "subject's transforms_train.json there or delete it") from error
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or poses.shape[0] == 0:
        raise ValueError(f"load_nerf_subject: '{path}' holds poses of shape {tuple(poses.shape)}, need (N, 4, 4)")
    fps = meta.get("fps")
    return poses, (float(fps) if fps else None)


def load_nerf_subject(folder: str | Path, *, device="cpu") -> NerfSubjectRenderer:
    """Load a subject model folder (module docstring) for rendering.

    Args:
        folder: the nerf task's out/final (config.json + model.safetensors [+ transforms_train.json]).
        device: torch device.
    Returns:
        NerfSubjectRenderer. FileNotFoundError names a missing folder / file; ValueError a damaged one.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"load_nerf_subject: '{folder}' has no config.json; give the `final` folder of a "
                                "nerf training run (python -m singer_core.train nerf --out DIR: DIR/final)")
    model = load_subject_model(folder, device=device).eval()
    poses, fps = None, None
    if (folder / POSES_FILE).is_file():
        poses, fps = _read_poses(folder / POSES_FILE)
    encoder = None
    config = model.config
    if config.dynamic_encoder and model.mel_projection is None and model.fusion.uses_dynamic:
        from .dynamic_sync import DynamicSyncEncoder

        source = Path(config.dynamic_encoder)
        if not source.is_absolute():
            source = folder / source
        if not (source / "config.json").is_file():
            raise FileNotFoundError(
                f"load_nerf_subject: '{folder}' was trained on the Dynamic-Sync Encoder '{config.dynamic_encoder}', "
                "which is not there; put that folder (config.json + model.safetensors) at this path or inside "
                "the model folder under the same relative name")
        encoder = DynamicSyncEncoder.from_pretrained(source, device=device).eval()
    return NerfSubjectRenderer(model=model, poses=poses, fps=fps or DEFAULT_FPS, name=folder.name,
                               dynamic_encoder=encoder)


# ------------------------------------------------------------------------------------------------ cameras

def frontal_pose() -> torch.Tensor:
    """(4, 4) camera-to-canonical pose of the SynthSinger camera looking at a still, centred head."""
    from ..face.morphable import Camera
    from .data import head_camera_poses

    return head_camera_poses(torch.zeros(1, 3), torch.zeros(1, 3), distance=Camera().distance)[0].float()


def _yaw(degrees: torch.Tensor) -> torch.Tensor:
    """(F,) degrees -> (F, 4, 4) rotations about the canonical y (up) axis."""
    radians = degrees.double() * (math.pi / 180.0)
    out = torch.zeros(degrees.shape[0], 4, 4, dtype=torch.float64)
    out[:, 0, 0], out[:, 0, 2] = radians.cos(), radians.sin()
    out[:, 2, 0], out[:, 2, 2] = -radians.sin(), radians.cos()
    out[:, 1, 1] = out[:, 3, 3] = 1.0
    return out


def camera_path(subject: NerfSubjectRenderer, frames: int, mode: str = "static", *, sway_degrees: float = 6.0,
                sway_seconds: float = 4.0) -> torch.Tensor:
    """Camera poses for `frames` video frames.

    Args:
        subject: the loaded model; frames: F >= 1.
        mode: "static" (the first training pose, or the frontal SynthSinger camera), "sway" (that pose turned
            about the head's vertical axis by sway_degrees * sin(2 pi t / sway_seconds)), or "training" (the
            training poses in order, played forwards then backwards when the song is longer).
        sway_degrees, sway_seconds: amplitude and period of the sway.
    Returns:
        (F, 4, 4) float32 camera-to-canonical.
    """
    if frames < 1:
        raise ValueError(f"camera_path: frames must be >= 1, got {frames}")
    if mode not in CAMERA_PATHS:
        raise ValueError(f"camera_path: mode must be one of {CAMERA_PATHS}, got {mode!r}")
    base = subject.poses[0] if subject.poses is not None else frontal_pose()
    if mode == "training":
        if subject.poses is None:
            raise ValueError(f"camera_path: '{subject.name}' has no training poses ({POSES_FILE} next to the "
                             "model); copy the subject's transforms_train.json there or use 'static' / 'sway'")
        count = subject.poses.shape[0]
        cycle = list(range(count)) + list(range(count - 2, 0, -1)) or [0]
        return subject.poses[torch.tensor([cycle[i % len(cycle)] for i in range(frames)])].clone()
    if mode == "static":
        return base.expand(frames, 4, 4).clone()
    if sway_seconds <= 0:
        raise ValueError(f"camera_path: sway_seconds must be > 0, got {sway_seconds}")
    time = torch.arange(frames, dtype=torch.float64) / subject.fps
    degrees = float(sway_degrees) * torch.sin(2 * math.pi * time / float(sway_seconds))
    return (_yaw(degrees) @ base.double()).float()


# ------------------------------------------------------------------------------------------------ audio

def check_features(subject: NerfSubjectRenderer, features, content=None) -> tuple[torch.Tensor | None,
                                                                                      torch.Tensor | None]:
    """Check song features against what the model was trained on; returns (content, dynamic) tensors.

    Args:
        subject: the loaded model.
        features: SingerAudioFeatures of the mel-80 encoder (F, 16, 80) at the model's fps (dynamic branch; also
            the content branch when the model's content encoder is mel-80).
        content: SingerAudioFeatures of the model's content encoder (e.g. HuBERT (F, 2, 1024)), needed only
            when that encoder is not mel-80.
    Raises:
        ValueError naming the encoder, fps or shape that does not match, and how to re-encode.
    """
    fusion, config = subject.model.fusion, subject.model.fusion.config
    for name, value in (("features", features), ("content features", content)):
        if value is not None:
            check_audio_features(value, f"render_song ({name})", fps=subject.fps,
                                 fps_owner=f"'{subject.name}' renders")
    dynamic = None
    mel_content = fusion.uses_content and subject.content_encoder == MEL_ENCODER_NAME and content is None
    if fusion.uses_dynamic or mel_content:
        if (features is None or not same_encoder(features.encoder, MEL_ENCODER_NAME)
                or features.features.shape[1:] != (16, 80)):
            got = "nothing" if features is None else f"'{features.encoder}' {tuple(features.features.shape)}"
            raise ValueError(f"'{subject.name}' reads Wav2Lip mel windows ('{MEL_ENCODER_NAME}', (frames, 16, 80)); "
                             f"got {got}: encode the song with the {MEL_ENCODER_NAME} encoder")
        dynamic = features.features
    content_tensor = None
    if fusion.uses_content:
        if content is None:
            if subject.content_encoder != MEL_ENCODER_NAME:
                raise ValueError(f"'{subject.name}' was trained on '{subject.content_encoder}' content features; "
                                 "connect them (that encoder, layers=last, steps_per_frame="
                                 f"{config.content_rows}) as content_features")
            content = features
        check_audio_features(content, "render_song (content features)", model=f"'{subject.name}'",
                             encoder=subject.content_encoder, shape=(config.content_rows, config.content_dim))
        content_tensor = content.features
    if dynamic is not None and content_tensor is not None and dynamic.shape[0] != content_tensor.shape[0]:
        raise ValueError(f"the mel features have {dynamic.shape[0]} frames, the content features "
                         f"{content_tensor.shape[0]}; encode both from the same audio")
    return content_tensor, (dynamic if fusion.uses_dynamic else None)


@torch.no_grad()
def render_song(subject: NerfSubjectRenderer, features, content=None, poses: torch.Tensor | None = None, *,
                chunk: int = 8192, progress: Progress | None = None) -> torch.Tensor:
    """Render one frame per audio frame.

    Args:
        subject: the loaded model; features, content: as in :func:`check_features`.
        poses: (F, 4, 4) camera path (camera_path); None = static.
        chunk: rays per field call.
        progress: progress(done_frames, frames) after each frame; may raise to stop.
    Returns:
        (F, H, W, 3) float32 in 0..1 on the CPU.
    """
    model = subject.model
    content_tensor, dynamic = check_features(subject, features, content)
    frames = (dynamic if dynamic is not None else content_tensor).shape[0]
    if poses is None:
        poses = camera_path(subject, frames, "static")
    if poses.shape != (frames, 4, 4):
        raise ValueError(f"render_song: poses are {tuple(poses.shape)}, need ({frames}, 4, 4) (one per frame)")
    # 1. f_a per frame: frozen E_d on the mel windows when the model was trained with one, then the fusion
    if dynamic is not None and subject.dynamic_encoder is not None:
        dynamic = subject.dynamic_encoder.encode_windows(dynamic)
    codes = model.audio_codes(content_tensor, dynamic)                                  # (F, audio_dim)
    # 2. frames (zero latent code: a song is unseen audio)
    out = torch.empty(frames, subject.height, subject.width, 3)
    for index in range(frames):
        out[index] = model.render_frame(codes[index], poses[index], None, chunk=chunk).cpu()
        if progress is not None:
            progress(index + 1, frames)
    return out


__all__ = ["CAMERA_PATHS", "DEFAULT_FPS", "POSES_FILE", "NerfSubjectRenderer", "camera_path", "check_features",
           "frontal_pose", "load_nerf_subject", "render_song"]
