"""Where face-detector files live and which detector "auto" picks: Hallo's SCRFD (scrfd_10g_bnkps.onnx, hub
fudan-generative-ai/hallo) if its file is in a models folder, else a YuNet .onnx (OpenCV model zoo), else the
Haar cascade where the installed OpenCV still has it (opencv-python 4; OpenCV 5 dropped it). Fetching happens
only through `fetch_scrfd` (a loader node or this module's CLI), never on import.

    python -m singer_core.face.detector_files --models-dir DIR   # downloads scrfd_10g_bnkps.onnx into DIR
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

HALLO_REPO = "fudan-generative-ai/hallo"
SCRFD_HUB_FILE = "face_analysis/models/scrfd_10g_bnkps.onnx"  # next to glintr100.onnx in the same hub folder
SCRFD_NAME = Path(SCRFD_HUB_FILE).name
YUNET_NAME = "face_detection_yunet_2023mar.onnx"
YUNET_SOURCE = "https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet"
COMFY_FOLDER = "models/singer"  # the pack's ComfyUI model folder (nodes/comfy_bridge.SINGER_MODEL_FOLDER)
FETCH_COMMAND = "python -m singer_core.face.detector_files --models-dir DIR"
# where a file may sit inside a models folder (the hub layout first, as hf_hub_download(local_dir=) writes it)
_SUBFOLDERS = ("face_analysis/models", "face_analysis", ".")


class NoFaceDetectorError(ValueError):
    """No face detector can run here: no SCRFD / YuNet file found and this OpenCV has no Haar cascade."""


def haar_available() -> bool:
    """Whether the installed OpenCV has cv2.CascadeClassifier and its frontal-face cascade file (OpenCV 4)."""
    try:
        import cv2
    except ImportError:
        return False
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    return hasattr(cv2, "CascadeClassifier") and folder is not None and \
        (Path(folder) / "haarcascade_frontalface_default.xml").is_file()


def find_scrfd(models_dirs: Iterable[str | os.PathLike]) -> Path | None:
    """The first scrfd_10g_bnkps.onnx in the models folders (DIR/face_analysis/models/, DIR/face_analysis/, DIR/)."""
    for root in models_dirs:
        for sub in _SUBFOLDERS:
            candidate = Path(root).expanduser() / sub / SCRFD_NAME
            if candidate.is_file():
                return candidate
    return None


def find_yunet(models_dirs: Iterable[str | os.PathLike]) -> Path | None:
    """The newest-named face_detection_yunet*.onnx in the models folders (DIR/, DIR/face_analysis/...)."""
    for root in models_dirs:
        for sub in _SUBFOLDERS:
            folder = Path(root).expanduser() / sub
            found = sorted(folder.glob("face_detection_yunet*.onnx")) if folder.is_dir() else []
            if found:
                return found[-1]
    return None


def resolve_detector(detector: str | os.PathLike = "auto", models_dirs: Sequence[str | os.PathLike] = ()) -> str:
    """The concrete detector for a choice: "auto" -> the SCRFD file, else a YuNet file, else "haar";
    "scrfd" / "yunet" -> that file from the models folders; "haar" and file paths are returned unchanged.

    Raises NoFaceDetectorError naming the file, where to put it and how to fetch it when nothing is available.
    """
    spec = str(detector)
    if spec == "auto":
        found = find_scrfd(models_dirs) or find_yunet(models_dirs)
        if found is not None:
            return str(found)
        if haar_available():
            return "haar"
        raise NoFaceDetectorError(no_detector_message(models_dirs))
    if spec in ("scrfd", "yunet"):
        found = find_scrfd(models_dirs) if spec == "scrfd" else find_yunet(models_dirs)
        if found is None:
            raise NoFaceDetectorError(no_detector_message(models_dirs, wanted=spec))
        return str(found)
    return spec


def no_detector_message(models_dirs: Sequence[str | os.PathLike] = (), *, wanted: str = "auto") -> str:
    """What to do when no detector is available: the files, where they go, the command that fetches SCRFD."""
    import cv2

    searched = ", ".join(str(Path(d).expanduser()) for d in models_dirs) or "no models folder was given"
    if wanted == "auto":
        head = (f"no face detector available: OpenCV {cv2.__version__} has no Haar cascade (OpenCV 5 removed "
                f"cv2.CascadeClassifier) and no detector file was found (searched: {searched}). ")
    else:
        head = f"no {wanted} detector file found (searched: {searched}). "
    return (head + f"Put Hallo's {SCRFD_NAME} (hub {HALLO_REPO}, file {SCRFD_HUB_FILE}) into "
            f"<models>/face_analysis/models/ -- in ComfyUI {COMFY_FOLDER}/face_analysis/models/ (Load SINGER Video "
            "Model with allow_download fetches it next to glintr100.onnx), for the library and CLIs the folder "
            f"given as --models-dir / models_dir -- or fetch it with `{FETCH_COMMAND}`; or put YuNet's "
            f"{YUNET_NAME} ({YUNET_SOURCE}) in the same folder; or give the face box yourself (the face_box / "
            "face_mask inputs of Face Crop and Sample SINGER Video, face_box= in the library)")


def fetch_scrfd(models_dir: str | os.PathLike, *, allow_download: bool = True) -> Path:
    """Hallo's SCRFD detector in `models_dir` (DIR/face_analysis/models/scrfd_10g_bnkps.onnx): the file if it is
    there, else downloaded from the hub when allow_download (else NoFaceDetectorError saying what to place)."""
    found = find_scrfd([models_dir])
    if found is not None:
        return found
    if not allow_download:
        raise NoFaceDetectorError(no_detector_message([models_dir], wanted="scrfd"))
    from huggingface_hub import hf_hub_download

    target = Path(models_dir).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    logger.info("face detector: downloading %s %s into %s", HALLO_REPO, SCRFD_HUB_FILE, target)
    try:
        return Path(hf_hub_download(HALLO_REPO, SCRFD_HUB_FILE, local_dir=target))
    except Exception as error:  # noqa: BLE001 - the hub client raises many types (offline, 404, disk)
        raise RuntimeError(f"downloading {HALLO_REPO} {SCRFD_HUB_FILE} failed ({type(error).__name__}: {error}); "
                           f"download it on a connected machine into {target / 'face_analysis' / 'models'}") \
            from error


def main(argv: list[str] | None = None) -> int:
    """`python -m singer_core.face.detector_files --models-dir DIR`: fetch Hallo's SCRFD detector into DIR."""
    parser = argparse.ArgumentParser(prog="python -m singer_core.face.detector_files",
                                     description=f"Download Hallo's face detector {SCRFD_NAME} (hub {HALLO_REPO}) "
                                                 "into a models folder, and say which detector 'auto' picks.")
    parser.add_argument("--models-dir", required=True,
                        help=f"models folder (ComfyUI: {COMFY_FOLDER}); the file goes to DIR/{SCRFD_HUB_FILE}")
    args = parser.parse_args(argv)
    try:
        path = fetch_scrfd(args.models_dir)
    except (RuntimeError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{path} (detector 'auto' with --models-dir {args.models_dir} now uses it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
