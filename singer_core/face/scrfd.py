"""SCRFD face detection (Guo et al. 2021, "Sample and Computation Redistribution for Efficient Face Detection"):
Hallo's own detector, `face_analysis/models/scrfd_10g_bnkps.onnx` (hub fudan-generative-ai/hallo), run through
OpenCV's DNN ONNX importer (which OpenCV 5 keeps) with the output decoding of insightface's model zoo.

Format (insightface `model_zoo/scrfd.py`, `app/face_analysis.py` with det_size 640, det_thresh 0.5):
- input: the image letterboxed into 640 x 640 (scaled by det_scale = new_h / H keeping the aspect ratio, placed
  at the top-left corner, black elsewhere), RGB, NCHW, (x - 127.5) / 128;
- outputs: per stride s of the feature pyramid a score (N, 1), a box (N, 4) and, for the "kps" models, a
  keypoint (N, 10) tensor, grouped [scores..., boxes..., keypoints...]; N = (640/s)^2 x A anchors; the anchor
  index is (row x cols + col) x A + a; 6 or 9 outputs: strides 8/16/32 with A = 2 anchors per location,
  10 or 15 outputs: strides 8..128 with A = 1;
- anchor centre of (row, col): (col x s, row x s) in input pixels (both anchors of a location share it);
- box: distances (left, top, right, bottom) in units of s from the centre: x0 = cx - l s, y0 = cy - t s,
  x1 = cx + r s, y1 = cy + b s; keypoint k: (cx + dx_k s, cy + dy_k s), five points (image-left eye,
  image-right eye, nose tip, image-left and image-right mouth corners);
- scores >= threshold are kept, sorted by score, greedy NMS at IoU 0.4 with insightface's +1 pixel areas,
  then boxes and keypoints divided by det_scale back to image pixels.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SCRFD_INPUT_SIZE = 640  # insightface FaceAnalysis.prepare(det_size=(640, 640)), as Hallo calls it
SCRFD_MEAN = 127.5  # subtracted from 0..255 RGB
SCRFD_STD = 128.0  # divides after the mean
SCRFD_SCORE_THRESHOLD = 0.5  # insightface det_thresh
SCRFD_NMS_THRESHOLD = 0.4  # insightface SCRFD.nms_threshold
# output count -> (strides, anchors per location, has keypoints)
SCRFD_LAYOUTS = {6: ((8, 16, 32), 2, False), 9: ((8, 16, 32), 2, True),
                 10: ((8, 16, 32, 64, 128), 1, False), 15: ((8, 16, 32, 64, 128), 1, True)}


@dataclasses.dataclass(frozen=True)
class ScrfdDetections:
    """Detections of one image, best score first.

    boxes: (K, 4) float32 (x0, y0, x1, y1) image pixels; scores: (K,) float32; keypoints: (K, 5, 2) float32
    image pixels, or None for models without keypoints.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None


def letterbox(image: np.ndarray, size: int = SCRFD_INPUT_SIZE) -> tuple[np.ndarray, float]:
    """insightface's detector input image: (size, size, 3) uint8 with `image` resized (cv2 bilinear) to fit at
    the top-left corner, black elsewhere, and det_scale = new height / H (boxes / det_scale = image pixels).

    image: (H, W, 3) uint8.
    """
    import cv2

    height, width = image.shape[:2]
    if height / width > 1.0:  # taller than the square input: full height
        new_height = size
        new_width = int(new_height / (height / width))
    else:
        new_width = size
        new_height = int(new_width * (height / width))
    new_width, new_height = max(1, new_width), max(1, new_height)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(image, (new_width, new_height))
    return canvas, new_height / height


def scrfd_blob(letterboxed: np.ndarray) -> np.ndarray:
    """(1, 3, S, S) float32 network input from a letterboxed (S, S, 3) uint8 RGB image: (x - 127.5) / 128."""
    return np.ascontiguousarray(((letterboxed.astype(np.float32) - SCRFD_MEAN) / SCRFD_STD).transpose(2, 0, 1)[None])


