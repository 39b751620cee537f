"""Per-subject NeRF data in a transforms format modelled on ER-NeRF's ``transforms_{train,val}.json``
(DAMC §2.4 / ER-NeRF data layout), and a SynthSinger subject generator with exactly known cameras.

Subject folder::

    SUBJECT/transforms_train.json    training frames (ER-NeRF: the first ~90 % of the video)
    SUBJECT/transforms_val.json      held-out frames (the last ~10 %)
    SUBJECT/images/000123.png        one RGB frame per video frame (any size, all the same)
    SUBJECT/bc.png                   optional background image of the same size (ER-NeRF's bc.jpg)
    SUBJECT/aud.wav                  the soundtrack (16 kHz mono for the features below)
    SUBJECT/aud_dynamic.safetensors  SingerAudioFeatures for the Dynamic-Sync branch: MelEncoder "mel-80", (F, 16, 80)
    SUBJECT/aud_content.safetensors  SingerAudioFeatures for the content branch: HuBERT (F, 2, 1024) when a
                                     model was given, else the mel again (F, 16, 80) -- its encoder name says which
    SUBJECT/landmarks.safetensors    optional "landmarks" (F, 68, 2) pixels (x right, y down, pixel centres at
                                     integers, as in the clip format), indexed by img_id

Each transforms file is one JSON object (a pose estimator for a real video writes the same fields)::

    format "singer-nerf-subject", version 1
    w, h            image size in pixels
    fl_x, fl_y      focal lengths in pixels (``focal_len`` = fl_x is written too, ER-NeRF's name)
    cx, cy          principal point in pixels, measured from the image corner: pixel (row v, column u)
                    covers [u, u + 1) x [v, v + 1), so the centre of a W-pixel image is cx = W / 2
    convention      "opengl" (camera looks down -z, +y up; NeRF / ER-NeRF) or "opencv"
    fps             video frame rate; num_frames: frames of the whole video (features have this many rows)
    bound           the head lies inside [-bound, bound]^3 of the head (canonical) frame
    background      file name of the background image or null (then the trainer uses white)
    audio, dynamic_features, content_features, landmarks: file names (landmarks may be null)
    head_to_canonical  {"centre": [3], "scale": s}: canonical = (head-frame point - centre) * scale
                    (informational for real data: a tracker's head frame, normalised like ER-NeRF's)
    frames          list of {"img_id": i, "aud_id": a, "file_path": "images/%06d.png",
                    "transform_matrix": 4x4 camera-to-world in the canonical head frame}

Poses are expressed in a head-fixed frame: the head stays still and the camera moves (ER-NeRF does the
same with its tracked poses). For SynthSinger the world pose of the head is ``p_w = R(angle) p + trans`` and
the camera sits at (0, 0, distance) looking down -z (face.morphable.Camera), so the camera-to-head matrix is
``[R^T | R^T ((0, 0, distance) - trans)]``, then moved into the canonical frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..ops.volume import PinholeCamera
from ..progress import Progress

logger = logging.getLogger(__name__)

SUBJECT_FORMAT = "singer-nerf-subject"
SUBJECT_VERSION = 1
SPLITS = ("train", "val")
DYNAMIC_FILE = "aud_dynamic.safetensors"
CONTENT_FILE = "aud_content.safetensors"
LANDMARK_FILE = "landmarks.safetensors"
AUDIO_FILE = "aud.wav"
BACKGROUND_FILE = "bc.png"
# SynthSinger canonical frame: the procedural head spans x +-0.53, y -1.42..0.76, z -0.67..0.85 (decimetres)
SYNTH_CENTRE = (0.0, -0.33, 0.09)
SYNTH_SCALE = 1.0 / 1.25


@dataclasses.dataclass(frozen=True, eq=False)
class NerfSubject:
    """One split of a subject, loaded.

    images: (N, H, W, 3) uint8; poses: (N, 4, 4) float32 camera-to-canonical; img_ids, aud_ids: (N,) int64;
    fl_x, fl_y, cx, cy, width, height, convention: the camera; background: (H, W, 3) float32 in 0..1 or None;
    dynamic: (F, ...) float32 dynamic-branch input (mel windows); content: (F, ...) content features;
    content_encoder / dynamic_encoder: encoder names; landmarks: (N, 68, 2) or None; fps; bound; folder.
    """

    images: torch.Tensor
    poses: torch.Tensor
    img_ids: torch.Tensor
    aud_ids: torch.Tensor
    fl_x: float
    fl_y: float
    cx: float
    cy: float
    width: int
    height: int
    convention: str
    background: torch.Tensor | None
    dynamic: torch.Tensor
    content: torch.Tensor
    dynamic_encoder: str
    content_encoder: str
    landmarks: torch.Tensor | None
    fps: float
    bound: float
    folder: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def camera(self, index: int) -> PinholeCamera:
        """The PinholeCamera of the index-th frame of this split."""
        return PinholeCamera(self.poses[index], self.fl_x, self.fl_y, self.cx, self.cy, self.width, self.height,
                             self.convention)

    def intrinsics(self) -> dict:
        return {"fl_x": self.fl_x, "fl_y": self.fl_y, "cx": self.cx, "cy": self.cy, "w": self.width,
                "h": self.height, "convention": self.convention}


def _read_transforms(folder: Path, split: str) -> dict:
    path = folder / f"transforms_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"load_subject: '{path}' is missing; a subject folder needs transforms_train.json and "
            "transforms_val.json (make one with singer_core.nerf.data.make_synthsinger_subject, or write them "
            "from a pose tracker as described in singer_core/nerf/data.py)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"load_subject: '{path}' is not valid JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != SUBJECT_FORMAT:
        raise ValueError(f"load_subject: '{path}' is not a {SUBJECT_FORMAT} transforms file (field 'format')")
    missing = [key for key in ("w", "h", "fl_x", "fl_y", "cx", "cy", "frames", "num_frames") if key not in meta]
    if missing:
        raise ValueError(f"load_subject: '{path}' lacks the fields {missing}")
    if not meta["frames"]:
        raise ValueError(f"load_subject: '{path}' lists no frames")
    return meta


def _read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"load_subject: cannot read the image '{path}' (missing or not an image)")
    return image[:, :, ::-1].copy()


def _write_image(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise RuntimeError(f"make_synthsinger_subject: cannot write '{path}'")


def load_subject(folder: str | Path, split: str = "train") -> NerfSubject:
    """Load one split of a subject folder (module docstring for the format).

    Args:
        folder: the subject folder; split: "train" or "val".
    Returns:
        NerfSubject. Raises FileNotFoundError for missing files and ValueError for inconsistent ones (image
        size, a frame's aud_id beyond the feature rows, feature files of different lengths).
    """
    from ..audio.features import SingerAudioFeatures
    from ..io.checkpoint import load_tensors

    folder = Path(folder)
    if split not in SPLITS:
        raise ValueError(f"load_subject: split must be one of {SPLITS}, got {split!r}")
    meta = _read_transforms(folder, split)
    width, height = int(meta["w"]), int(meta["h"])
    frames = meta["frames"]
    # 1. images and poses
    images, poses = [], []
    for number, frame in enumerate(frames):
        for key in ("img_id", "aud_id", "file_path", "transform_matrix"):
            if key not in frame:
                raise ValueError(f"load_subject: frame {number} of transforms_{split}.json lacks '{key}'")
        image = _read_image(folder / frame["file_path"])
        if image.shape[:2] != (height, width):
            raise ValueError(f"load_subject: '{frame['file_path']}' is {image.shape[1]}x{image.shape[0]}, the "
                             f"transforms say {width}x{height}")
        images.append(torch.from_numpy(image))
        pose = torch.tensor(frame["transform_matrix"], dtype=torch.float32)
        if pose.shape != (4, 4):
            raise ValueError(f"load_subject: frame {number} has a transform_matrix of shape {tuple(pose.shape)}, "
                             "need 4x4 camera-to-world")
        poses.append(pose)
    img_ids = torch.tensor([int(f["img_id"]) for f in frames], dtype=torch.long)
    aud_ids = torch.tensor([int(f["aud_id"]) for f in frames], dtype=torch.long)
    # 2. audio features: both files must cover every frame of the video
    feats = {}
    for kind, default in (("dynamic", DYNAMIC_FILE), ("content", CONTENT_FILE)):
        path = folder / (meta.get(f"{kind}_features") or default)
        if not path.is_file():
            raise FileNotFoundError(f"load_subject: the {kind} audio features '{path}' are missing; write them "
                                    "with SingerAudioFeatures.save (MelEncoder for the dynamic branch)")
        feats[kind] = SingerAudioFeatures.load(path)
    total = int(meta["num_frames"])
    for kind, value in feats.items():
        if value.frames != total:
            raise ValueError(f"load_subject: {kind} features have {value.frames} frames but the video has "
                             f"num_frames={total}; re-encode the audio at fps={meta.get('fps')} for the whole video")
    if int(aud_ids.max()) >= total or int(aud_ids.min()) < 0 or int(img_ids.max()) >= total:
        raise ValueError(f"load_subject: transforms_{split}.json refers to frame {int(img_ids.max())} / audio "
                         f"{int(aud_ids.max())} but the features have {total} frames (frame/feature count mismatch)")
    # 3. background and landmarks
    background = None
    if meta.get("background"):
        bg = _read_image(folder / meta["background"])
        if bg.shape[:2] != (height, width):
            raise ValueError(f"load_subject: the background '{meta['background']}' is not {width}x{height}")
        background = torch.from_numpy(bg).float() / 255.0
    landmarks = None
    if meta.get("landmarks"):
        marks = load_tensors(folder / meta["landmarks"])["landmarks"].float()
        if marks.shape[0] != total:
            raise ValueError(f"load_subject: landmarks have {marks.shape[0]} frames, the video {total}")
        landmarks = marks[img_ids]
    return NerfSubject(
        images=torch.stack(images), poses=torch.stack(poses), img_ids=img_ids, aud_ids=aud_ids,
        fl_x=float(meta["fl_x"]), fl_y=float(meta["fl_y"]), cx=float(meta["cx"]), cy=float(meta["cy"]),
        width=width, height=height, convention=meta.get("convention", "opengl"), background=background,
        dynamic=feats["dynamic"].features.float(), content=feats["content"].features.float(),
        dynamic_encoder=feats["dynamic"].encoder, content_encoder=feats["content"].encoder,
        landmarks=landmarks, fps=float(meta.get("fps", 25.0)), bound=float(meta.get("bound", 1.0)), folder=folder)


def head_camera_poses(angle: torch.Tensor, trans: torch.Tensor, *, distance: float = 10.0,
                      centre=SYNTH_CENTRE, scale: float = SYNTH_SCALE) -> torch.Tensor:
    """Camera-to-canonical-head matrices of a fixed camera watching a moving head (module docstring).

    Args:
        angle: (T, 3) pitch, yaw, roll (Deep3DFaceRecon); trans: (T, 3) head translation (world units).
        distance: camera distance on +z (face.morphable.Camera.distance).
        centre, scale: canonical = (head point - centre) * scale.
    Returns:
        (T, 4, 4) float64 OpenGL camera-to-world in the canonical frame (rotation orthonormal, translation scaled).
    """
    from ..face.morphable import euler_to_rotation

    rotation = euler_to_rotation(angle.double())                                  # (T, 3, 3) head -> world
    eye = torch.tensor([0.0, 0.0, float(distance)], dtype=torch.float64)
    position = ((eye - trans.double())[:, None, :] @ rotation)[:, 0]              # R^T (eye - trans)
    c2w = torch.zeros(angle.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, :3] = rotation.transpose(1, 2)
    c2w[:, :3, 3] = (position - torch.tensor(centre, dtype=torch.float64)) * scale
    c2w[:, 3, 3] = 1.0
    return c2w


def project_points(points: torch.Tensor, c2w: torch.Tensor, fl_x: float, fl_y: float, cx: float, cy: float,
                   convention: str = "opengl") -> torch.Tensor:
    """Project canonical-frame points with a transforms camera.

    Args:
        points: (N, 3); c2w: (4, 4); intrinsics as in the transforms file.
    Returns:
        (N, 2) image coordinates (x right, y down) in the transforms convention: pixel (row v, column u)
        covers [u, u + 1), its centre is u + 0.5 (subtract 0.5 for the clip landmarks' integer centres).
    """
    c2w = c2w.to(points.dtype)
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]                                       # R^T (p - o)
    if convention == "opengl":
        depth = -cam[:, 2]
        return torch.stack([cx + fl_x * cam[:, 0] / depth, cy - fl_y * cam[:, 1] / depth], dim=-1)
    depth = cam[:, 2]
    return torch.stack([cx + fl_x * cam[:, 0] / depth, cy + fl_y * cam[:, 1] / depth], dim=-1)


def _split_index(frames: int, val_fraction: float) -> int:
    val = max(1, int(round(frames * val_fraction)))
    if val >= frames:
        raise ValueError(f"make_synthsinger_subject: {frames} frames leave nothing to train on with "
                         f"val_fraction={val_fraction}; use more seconds")
    return frames - val


def write_transforms(folder: Path, split: str, ids: list[int], poses: torch.Tensor, common: dict) -> Path:
    """transforms_{split}.json with the frames `ids` (poses (N_all, 4, 4) indexed by img_id)."""
    frames = [{"img_id": int(i), "aud_id": int(i), "file_path": f"images/{int(i):06d}.png",
               "transform_matrix": poses[i].tolist()} for i in ids]
    path = folder / f"transforms_{split}.json"
    path.write_text(json.dumps({**common, "frames": frames}, indent=1))
    return path


def make_synthsinger_subject(out: str | Path, *, identity: int = 0, seconds: float = 4.0, size: int = 64,
                             seed: int = 0, fps: float = 25.0, val_fraction: float = 0.1,
                             textured_background: bool = False, content_encoder=None, overwrite: bool = False,
                             progress: Progress | None = None) -> Path:
    """Render one SynthSinger subject (a song, its driven head motion, frames) into a subject folder.

    Args:
        out: the subject folder (created; an existing complete one is an error unless overwrite).
        identity: SynthSinger identity / clip index; seconds, size, seed, fps, textured_background: as in
            SynthSingerConfig (size: frame width = height).
        val_fraction: share of the last frames held out (transforms_val.json), at least one frame.
        content_encoder: an AudioEncoder (HuBERT, e.g. hubert-large-ls960-ft) for the content branch; it is
            run with layers="last", interpolate="after", steps_per_frame=2 (ER-NeRF's (F, 2, 1024)). None:
            the content file holds the mel windows again (documented in its encoder name "mel-80").
        overwrite: replace an existing folder.
        progress: progress(done, total) over the rendered frames; may raise (no partial folder is left).
    Returns:
        the folder.
    """
    from ..audio.encoders import MelEncoder
    from ..audio.io import to_mono, write_wav
    from ..data.synthetic import (
        SAMPLE_RATE,
        SynthSingerConfig,
        background_image,
        generate_clip,
        make_identity,
    )
    from ..face.morphable import Camera
    from ..io.checkpoint import save_tensors

    out = Path(out)
    if (out / "transforms_train.json").exists() and not overwrite:
        raise FileExistsError(f"make_synthsinger_subject: '{out}' already holds a subject; pass overwrite=True")
    config = SynthSingerConfig(clips=identity + 1, size=size, seconds=seconds, fps=fps, seed=seed,
                               textured_background=textured_background)
    clip = generate_clip(config, identity, progress=progress)
    frames = clip.frames.shape[0]
    waveform = to_mono(clip.song.mix)
    dynamic = MelEncoder().encode(waveform, SAMPLE_RATE, fps)
    if content_encoder is None:
        content = dynamic
    else:
        content = content_encoder.encode(waveform, SAMPLE_RATE, fps, layers="last", interpolate="after",
                                         steps_per_frame=2)
    for name, feats in (("mel", dynamic), ("content", content)):
        if feats.frames != frames:
            raise RuntimeError(f"make_synthsinger_subject: {name} features have {feats.frames} frames, the video "
                               f"{frames}")
    camera = Camera()
    poses = head_camera_poses(clip.coeffs["angle"], clip.coeffs["trans"], distance=camera.distance).float()
    focal = camera.focal_pixels(size)
    train_stop = _split_index(frames, val_fraction)
    common = {"format": SUBJECT_FORMAT, "version": SUBJECT_VERSION, "w": size, "h": size,
              "fl_x": focal, "fl_y": focal, "focal_len": focal, "cx": size / 2.0, "cy": size / 2.0,
              "convention": "opengl", "fps": float(fps), "num_frames": frames, "bound": 1.0,
              "background": BACKGROUND_FILE, "audio": AUDIO_FILE, "dynamic_features": DYNAMIC_FILE,
              "content_features": CONTENT_FILE, "landmarks": LANDMARK_FILE,
              "head_to_canonical": {"centre": list(SYNTH_CENTRE), "scale": SYNTH_SCALE},
              "source": {"generator": "singer_core.nerf.data.make_synthsinger_subject", "identity": identity,
                         "seconds": seconds, "size": size, "seed": seed, "clip_id": clip.meta.clip_id}}
    # write everything into a temporary sibling, then rename: no partial subject folder
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        video = clip.frames.numpy()
        for i in range(frames):
            _write_image(tmp / "images" / f"{i:06d}.png", video[i])
        bg = background_image(make_identity(identity, seed=seed, textured_background=textured_background), size)
        _write_image(tmp / BACKGROUND_FILE, (bg.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
        write_wav(tmp / AUDIO_FILE, waveform[None] if waveform.ndim == 1 else waveform, SAMPLE_RATE)
        dynamic.save(tmp / DYNAMIC_FILE)
        content.save(tmp / CONTENT_FILE)
        save_tensors(tmp / LANDMARK_FILE, {"landmarks": clip.landmarks.float().contiguous(),
                                           "angle": clip.coeffs["angle"].float().contiguous(),
                                           "trans": clip.coeffs["trans"].float().contiguous(),
                                           "exp": clip.coeffs["exp"].float().contiguous(),
                                           "id": clip.coeffs["id"].float().contiguous()})
        write_transforms(tmp, "train", list(range(train_stop)), poses, common)
        write_transforms(tmp, "val", list(range(train_stop, frames)), poses, common)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("make_synthsinger_subject: %d frames (%d train, %d val) of %s in '%s'", frames, train_stop,
                frames - train_stop, clip.meta.clip_id, out)
    return out


def mouth_box(landmarks: torch.Tensor, size: tuple[int, int], margin: float = 0.25) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel box around the mouth landmarks 48..67 of one frame ((68, 2) x, y),
    widened by `margin` of its size on every side and clipped to the image (height, width)."""
    mouth = landmarks[48:68]
    low, high = mouth.min(0).values, mouth.max(0).values
    pad = (high - low) * margin + 1.0
    left, top = (low - pad).floor().long().tolist()
    right, bottom = (high + pad).ceil().long().tolist()
    height, width = size
    top, left = max(0, top), max(0, left)
    bottom, right = min(height, bottom + 1), min(width, right + 1)
    if bottom <= top or right <= left:
        raise ValueError("mouth_box: the mouth landmarks fall outside the image")
    return top, bottom, left, right


__all__ = ["NerfSubject", "load_subject", "make_synthsinger_subject", "head_camera_poses", "project_points",
           "write_transforms", "mouth_box", "SUBJECT_FORMAT"]
