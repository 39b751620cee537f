"""SCRFD and YuNet output decoding against numpy references written from the formats' semantics.

Tiny random ONNX graphs with the real detectors' input / output signatures (SCRFD: one input, 9 outputs score /
box / keypoints at strides 8, 16, 32 with 2 anchors per location, insightface's layout; YuNet: input "input",
outputs cls_8 ... kps_32 as cv2.FaceDetectorYN reads them) are saved with the `onnx` package and run through
the pack's loaders (cv2.dnn ONNX importer, cv2.FaceDetectorYN). The references compute the graphs' raw outputs
in float64 numpy (average pool + 1x1 convolution), then decode them with plain loops: anchors, distances,
keypoints, thresholds, greedy NMS. Runs on OpenCV 4 and 5 (both keep the ONNX importer and FaceDetectorYN).
Also: "auto" picks SCRFD > YuNet > Haar, and the no-detector error says what to fetch where."""

from __future__ import annotations

import math

import numpy as np
import pytest

from singer_core.face import detector_files
from singer_core.face.detect import FaceDetector, detect_faces
from singer_core.face.detector_files import NoFaceDetectorError, resolve_detector
from singer_core.face.scrfd import ScrfdDetector

onnx = pytest.importorskip("onnx", reason="onnx is in the test extra")
cv2 = pytest.importorskip("cv2")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

STRIDES = (8, 16, 32)


# ------------------------------------------------------------------------------------------------------------
# tiny graphs


def _level_weights(rng, channels: int, scale: float, bias: float):
    return (rng.normal(0, scale, (channels, 3)).astype(np.float32),
            np.full(channels, bias, np.float32) + rng.normal(0, 0.1, channels).astype(np.float32))


def _head(nodes, inits, name, stride, weight, bias, out_shape, activation=None, gain=None):
    """_in (the input) -> AveragePool(stride) -> 1x1 Conv -> NHWC -> Reshape(out_shape) [-> activation] [-> x gain]."""
    pooled = f"pool_{stride}"
    if not any(node.output[0] == pooled for node in nodes):
        nodes.append(helper.make_node("AveragePool", ["_in"], [pooled],
                                      kernel_shape=[stride, stride], strides=[stride, stride]))
    inits += [numpy_helper.from_array(weight[:, :, None, None], f"{name}_w"),
              numpy_helper.from_array(bias, f"{name}_b"),
              numpy_helper.from_array(np.array(out_shape, np.int64), f"{name}_shape")]
    nodes += [helper.make_node("Conv", [pooled, f"{name}_w", f"{name}_b"], [f"{name}_conv"], kernel_shape=[1, 1]),
              helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_nhwc"], perm=[0, 2, 3, 1])]
    last = f"{name}_flat" if activation or gain else name
    nodes.append(helper.make_node("Reshape", [f"{name}_nhwc", f"{name}_shape"], [last]))
    if activation:
        target = f"{name}_act" if gain else name
        nodes.append(helper.make_node(activation, [last], [target]))
        last = target
    if gain:
        inits.append(numpy_helper.from_array(np.array(gain, np.float32), f"{name}_gain"))
        nodes.append(helper.make_node("Mul", [last, f"{name}_gain"], [name]))


def _save(path, input_name, nodes, inits, outputs):
    """outputs: {name: declared shape}."""
    nodes = [helper.make_node("Identity", [input_name], ["_in"])] + nodes
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, "height", "width"])
    ys = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs.items()]
    model = helper.make_model(helper.make_graph(nodes, "tiny_detector", [x], ys, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _scrfd_graph(path, seed=0):
    """SCRFD signature: 9 outputs [score_8/16/32 (N, 1), bbox (N, 4), kps (N, 10)], N = (H/s)(W/s) x 2."""
    rng = np.random.default_rng(seed)
    nodes, inits, weights = [], [], {}
    for kind, channels, scale, bias, activation, gain in (
            ("score", 1, 1.5, -1.5, "Sigmoid", None), ("bbox", 4, 0.5, 0.5, "Sigmoid", 3.0),
            ("kps", 10, 0.5, 0.0, "Tanh", 2.0)):
        for stride in STRIDES:
            weight, bias_v = _level_weights(rng, 2 * channels, scale, bias)
            if kind == "score":  # positive weights: the letterbox's black border scores low (no ties there)
                weight = np.abs(weight)
            weights[(kind, stride)] = (weight, bias_v, activation, gain)
            _head(nodes, inits, f"{kind}_{stride}", stride, weight, bias_v, [-1, channels], activation, gain)
    names = {f"{kind}_{stride}": [f"n{stride}", channels] for kind, channels in (("score", 1), ("bbox", 4), ("kps", 10))
             for stride in STRIDES}
    return _save(path, "input.1", nodes, inits, names), weights


def _yunet_graph(path, seed=0):
    """YuNet signature: input "input"; cls/obj (1, N, 1) in 0..1, bbox (1, N, 4), kps (1, N, 10), N = (H/s)(W/s)."""
    rng = np.random.default_rng(seed)
    nodes, inits, weights = [], [], {}
    for kind, channels, scale, bias, activation in (
            ("cls", 1, 0.02, -1.0, "Sigmoid"), ("obj", 1, 0.02, 1.0, "Sigmoid"),
            ("bbox", 4, 0.004, 0.8, None), ("kps", 10, 0.004, 0.0, None)):
        for stride in STRIDES:
            weight, bias_v = _level_weights(rng, channels, scale, bias)
            weights[(kind, stride)] = (weight, bias_v, activation, None)
            _head(nodes, inits, f"{kind}_{stride}", stride, weight, bias_v, [1, -1, channels], activation)
    names = {f"{kind}_{stride}": [1, f"n{stride}", channels]
             for kind, channels in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)) for stride in STRIDES}
    return _save(path, "input", nodes, inits, names), weights


