"""What every node file shares: the pack's own ComfyUI types, the converters between ComfyUI's IMAGE and the
core's image layouts (the only ones the nodes use; the arithmetic lives in singer_core/io/image.py), the
progress/interruption bridge from the core's `progress(done, total)` callbacks to ComfyUI, the device choices and
their resolution, and the pack's model folders (the loaders' shared shape over them is nodes/model_loaders.py)."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from ..singer_core.io.image import portrait_from_batch, rgb_channels, to_uint8, to_unit
from ..singer_core.progress import Progress

# Our own socket types (STYLE: small frozen dataclasses from the core travel through them).
AudioFeatures = io.Custom("SINGER_AUDIO_FEATURES")
AudioEncoder = io.Custom("SINGER_AUDIO_ENCODER")
Motion = io.Custom("SINGER_MOTION")  # singer_core.face.motion_types.SingerMotion
FaceIdentityType = io.Custom("SINGER_FACE_IDENTITY")  # singer_core.face.motion_types.FaceIdentity
FaceCrop = io.Custom("SINGER_FACE_CROP")  # singer_core.face.crop.CropTransform
MotionModelType = io.Custom("SINGER_MOTION_MODEL")  # singer_core.motion.generator.MotionModel
SingerModelType = io.Custom("SINGER_VIDEO_MODEL")  # singer_core.diffusion.model_folder.SingerVideoModel
NerfModelType = io.Custom("SINGER_NERF_MODEL")  # singer_core.nerf.song_video.NerfSubjectRenderer
FrameModelType = io.Custom("SINGER_FRAME_MODEL")  # singer_core.diffusion.fd2talk_portrait.FrameModel

# Model folders under ComfyUI/models. "audio_encoders" is ComfyUI's own (v0.3.50+); we add it only if missing.
AUDIO_ENCODER_FOLDER = "audio_encoders"
SEPARATOR_FOLDER = "audio_separator"  # same folder name as Hallo's pretrained_models/audio_separator
MOTION_MODEL_FOLDER = "singer_motion"  # our motion DiT checkpoints (save_pretrained folders)
EVAL_FOLDER = "singer_eval"  # evaluation networks: i3d_torchscript.pt for FVD
SINGER_MODEL_FOLDER = "singer"  # SINGER video models: our save_pretrained folders, net.pth, face_analysis/
VAE_FOLDER = "vae"  # ComfyUI's own VAE folder (sd-vae-ft-mse as a diffusers folder or a single file)
ANIMATEDIFF_FOLDER = "animatediff_models"  # AnimateDiff motion modules (mm_sd_v15_v2.ckpt), as AnimateDiff-Evolved
NERF_MODEL_FOLDER = "singer_nerf"  # per-subject audio NeRFs (nerf task out/final folders)
FRAME_MODEL_FOLDER = "singer_frames"  # FD2Talk frame models (frames task out/final folders)
TTS_FOLDER = "tts"  # transformers TTS folders (SpeechT5 with vocoder/, VITS / MMS-TTS)


PACK_ROOT = Path(__file__).resolve().parents[1]
# `make demo` (python -m singer_core.demo --out out, run in the pack's folder) trains its models into out/models/:
# motion-<preset>/, singer-demo/, nerf-demo/, frames-demo/. The loaders list them from there, so nothing is copied by hand.
DEMO_COMMAND = f"cd {PACK_ROOT} && make demo"
DEMO_PREFIXES = {MOTION_MODEL_FOLDER: "motion-", SINGER_MODEL_FOLDER: "singer-", NERF_MODEL_FOLDER: "nerf-",
                 FRAME_MODEL_FOLDER: "frames-"}


MIN_PORTRAIT_SIDE = 64  # smallest portrait side the generators' face crop can work with


# ---- IMAGE (B, H, W, C) float 0..1 <-> the core's layouts ----------------------------------------------
def portrait_from_image(image: torch.Tensor, who: str) -> torch.Tensor:
    """IMAGE -> the (H, W, 3) float32 0..1 portrait the generators take: the first item, RGB, clamped, at least
    MIN_PORTRAIT_SIDE px a side (singer_core.io.image.portrait_from_batch). The pipelines convert it no further
    than their own crop needs."""
    return portrait_from_batch(image, who, min_side=MIN_PORTRAIT_SIDE)


def image_to_uint8(images: torch.Tensor, who: str) -> np.ndarray:
    """IMAGE (B, H, W, C), C = 1..4 -> (B, H, W, 3) uint8 numpy (OpenCV code: face crop, detectors, paste-back)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{who}: expected an IMAGE batch (B, H, W, 3), got {shape}")
    return to_uint8(rgb_channels(images, who))


