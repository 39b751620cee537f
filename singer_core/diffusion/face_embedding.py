"""Face identity embedding for the SINGER/Hallo image projection: an ArcFace-style recognition ONNX file
(Hallo's face_analysis/models/glintr100.onnx) run through OpenCV DNN on a 5-point aligned 112 x 112 crop.

Facts followed (insightface `utils/face_align.py`, `model_zoo/arcface_onnx.py`, Hallo `image_processor.py`):
- alignment: least-squares similarity transform (Umeyama) of the 5 keypoints (left eye, right eye, nose,
  left mouth corner, right mouth corner; "left" = image left) onto `ARCFACE_TEMPLATE`, cv2.warpAffine to
  112 x 112 with border value 0;
- input: RGB (insightface warps the BGR frame and lets cv2.dnn.blobFromImages(swapRB=True) turn it into
  RGB), NCHW, (x - 127.5) / 127.5 (models exported from PyTorch such as glintr100; the old MXNet models
  that normalise inside the graph take raw 0..255, see `input_mean`/`input_std`);
- output: the raw 512-d `embedding` (Hallo feeds `face["embedding"]`, not the L2-normalised one), and a
  zero vector when no face is found (Hallo's fallback, also the unguided branch of classifier-free guidance).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

ARCFACE_SIZE = 112  # side of the aligned crop ArcFace models take
# insightface arcface_dst: 5 keypoints in the 112 x 112 crop (x, y), image-left eye first
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_MEAN = 127.5  # subtracted from 0..255 RGB
ARCFACE_STD = 127.5  # divides after the mean
# where the 5 keypoints sit inside a detector face box, as fractions of its width / height (x, y): the
# template's own layout, taken as a face box spanning the 112 x 112 crop; an approximation used when no
# landmarks are known (the embedding of a real photo is better with real keypoints)
BOX_KEYPOINTS = ARCFACE_TEMPLATE / ARCFACE_SIZE


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity transform (rotation, uniform scale, shift) taking source to target.

    source, target: (N, 2) points, N >= 2 (Umeyama 1991, no reflection). Returns M with target ~ M @ [x, y, 1].
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"similarity_transform: need two (N, 2) point sets, N >= 2, got {src.shape} and {dst.shape}")
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    a, b = src - mean_src, dst - mean_dst
    var = (a ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("similarity_transform: the source points coincide; give distinct keypoints")
    cov = b.T @ a / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / var
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mean_dst - scale * rotation @ mean_src
    return matrix


def keypoints_from_box(box) -> np.ndarray:
    """(5, 2) approximate keypoints of a face box (x, y, w, h[, score]) from `BOX_KEYPOINTS`."""
    x, y, w, h = (float(v) for v in tuple(box)[:4])
    if not (w > 0 and h > 0):
        raise ValueError(f"keypoints_from_box: the box must have positive width and height, got {tuple(box)[:4]}")
    return np.stack([x + BOX_KEYPOINTS[:, 0] * w, y + BOX_KEYPOINTS[:, 1] * h], axis=1)


def keypoints_from_landmarks68(landmarks) -> np.ndarray:
    """(5, 2) keypoints from 68-point (iBUG/dlib) landmarks (68, 2): eye centres 36-41 and 42-47, nose tip 30,
    mouth corners 48 and 54."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"keypoints_from_landmarks68: landmarks must be (68, 2), got {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def align_face(image: np.ndarray, keypoints, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ArcFace crop: warp `image` so its 5 keypoints land on the template (scaled to `size`).

    image: (H, W, 3) uint8 RGB; keypoints: (5, 2) image pixels. Returns (size, size, 3) uint8 RGB,
    pixels outside the image black (insightface's borderValue 0), bilinear interpolation.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"align_face: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    points = np.asarray(keypoints, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"align_face: keypoints must be (5, 2) (eyes, nose, mouth corners), got {points.shape}")
    matrix = similarity_transform(points, ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def arcface_blob(aligned: np.ndarray, mean: float = ARCFACE_MEAN, std: float = ARCFACE_STD) -> np.ndarray:
    """(N, 3, S, S) float32 network input from aligned RGB crops (N, S, S, 3) or (S, S, 3) uint8: (x - mean) / std."""
    crops = np.asarray(aligned)
    crops = crops[None] if crops.ndim == 3 else crops
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"arcface_blob: aligned crops must be (N, S, S, 3) RGB, got {crops.shape}")
    return np.ascontiguousarray(((crops.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


class FaceEmbedder:
    """A face-recognition ONNX model (e.g. Hallo's glintr100.onnx, 512-d) run with OpenCV DNN.

    path: the .onnx file; input_mean, input_std: input normalisation (127.5 / 127.5 for PyTorch-exported
    ArcFace models; 0.0 / 1.0 for the MXNet ones that normalise inside the graph); size: aligned crop side.
    """

    def __init__(self, path: str | os.PathLike, *, input_mean: float = ARCFACE_MEAN, input_std: float = ARCFACE_STD,
                 size: int = ARCFACE_SIZE) -> None:
        import cv2

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"FaceEmbedder: the face-recognition model '{self.path}' does not exist; give "
                                    "an ArcFace .onnx file such as Hallo's face_analysis/models/glintr100.onnx "
                                    "(hub fudan-generative-ai/hallo), or no file to use the zero embedding")
        if self.path.suffix.lower() != ".onnx":
            raise ValueError(f"FaceEmbedder: '{self.path}' is not an .onnx file; give an ArcFace ONNX model")
        try:
            self.net = cv2.dnn.readNetFromONNX(str(self.path))
        except cv2.error as error:
            raise ValueError(f"FaceEmbedder: OpenCV could not read '{self.path}' as an ONNX network ({error}); "
                             "give an ArcFace recognition model (112 x 112 RGB in, embedding out)") from error
        self.input_mean, self.input_std, self.size = float(input_mean), float(input_std), int(size)

    def __repr__(self) -> str:
        return f"FaceEmbedder('{self.path.name}', size={self.size})"

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        """(N, D) float32 raw embeddings of aligned RGB crops (N, S, S, 3) or (S, S, 3) uint8."""
        blob = arcface_blob(aligned, self.input_mean, self.input_std)
        if blob.shape[2:] != (self.size, self.size):
            raise ValueError(f"FaceEmbedder: crops must be {self.size} x {self.size}, got {blob.shape[2:]}")
        self.net.setInput(blob)
        out = np.asarray(self.net.forward(), dtype=np.float32)
        return out.reshape(blob.shape[0], -1)

    def embed(self, image: np.ndarray, *, keypoints=None, box=None) -> torch.Tensor:
        """(D,) float32 embedding of the face in `image` ((H, W, 3) uint8 RGB).

        keypoints: (5, 2) image pixels (best); else box: (x, y, w, h) face box whose keypoints are estimated
        with `keypoints_from_box`. One of the two is required.
        """
        if keypoints is None:
            if box is None:
                raise ValueError("FaceEmbedder.embed: give the face's 5 keypoints or its box")
            keypoints = keypoints_from_box(box)
        aligned = align_face(image, keypoints, self.size)
        return torch.from_numpy(self.embed_aligned(aligned)[0].copy())


def zero_embedding(dim: int = 512) -> torch.Tensor:
    """(dim,) zeros: Hallo's embedding when no face is found, and the unguided branch's embedding."""
    return torch.zeros(int(dim))