def _raw_output(blob: np.ndarray, stride: int, weight, bias, activation, gain) -> np.ndarray:
    """float64 numpy forward of one head: (1, 3, H, W) -> (rows, cols, channels), NHWC order."""
    _, _, height, width = blob.shape
    pooled = blob[0].astype(np.float64).reshape(3, height // stride, stride, width // stride, stride).mean((2, 4))
    out = np.einsum("oc,chw->hwo", weight.astype(np.float64), pooled) + bias
    if activation == "Sigmoid":
        out = 1.0 / (1.0 + np.exp(-out))
    elif activation == "Tanh":
        out = np.tanh(out)
    return out * (gain or 1.0)


def _textured(height, width, seed=1) -> np.ndarray:
    """(H, W, 3) uint8 smooth colour blobs (so scores vary across the image) plus fine noise (so no two windows
    score the same: ties would make the NMS order arbitrary)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(20, 235, (5, 7, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.uniform(-12, 12, smooth.shape), 0, 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------
# SCRFD


def _scrfd_reference(image: np.ndarray, weights, threshold=0.5, nms=0.4, size=640):
    """insightface semantics written out: letterbox, (x - 127.5) / 128 RGB, anchors, distances, +1-pixel NMS."""
    height, width = image.shape[:2]
    if height / width > 1:
        new_h, new_w = size, int(size / (height / width))
    else:
        new_w, new_h = size, int(size * (height / width))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    det_scale = new_h / height
    blob = ((canvas.astype(np.float64) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    candidates = []  # (score, x0, y0, x1, y1, kps)
    for stride in STRIDES:
        score = _raw_output(blob, stride, *weights[("score", stride)])
        dist = _raw_output(blob, stride, *weights[("bbox", stride)])
        kps = _raw_output(blob, stride, *weights[("kps", stride)])
        for row in range(size // stride):
            for col in range(size // stride):
                for anchor in range(2):
                    s = score[row, col, anchor]
                    if s < threshold:
                        continue
                    cx, cy = col * stride, row * stride
                    left, top, right, bottom = dist[row, col, 4 * anchor:4 * anchor + 4] * stride
                    points = [(cx + kps[row, col, 10 * anchor + 2 * k] * stride,
                               cy + kps[row, col, 10 * anchor + 2 * k + 1] * stride) for k in range(5)]
                    candidates.append((s, cx - left, cy - top, cx + right, cy + bottom, points))
    candidates.sort(key=lambda c: -c[0])
    kept = []
    for cand in candidates:
        area = (cand[3] - cand[1] + 1) * (cand[4] - cand[2] + 1)
        suppressed = False
        for other in kept:
            iw = max(0.0, min(cand[3], other[3]) - max(cand[1], other[1]) + 1)
            ih = max(0.0, min(cand[4], other[4]) - max(cand[2], other[2]) + 1)
            other_area = (other[3] - other[1] + 1) * (other[4] - other[2] + 1)
            if iw * ih / (area + other_area - iw * ih) > nms:
                suppressed = True
                break
        if not suppressed:
            kept.append(cand)
    boxes = np.array([c[1:5] for c in kept]) / det_scale
    return np.array([c[0] for c in kept]), boxes, np.array([c[5] for c in kept]) / det_scale, len(candidates)


@pytest.mark.parametrize("shape", [(200, 300), (330, 180)])
def test_scrfd_decoding_matches_the_insightface_reference(tmp_path, shape):
    path, weights = _scrfd_graph(tmp_path / "scrfd_10g_bnkps.onnx")
    image = _textured(*shape)
    scores, boxes, keypoints, candidates = _scrfd_reference(image, weights)
    assert 5 < len(scores) < candidates  # several faces, and NMS removed some
    found = ScrfdDetector(path).detect(image)
    np.testing.assert_allclose(found.scores, scores, atol=2e-5)
    np.testing.assert_allclose(found.boxes, boxes, atol=2e-3)
    np.testing.assert_allclose(found.keypoints, keypoints, atol=2e-3)
    # the generic detector: the same boxes as (x, y, w, h), told SCRFD by its outputs (any file name)
    renamed = tmp_path / "detector.onnx"
    renamed.write_bytes(path.read_bytes())
    detector = FaceDetector(renamed, min_size_fraction=0.0)
    assert detector.kind == "scrfd"
    got = sorted((b.x, b.y, b.w, b.h, b.score) for b in detector(image))
    want = sorted((x0, y0, x1 - x0, y1 - y0, s) for (x0, y0, x1, y1), s in zip(boxes, scores, strict=True))
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_scrfd_threshold_and_wrong_outputs_are_named(tmp_path):
    path, weights = _scrfd_graph(tmp_path / "scrfd_10g_bnkps.onnx", seed=2)
    image = _textured(160, 160, seed=4)
    strict = ScrfdDetector(path, score_threshold=0.8).detect(image)
    scores, *_ = _scrfd_reference(image, weights, threshold=0.8)
    np.testing.assert_allclose(strict.scores, scores, atol=2e-5)
    assert (strict.scores >= 0.8).all()
    from singer_core.face.scrfd import decode_scrfd

    with pytest.raises(ValueError, match="has 4 outputs; an SCRFD detector has 6, 9, 10 or 15"):
        decode_scrfd([np.zeros((10, 1))] * 4, 640, 640)
    with pytest.raises(ValueError, match="cannot match the output shapes"):
        decode_scrfd([np.zeros((7, 1))] * 9, 640, 640)


# ------------------------------------------------------------------------------------------------------------
# YuNet


def _yunet_reference(image: np.ndarray, weights, threshold=0.6, nms=0.3):
    """cv2.FaceDetectorYN semantics written out: BGR 0..255 padded (bottom/right, zeros) to a multiple of 32;
    score sqrt(clip(cls) clip(obj)); centre (c + dx, r + dy) s, size exp(dw) s, exp(dh) s; keypoints
    (c + kx, r + ky) s; NMS on the integer-truncated boxes, IoU > nms suppresses, best score first."""
    height, width = image.shape[:2]
    pad_h, pad_w = math.ceil(height / 32) * 32, math.ceil(width / 32) * 32
    padded = np.zeros((pad_h, pad_w, 3))
    padded[:height, :width] = image[..., ::-1]
    blob = padded.transpose(2, 0, 1)[None]
    faces = []
    for stride in STRIDES:
        cls, obj, bbox, kps = (_raw_output(blob, stride, *weights[(kind, stride)]) for kind in ("cls", "obj", "bbox",
                                                                                                  "kps"))
        for row in range(pad_h // stride):
            for col in range(pad_w // stride):
                score = math.sqrt(min(max(cls[row, col, 0], 0), 1) * min(max(obj[row, col, 0], 0), 1))
                if score < threshold:
                    continue
                cx, cy = (col + bbox[row, col, 0]) * stride, (row + bbox[row, col, 1]) * stride
                w, h = math.exp(bbox[row, col, 2]) * stride, math.exp(bbox[row, col, 3]) * stride
                points = [((kps[row, col, 2 * k] + col) * stride, (kps[row, col, 2 * k + 1] + row) * stride)
                          for k in range(5)]
                faces.append((score, cx - w / 2, cy - h / 2, w, h, points))
    faces.sort(key=lambda f: -f[0])
    kept = []
    for face in faces:
        a = [int(v) for v in face[1:5]]
        for other in kept:
            b = [int(v) for v in other[1:5]]
            iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
            ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
            inter = iw * ih
            if inter / (a[2] * a[3] + b[2] * b[3] - inter) > nms:
                break
        else:
            kept.append(face)
    return kept, len(faces)


@pytest.mark.parametrize("shape", [(96, 160), (200, 130)])
def test_yunet_decoding_matches_the_opencv_reference(tmp_path, shape):
    path, weights = _yunet_graph(tmp_path / "face_detection_yunet_2023mar.onnx")
    image = _textured(*shape, seed=5)
    kept, candidates = _yunet_reference(image, weights)
    assert 3 < len(kept) < candidates
    yunet = cv2.FaceDetectorYN.create(str(path), "", (shape[1], shape[0]), 0.6, 0.3, 5000)
    _, faces = yunet.detect(np.ascontiguousarray(image[..., ::-1]))
    order = np.argsort(-faces[:, 14], kind="stable")
    faces = faces[order]
    assert len(faces) == len(kept)
    np.testing.assert_allclose(faces[:, 14], [f[0] for f in kept], atol=1e-5)
    np.testing.assert_allclose(faces[:, :4], [f[1:5] for f in kept], atol=1e-2)
    np.testing.assert_allclose(faces[:, 4:14].reshape(-1, 5, 2), [f[5] for f in kept], atol=1e-2)
    # the generic detector hands the image over as OpenCV wants it (BGR, its size) and returns x, y, w, h
    renamed = tmp_path / "mine.onnx"
    renamed.write_bytes(path.read_bytes())
    detector = FaceDetector(renamed, min_size_fraction=0.0, nms_threshold=0.3)
    assert detector.kind == "yunet"
    got = sorted((b.x, b.y, b.w, b.h, b.score) for b in detector(image))
    np.testing.assert_allclose(got, sorted(tuple(f[1:5]) + (f[0],) for f in kept), atol=1e-2)


# ------------------------------------------------------------------------------------------------------------
# choosing a detector


def test_auto_prefers_scrfd_then_yunet_then_haar(tmp_path):
    models = tmp_path / "models"
    (models / "face_analysis" / "models").mkdir(parents=True)
    if detector_files.haar_available():
        assert resolve_detector("auto", [models]) == "haar"
    else:
        with pytest.raises(NoFaceDetectorError) as caught:
            resolve_detector("auto", [models])
        message = str(caught.value)
        for part in ("scrfd_10g_bnkps.onnx", "fudan-generative-ai/hallo", "face_analysis/models",
                     "models/singer", "--models-dir", "python -m singer_core.face.detector_files",
                     "allow_download", "face_detection_yunet_2023mar.onnx", "face_box"):
            assert part in message, part
    yunet, _ = _yunet_graph(models / "face_detection_yunet_2023mar.onnx")
    assert resolve_detector("auto", [models]) == str(yunet)
    scrfd, _ = _scrfd_graph(models / "face_analysis" / "models" / "scrfd_10g_bnkps.onnx")
    assert resolve_detector("auto", [tmp_path / "absent", models]) == str(scrfd)
    assert resolve_detector("yunet", [models]) == str(yunet)
    assert FaceDetector("auto", models_dirs=(models,)).kind == "scrfd"
    assert detect_faces(_textured(64, 64), models_dirs=(models,), min_size_fraction=0.0) != []
    with pytest.raises(NoFaceDetectorError, match="no scrfd detector file found"):
        resolve_detector("scrfd", [tmp_path])
    assert detector_files.fetch_scrfd(models, allow_download=False) == scrfd
    with pytest.raises(NoFaceDetectorError, match="no scrfd detector file"):
        detector_files.fetch_scrfd(tmp_path / "empty", allow_download=False)


@pytest.mark.skipif(detector_files.haar_available(), reason="this OpenCV still has the Haar cascade")
def test_without_cascades_haar_names_the_fix():
    with pytest.raises(NoFaceDetectorError, match="lacks.*scrfd_10g_bnkps.onnx"):
        FaceDetector("haar")
    with pytest.raises(NoFaceDetectorError, match="no face detector available"):
        detect_faces(_textured(64, 64))


def test_fetch_command_finds_a_file_already_in_place(tmp_path, capsys):
    (tmp_path / "face_analysis" / "models").mkdir(parents=True)
    scrfd, _ = _scrfd_graph(tmp_path / "face_analysis" / "models" / "scrfd_10g_bnkps.onnx")
    assert detector_files.main(["--models-dir", str(tmp_path)]) == 0
    assert str(scrfd) in capsys.readouterr().out


def test_keypoints_come_back_in_the_input_pixels_of_a_large_image(tmp_path):
    """A 900 x 700 image is scaled to 640 for detection; boxes and SCRFD keypoints return in its own pixels."""
    from singer_core.face.detect import detect_faces_with_keypoints

    (tmp_path / "face_analysis" / "models").mkdir(parents=True)
    _, weights = _scrfd_graph(tmp_path / "face_analysis" / "models" / "scrfd_10g_bnkps.onnx")
    image = _textured(700, 900, seed=6)
    small = cv2.resize(image, (640, round(700 * 640 / 900)), interpolation=cv2.INTER_AREA)
    scores, boxes, keypoints, _ = _scrfd_reference(small, weights)
    scale = 640 / 900
    found = detect_faces_with_keypoints(image, models_dirs=(tmp_path,), min_size_fraction=0.0)
    assert len(found) == len(scores) > 3
    order = np.argsort(-scores, kind="stable")
    got = sorted(found, key=lambda pair: -pair[0].score)
    for (box, points), index in zip(got, order, strict=True):
        x0, y0, x1, y1 = boxes[index] / scale
        np.testing.assert_allclose((box.x, box.y, box.w, box.h), (x0, y0, x1 - x0, y1 - y0), atol=5e-3)
        np.testing.assert_allclose(points, keypoints[index] / scale, atol=5e-3)
    yunet, _ = _yunet_graph(tmp_path / "face_detection_yunet_2023mar.onnx")
    assert all(points is None for _, points in detect_faces_with_keypoints(image, detector=yunet))
