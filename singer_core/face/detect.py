"""Face detection with OpenCV on OpenCV 4 and 5: Hallo's SCRFD (scrfd_10g_bnkps.onnx through the DNN ONNX importer,
decoded in `scrfd.py`), YuNet (cv2.FaceDetectorYN), the Viola-Jones Haar cascade where the installed OpenCV still
ships it (opencv-python 4; OpenCV 5 removed cv2.CascadeClassifier), and the res10 SSD where the Caffe /
TensorFlow importers exist (OpenCV 4). detector="auto" picks SCRFD, else YuNet, else Haar (`detector_files.py`)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .detector_files import (
    NoFaceDetectorError,
    haar_available,
    no_detector_message,
    resolve_detector,
)
from .scrfd import SCRFD_LAYOUTS, ScrfdDetector

logger = logging.getLogger(__name__)

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # the cascade "haar" names, in cv2.data.haarcascades
HAAR_VERIFY_CASCADE = "haarcascade_frontalface_alt2.xml"  # a second, differently trained cascade that confirms
_SSD_MEAN = (104.0, 177.0, 123.0)  # BGR mean the res10 SSD was trained with
_SSD_SIZE = 300  # its input side
MIN_IMAGE_SIDE = 24  # the Haar cascade's window; no detector here finds a face in a smaller image
_DETECTOR_HELP = ("detector must be 'auto', 'scrfd', 'yunet', 'haar', an SCRFD .onnx (Hallo's scrfd_10g_bnkps.onnx), "
                  "a YuNet .onnx (e.g. face_detection_yunet_2023mar.onnx), a Haar cascade .xml, a res10 SSD "
                  ".caffemodel (with deploy.prototxt beside it) or a res10 SSD .pb (with its .pbtxt beside it)")
_YUNET_OUTPUTS = {"cls_8", "obj_8", "bbox_8", "kps_8"}  # output names cv2.FaceDetectorYN reads


class Box(NamedTuple):
    """An axis-aligned face box in image pixels (x right, y down; may reach past the image edge)."""

    x: float  # left edge
    y: float  # top edge
    w: float  # width
    h: float  # height
    score: float = 1.0  # detector confidence: DNN probability in 0..1; Haar: merged neighbour detections

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def area(self) -> float:
        return self.w * self.h

    def xyxy(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) corners."""
        return self.x, self.y, self.x + self.w, self.y + self.h


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when disjoint)."""
    width = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    height = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (a.area + b.area - inter)


class FaceDetector:
    """A face detector that loads its cascade or network once and is called per image.

    Args:
        detector: "auto" (Hallo's SCRFD if scrfd_10g_bnkps.onnx is in a models folder, else a YuNet .onnx there,
            else the Haar cascade where OpenCV has it; NoFaceDetectorError saying what to fetch otherwise),
            "scrfd" / "yunet" (that file from the models folders), "haar" (OpenCV 4's frontal-face cascade), or
            the path of an SCRFD or YuNet .onnx (told apart by their outputs), a Haar cascade .xml, a res10 SSD
            .caffemodel (its deploy.prototxt, or <name>.prototxt, beside it) or .pb (with <name>.pbtxt).
        min_size_fraction: faces smaller than this share of the image's shorter side are ignored (0..1).
        score_threshold: the least score kept; None for the detector's default (Haar: 5 neighbours, SSD:
            0.5, YuNet: 0.6, SCRFD: 0.5 as insightface).
        max_side: images longer than this are scaled down for detection (boxes are returned in the
            input's pixels); None detects at full size (slower, rarely better).
        nms_threshold: IoU above which overlapping YuNet / SSD boxes are merged (non-maximum suppression);
            SCRFD keeps insightface's 0.4 (with its +1-pixel areas).
        verify: with detector="haar", confirm every box with OpenCV's second frontal-face cascade (alt2) run on the
            box's surroundings; a box it does not find with at least `verify_neighbors` merged detections is
            dropped. The default cascade alone fires on face-like texture (measured on a scrolling blurred-
            noise background: 5-8 neighbours, tracks lasting 2 s, while alt2 gives those <= 4 and real
            faces of 50+ px 13-47). Costs one small extra cascade run per box.
        verify_neighbors: merged alt2 detections a confirmed box needs.
        models_dirs: folders searched for the SCRFD / YuNet files by "auto", "scrfd" and "yunet" (ComfyUI:
            models/singer; CLIs: --models-dir).
    """

    def __init__(self, detector: str | Path = "auto", *, min_size_fraction: float = 0.1,
                 score_threshold: float | None = None, max_side: int | None = 640, nms_threshold: float = 0.3,
                 verify: bool = True, verify_neighbors: int = 5, models_dirs: tuple[str | Path, ...] = ()):
        if not 0.0 <= min_size_fraction < 1.0:
            raise ValueError(f"FaceDetector: min_size_fraction must be in [0, 1), got {min_size_fraction!r}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"FaceDetector: max_side must be >= 32 or None, got {max_side!r}")
        try:
            import cv2
        except ImportError as exc:
            raise RuntimeError("FaceDetector needs OpenCV: pip install opencv-python") from exc
        self.min_size_fraction, self.max_side, self.nms_threshold = min_size_fraction, max_side, nms_threshold
        self.verify_neighbors = int(verify_neighbors)
        self._verifier = None
        try:
            spec = resolve_detector(detector, models_dirs)
        except NoFaceDetectorError as error:
            raise NoFaceDetectorError(f"FaceDetector: {error}") from None
        if spec == "haar":
            if not haar_available():
                raise NoFaceDetectorError(f"FaceDetector: detector 'haar' needs cv2.CascadeClassifier, which "
                                          f"OpenCV {cv2.__version__} lacks; " + no_detector_message(models_dirs))
            self.kind, self.path = "haar", Path(cv2.data.haarcascades) / HAAR_CASCADE
        else:
            self.path = Path(spec).expanduser()
            suffix = self.path.suffix.lower()
            kinds = {".xml": "haar", ".onnx": "onnx", ".caffemodel": "ssd", ".pb": "ssd"}
            if suffix not in kinds:
                raise ValueError(f"FaceDetector: cannot tell what detector '{spec}' is; {_DETECTOR_HELP}")
            if not self.path.is_file():
                raise ValueError(f"FaceDetector: the detector file '{self.path}' does not exist; "
                                 + no_detector_message(models_dirs))
            self.kind = kinds[suffix]
            if self.kind == "haar" and not hasattr(cv2, "CascadeClassifier"):
                raise NoFaceDetectorError(f"FaceDetector: '{self.path.name}' is a Haar cascade, which OpenCV "
                                          f"{cv2.__version__} cannot run (no cv2.CascadeClassifier); "
                                          + no_detector_message(models_dirs))
            if self.kind == "onnx":
                self.kind = self._onnx_kind(cv2)
        defaults = {"haar": 5.0, "ssd": 0.5, "yunet": 0.6, "scrfd": 0.5}
        self.score_threshold = defaults[self.kind] if score_threshold is None else float(score_threshold)
        if self.kind == "scrfd":
            self._model = ScrfdDetector(self.path, score_threshold=self.score_threshold)
        elif self.kind == "haar":
            try:
                self._model = cv2.CascadeClassifier(str(self.path))
            except (cv2.error, SystemError):  # OpenCV raises SystemError on a malformed cascade file
                self._model = None
            if self._model is None or self._model.empty():
                raise ValueError(f"FaceDetector: OpenCV could not load the Haar cascade '{self.path}'; give a "
                                 "cascade .xml written by opencv_traincascade")
            if verify and spec == "haar":
                self._verifier = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / HAAR_VERIFY_CASCADE))
        elif self.kind == "yunet":
            try:
                self._model = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320),
                                                        self.score_threshold, nms_threshold, 5000)
            except cv2.error as exc:
                raise ValueError(f"FaceDetector: OpenCV could not load '{self.path.name}' as a YuNet face "
                                 f"detector ({exc.msg.strip() if hasattr(exc, 'msg') else exc}); an .onnx must "
                                 "be YuNet (face_detection_yunet_*.onnx)") from exc
        else:
            self._model = self._load_ssd(cv2)

    def _onnx_kind(self, cv2) -> str:
        """'yunet' or 'scrfd', from the network's outputs (YuNet's cls_8 ... kps_32; SCRFD's 6/9/10/15 maps)."""
        try:
            outputs = list(cv2.dnn.readNetFromONNX(str(self.path)).getUnconnectedOutLayersNames())
        except cv2.error as exc:
            raise ValueError(f"FaceDetector: OpenCV could not read '{self.path.name}' as an ONNX network "
                             f"({str(exc).strip().splitlines()[-1]}); {_DETECTOR_HELP}") from exc
        if _YUNET_OUTPUTS <= set(outputs):
            return "yunet"
        if len(outputs) in SCRFD_LAYOUTS:
            return "scrfd"
        raise ValueError(f"FaceDetector: '{self.path.name}' is neither a YuNet nor an SCRFD face detector (its "
                         f"{len(outputs)} output(s) {outputs[:4]} match neither); give face_detection_yunet_*.onnx "
                         "from the OpenCV model zoo or Hallo's scrfd_10g_bnkps.onnx")

    def _load_ssd(self, cv2):
        if self.path.suffix.lower() == ".caffemodel":
            candidates = [self.path.with_suffix(".prototxt"), self.path.parent / "deploy.prototxt"]
            reader = getattr(cv2.dnn, "readNetFromCaffe", None)
        else:
            candidates = [self.path.with_suffix(".pbtxt"), self.path.parent / "opencv_face_detector.pbtxt"]
            reader = getattr(cv2.dnn, "readNetFromTensorflow", None)
        config = next((path for path in candidates if path.is_file()), None)
        if config is None:
            raise ValueError(f"FaceDetector: the SSD '{self.path.name}' needs its network description beside it: "
                             f"one of {', '.join(repr(str(p)) for p in candidates)}")
        if reader is None:
            raise NoFaceDetectorError(f"FaceDetector: OpenCV {cv2.__version__} cannot read the SSD "
                                      f"'{self.path.name}' (OpenCV 5 removed the Caffe and TensorFlow importers); "
                                      + no_detector_message())
        try:
            if self.path.suffix.lower() == ".caffemodel":
                return reader(str(config), str(self.path))
            return reader(str(self.path), str(config))
        except cv2.error as exc:
            raise ValueError(f"FaceDetector: OpenCV could not load the SSD '{self.path.name}' with "
                             f"'{config.name}': {exc}") from exc

    def __call__(self, image: np.ndarray) -> list[Box]:
        """Detect faces.

        Args:
            image: (H, W, 3) uint8 RGB (numpy array, or a uint8 torch tensor), at least 24 x 24 pixels.

        Returns:
            Boxes in the image's pixels, largest first.
        """
        return [box for box, _ in self.detect_with_keypoints(image)]

    def detect_with_keypoints(self, image: np.ndarray) -> list[tuple[Box, np.ndarray | None]]:
        """Detect faces with their 5 keypoints where the detector gives them (SCRFD: image-left eye, image-right
        eye, nose tip, image-left and image-right mouth corners, the ArcFace template's order).

        Args:
            image: (H, W, 3) uint8 RGB, at least 24 x 24 pixels.

        Returns:
            (box, keypoints (5, 2) float64 image pixels or None) pairs, largest box first.
        """
        import cv2

        # 1. check and scale the image
        image = _as_rgb_uint8(image)
        height, width = image.shape[:2]
        scale = 1.0
        if self.max_side is not None and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
        min_side = self.min_size_fraction * min(image.shape[:2])

        # 2. run the detector
        keypoints = None
        if self.kind == "haar":
            boxes = self._haar(cv2, image, min_side)
        elif self.kind == "scrfd":
            found = self._model.detect(image)
            boxes = [Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0), float(score))
                     for (x0, y0, x1, y1), score in zip(found.boxes, found.scores, strict=True)]
            keypoints = found.keypoints
        elif self.kind == "yunet":
            boxes = self._yunet(image)
        else:
            boxes = self._ssd(cv2, image)

        # 3. back to input pixels, drop small faces, largest first
        found = []
        for index, b in enumerate(boxes):
            if min(b.w, b.h) >= min_side and b.score >= self.score_threshold:
                points = None if keypoints is None else keypoints[index].astype(np.float64) / scale
                found.append((Box(b.x / scale, b.y / scale, b.w / scale, b.h / scale, b.score), points))
        return sorted(found, key=lambda pair: pair[0].area, reverse=True)

    detect = __call__

    def _haar(self, cv2, image, min_side):
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        side = max(1, int(min_side))
        found, neighbours = self._model.detectMultiScale2(
            gray, scaleFactor=1.1, minNeighbors=max(1, int(self.score_threshold)), minSize=(side, side))
        boxes = [Box(float(x), float(y), float(w), float(h), float(n))
                 for (x, y, w, h), n in zip(np.asarray(found).reshape(-1, 4), np.asarray(neighbours).reshape(-1),
                                            strict=True)]
        if self._verifier is not None:
            boxes = [box for box in boxes if self._confirmed(gray, box)]
        return boxes

    def _confirmed(self, gray: np.ndarray, box: Box) -> bool:
        """Whether the verification cascade finds a face of about the box's size around the box."""
        height, width = gray.shape
        x0, y0 = int(max(0, box.x - 0.25 * box.w)), int(max(0, box.y - 0.25 * box.h))
        x1, y1 = int(min(width, box.x + 1.25 * box.w)), int(min(height, box.y + 1.25 * box.h))
        side = max(1, int(0.6 * min(box.w, box.h)))
        found, neighbours = self._verifier.detectMultiScale2(gray[y0:y1, x0:x1], scaleFactor=1.1, minNeighbors=1,
                                                             minSize=(side, side))
        return len(found) > 0 and int(np.max(neighbours)) >= self.verify_neighbors

    def _yunet(self, image):
        import cv2

        height, width = image.shape[:2]
        self._model.setInputSize((width, height))
        try:
            _, faces = self._model.detect(np.ascontiguousarray(image[..., ::-1]))
        except cv2.error as exc:
            raise ValueError(f"FaceDetector: '{self.path.name}' does not run as a YuNet face detector "
                             f"({str(exc).strip().splitlines()[-1]}); an .onnx must be YuNet "
                             "(face_detection_yunet_*.onnx from the OpenCV model zoo)") from exc
        if faces is None:
            return []
        return [Box(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[-1])) for f in faces]

    def _ssd(self, cv2, image):
        height, width = image.shape[:2]
        blob = cv2.dnn.blobFromImage(np.ascontiguousarray(image[..., ::-1]), 1.0, (_SSD_SIZE, _SSD_SIZE),
                                     _SSD_MEAN, swapRB=False, crop=False)
        self._model.setInput(blob)
        found = self._model.forward().reshape(-1, 7)  # [image id, class, confidence, x0, y0, x1, y1] in 0..1
        boxes, scores = [], []
        for _, _, score, x0, y0, x1, y1 in found:
            if score < self.score_threshold or x1 <= x0 or y1 <= y0:
                continue
            boxes.append([x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height])
            scores.append(float(score))
        if not boxes:
            return []
        keep = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, self.score_threshold, self.nms_threshold)).reshape(-1)
        return [Box(*map(float, boxes[i]), scores[i]) for i in keep]