def anchor_centres(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    """(rows x cols x anchors, 2) float32 anchor centres (x, y) in input pixels, in the network's anchor order."""
    ys, xs = np.mgrid[:rows, :cols]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


def decode_scrfd(outputs: list[np.ndarray], input_height: int, input_width: int, *,
                 score_threshold: float = SCRFD_SCORE_THRESHOLD
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode SCRFD outputs into candidate boxes (before NMS), in input pixels.

    outputs: the network's 6, 9, 10 or 15 outputs in any order ((N, C) or (1, N, C); each is identified by
    its row count, which gives its stride, and its C: 1 score, 4 box, 10 keypoints); input_height/width: the
    blob's size. Returns boxes (K, 4) x0 y0 x1 y1, scores (K,), keypoints (K, 5, 2) or None, in output order
    (stride by stride, anchor by anchor), only scores >= score_threshold.
    """
    if len(outputs) not in SCRFD_LAYOUTS:
        raise ValueError(f"SCRFD: the network has {len(outputs)} outputs; an SCRFD detector has 6, 9, 10 or 15 "
                         "(score / box / keypoint maps per stride), e.g. Hallo's scrfd_10g_bnkps.onnx")
    strides, anchors, has_kps = SCRFD_LAYOUTS[len(outputs)]
    rows_of = {(input_height // s) * (input_width // s) * anchors: s for s in strides}
    maps: dict[tuple[int, int], np.ndarray] = {}
    for out in outputs:
        out = np.asarray(out, dtype=np.float32)
        channels = out.shape[-1] if out.ndim >= 2 else 0
        flat = out.reshape(-1, channels) if channels else out
        stride = rows_of.get(flat.shape[0]) if channels else None
        if stride is None or channels not in (1, 4, 10) or (stride, channels) in maps:
            found = sorted(tuple(np.shape(o)) for o in outputs)
            raise ValueError(f"SCRFD: cannot match the output shapes {found} to strides {strides} with {anchors} "
                             f"anchor(s) at a {input_width}x{input_height} input; the file is not an SCRFD "
                             "detector of the insightface layout")
        maps[(stride, channels)] = flat
    boxes, scores, keypoints = [], [], []
    for stride in strides:
        # 1. anchor centres of this level
        centres = anchor_centres(input_height // stride, input_width // stride, stride, anchors)
        score = maps[(stride, 1)][:, 0]
        keep = score >= score_threshold
        # 2. distances -> corners, keypoint offsets -> points (both in units of the stride)
        distance = maps[(stride, 4)][keep] * stride
        centre = centres[keep]
        boxes.append(np.concatenate([centre - distance[:, :2], centre + distance[:, 2:]], axis=1))
        scores.append(score[keep])
        if has_kps:
            offsets = maps[(stride, 10)][keep].reshape(-1, 5, 2) * stride
            keypoints.append(centre[:, None, :] + offsets)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(keypoints).astype(np.float32) if has_kps else None)


def nms_insightface(boxes: np.ndarray, scores: np.ndarray, threshold: float = SCRFD_NMS_THRESHOLD) -> np.ndarray:
    """Greedy non-maximum suppression as insightface's SCRFD.nms: highest score first, drop every box whose IoU
    with a kept one exceeds `threshold`, areas and overlaps counted with +1 pixel (inclusive corners).

    boxes: (K, 4) x0 y0 x1 y1; scores: (K,). Returns the kept indices, best first.
    """
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        inter = width * height
        order = rest[inter / (areas[best] + areas[rest] - inter) <= threshold]
    return np.asarray(keep, dtype=np.int64)


class ScrfdDetector:
    """An SCRFD .onnx face detector run with OpenCV DNN.

    path: the .onnx file (Hallo's face_analysis/models/scrfd_10g_bnkps.onnx); score_threshold: the least score
    kept (insightface: 0.5); nms_threshold: IoU above which a weaker box is dropped (0.4); input_size: side of
    the square letterbox the image is fitted into (640, as Hallo).
    """

    def __init__(self, path: str | Path, *, score_threshold: float = SCRFD_SCORE_THRESHOLD,
                 nms_threshold: float = SCRFD_NMS_THRESHOLD, input_size: int = SCRFD_INPUT_SIZE) -> None:
        import cv2

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"ScrfdDetector: the detector file '{self.path}' does not exist")
        if input_size % 32:
            raise ValueError(f"ScrfdDetector: input_size must be a multiple of 32 (the largest stride), got "
                             f"{input_size}")
        try:
            self.net = cv2.dnn.readNetFromONNX(str(self.path))
        except cv2.error as exc:
            raise ValueError(f"ScrfdDetector: OpenCV could not read '{self.path.name}' as an ONNX network "
                             f"({str(exc).strip().splitlines()[-1]}); give an SCRFD detector such as Hallo's "
                             "scrfd_10g_bnkps.onnx") from exc
        self.output_names = list(self.net.getUnconnectedOutLayersNames())
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.input_size = int(input_size)

    def __repr__(self) -> str:
        return f"ScrfdDetector('{self.path.name}', outputs={len(self.output_names)})"

    def detect(self, image: np.ndarray) -> ScrfdDetections:
        """Faces in an (H, W, 3) uint8 RGB image, best score first (see ScrfdDetections)."""
        import cv2

        # 1. letterbox and normalise
        canvas, det_scale = letterbox(image, self.input_size)
        blob = scrfd_blob(canvas)
        # 2. run the network
        self.net.setInput(blob)
        try:
            outputs = self.net.forward(self.output_names)
        except cv2.error as exc:
            raise ValueError(f"ScrfdDetector: '{self.path.name}' does not run as an SCRFD detector "
                             f"({str(exc).strip().splitlines()[-1]})") from exc
        # 3. decode, suppress, back to image pixels
        boxes, scores, keypoints = decode_scrfd(list(outputs), self.input_size, self.input_size,
                                                score_threshold=self.score_threshold)
        keep = nms_insightface(boxes, scores, self.nms_threshold)
        return ScrfdDetections(boxes=boxes[keep] / det_scale, scores=scores[keep],
                               keypoints=None if keypoints is None else keypoints[keep] / det_scale)


__all__ = ["SCRFD_INPUT_SIZE", "ScrfdDetections", "ScrfdDetector", "anchor_centres", "decode_scrfd", "letterbox",
           "nms_insightface", "scrfd_blob"]