def image_from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) or one (H, W, 3) uint8 image (numpy or torch) -> IMAGE (B, H, W, 3) float32 0..1."""
    images = to_unit(images)
    return images[None] if images.ndim == 3 else images


def torch_device(device: str) -> str:
    """A node's device choice: "auto" is ComfyUI's torch device, anything else is passed through."""
    if device != "auto":
        return device
    import comfy.model_management

    return str(comfy.model_management.get_torch_device())


DEVICE_CHOICES = ["auto", "cpu", "cuda"]  # the "device" input of every node that runs a model (see torch_device)


def demo_models_dir() -> Path:
    """Where `make demo` leaves its trained models: $SINGER_DEMO_MODELS, else <pack>/out/models."""
    return Path(os.environ.get("SINGER_DEMO_MODELS") or PACK_ROOT / "out" / "models").resolve()


def _is_demo_root(root: str) -> bool:
    return os.path.realpath(root) == str(demo_models_dir())


def _listed(name: str, root: str, entry: str) -> bool:
    """Whether `entry` of `root` belongs to model folder `name`: the demo folder holds every kind side by side, so
    there only its own prefix (motion-, singer-, nerf-, frames-) counts."""
    return not _is_demo_root(root) or entry.startswith(DEMO_PREFIXES.get(name, "\0"))


def register_model_folders() -> None:
    """Add the pack's model folders to ComfyUI's search paths (never overwriting existing entries), and the demo's
    out/models after the default folder of the four model kinds the demo trains."""
    for name in (AUDIO_ENCODER_FOLDER, SEPARATOR_FOLDER, MOTION_MODEL_FOLDER, EVAL_FOLDER, SINGER_MODEL_FOLDER, VAE_FOLDER,
                 ANIMATEDIFF_FOLDER, NERF_MODEL_FOLDER, TTS_FOLDER, FRAME_MODEL_FOLDER):
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
    demo = str(demo_models_dir())
    for name in DEMO_PREFIXES:
        if not any(os.path.realpath(path) == demo for path in folder_paths.get_folder_paths(name)):
            folder_paths.add_model_folder_path(name, demo)


def model_folder(name: str) -> Path:
    """The first (default) directory of a model folder: where downloads go and users put files."""
    register_model_folders()
    return Path(folder_paths.get_folder_paths(name)[0])


def model_folder_paths(name: str) -> list[Path]:
    """Every directory of a model folder (the default one first, then extra_model_paths ones)."""
    register_model_folders()
    return [Path(path) for path in folder_paths.get_folder_paths(name)]


def model_files(name: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files of a model folder (relative names, as ComfyUI lists them) with one of the suffixes."""
    register_model_folders()
    return sorted(f for f in folder_paths.get_filename_list(name) if f.lower().endswith(suffixes))


def model_locations(name: str) -> str:
    """The folders a model of folder `name` is looked for in, for messages."""
    register_model_folders()
    return " or ".join(str(Path(path)) for path in folder_paths.get_folder_paths(name))


def model_subfolders(name: str, marker: str = "config.json") -> list[str]:
    """Sub-folders (one level) of every directory of a model folder that contain `marker`."""
    register_model_folders()
    found: set[str] = set()
    for root in folder_paths.get_folder_paths(name):
        if os.path.isdir(root):
            for entry in os.scandir(root):
                if entry.is_dir() and os.path.isfile(os.path.join(entry.path, marker)) and _listed(name, root, entry.name):
                    found.add(entry.name + "/")
    return sorted(found)


def resolve_model_path(name: str, relative: str) -> Path | None:
    """Absolute path of a file or sub-folder listed by model_files/model_subfolders, or None."""
    register_model_folders()
    relative = relative.rstrip("/")
    for root in folder_paths.get_folder_paths(name):
        if not _listed(name, root, relative):
            continue
        # the name must stay inside the folder ("../" is refused); a symlinked model inside it is fine
        base = os.path.abspath(root)
        candidate = os.path.normpath(os.path.join(base, relative))
        if os.path.commonpath([candidate, base]) == base and candidate != base and os.path.exists(candidate):
            return Path(os.path.realpath(candidate))
    return None


def comfy_progress(steps: int | None = None) -> Progress:
    """A core progress callback that drives ComfyUI's progress bar and stops on Cancel.

    The core calls it as progress(done, total); ComfyUI's interruption check raises inside it,
    so the core's long loops stop at the next step without writing partial results.
    """
    import comfy.model_management
    import comfy.utils

    bar = comfy.utils.ProgressBar(steps or 1)

    def progress(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, max(total, 1))

    return progress


def input_file_path(name: str, who: str, *, folder: bool = False, fix: str | None = None) -> Path:
    """Resolve a name from ComfyUI's input folder, refusing anything that escapes it.

    folder: expect a folder instead of a file; fix: what to do instead, appended to both errors
    (default: upload the file or copy it there).
    """
    input_dir = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(input_dir, name))
    kind = "folder" if folder else "file"
    if os.path.commonpath([path, input_dir]) != input_dir:
        raise ValueError(f"{who}: '{name}' is outside ComfyUI's input folder ({input_dir}); "
                         + (fix or "upload the file or copy it into that folder"))
    if not (os.path.isdir(path) if folder else os.path.isfile(path)):
        raise ValueError(f"{who}: '{name}' is not a {kind} in ComfyUI's input folder ({input_dir}); "
                         + (fix or "upload it with the node's upload button or copy it there"))
    return Path(path)