def detect_faces(image: np.ndarray, *, detector: str | Path = "auto", min_size_fraction: float = 0.1,
                 models_dirs: tuple[str | Path, ...] = ()) -> list[Box]:
    """Detect faces in one image with a cached FaceDetector (see FaceDetector for the options).

    Args:
        image: (H, W, 3) uint8 RGB.
        detector: "auto", "scrfd", "yunet", "haar" or the path of a detector file.
        min_size_fraction: the smallest face side as a share of the image's shorter side.
        models_dirs: folders searched for the SCRFD / YuNet files.

    Returns:
        Boxes (x, y, w, h, score) in image pixels, largest first.
    """
    image = _as_rgb_uint8(image)  # bad images are reported before a missing detector
    spec = resolve_detector(detector, tuple(models_dirs))
    return _cached_detector(spec, float(min_size_fraction))(image)


def detect_faces_with_keypoints(image: np.ndarray, *, detector: str | Path = "auto", min_size_fraction: float = 0.1,
                                models_dirs: tuple[str | Path, ...] = ()) -> list[tuple[Box, np.ndarray | None]]:
    """detect_faces with each face's 5 keypoints ((5, 2) image pixels, SCRFD only; None from other detectors)."""
    image = _as_rgb_uint8(image)
    spec = resolve_detector(detector, tuple(models_dirs))
    return _cached_detector(spec, float(min_size_fraction)).detect_with_keypoints(image)


@functools.lru_cache(maxsize=4)
def _cached_detector(detector: str, min_size_fraction: float) -> FaceDetector:
    return FaceDetector(detector, min_size_fraction=min_size_fraction)


def _as_rgb_uint8(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB, checked; grayscale, RGBA, float and batches are refused with the conversion to use.
    A file path is read with io.image.load_image (CMYK, palette, 16-bit, animated, EXIF-rotated files)."""
    from ..io.image import describe_array_mode, load_image

    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype != np.uint8 and image.dtype.kind in "iu":
        raise ValueError(f"FaceDetector: image must be (H, W, 3) uint8 RGB, got {describe_array_mode(image)}")
    if image.dtype != np.uint8:
        raise ValueError(f"FaceDetector: image must be (H, W, 3) uint8 RGB (0..255), got {image.dtype} of shape "
                         f"{image.shape}; convert float images in 0..1 with (image * 255).round().astype(np.uint8)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 2, 4)):
        raise ValueError(f"FaceDetector: image must be (H, W, 3) uint8 RGB, got {describe_array_mode(image)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"FaceDetector: image must be (H, W, 3) uint8 RGB, got shape {image.shape}; for a batch, "
                         "pass one image (images[0])")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(f"FaceDetector: the image is only {image.shape[1]}x{image.shape[0]} pixels, too small to "
                         f"find a face in (the detector needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}); give a "
                         "larger portrait (ideally 512 px or more)")
    return np.ascontiguousarray(image)
