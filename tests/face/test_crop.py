"""singer_core.face.crop / detect against closed forms: box geometry worked out by hand, crops compared with
direct numpy slicing and analytic images, paste-back identity and mask continuity, box smoothing against a
float64 loop reference; detector file errors."""

from __future__ import annotations

import numpy as np
import pytest

from singer_core.face.crop import (
    CropTransform,
    crop_transform,
    expand_box,
    paste_back,
    smooth_boxes,
    square_box,
    square_crop,
)
from singer_core.face.detect import Box, FaceDetector, box_iou, detect_faces
from singer_core.face.detector_files import haar_available

needs_haar = pytest.mark.skipif(not haar_available(), reason="this OpenCV has no Haar cascade (OpenCV 5)")


def _gradient_image(height=60, width=90) -> np.ndarray:
    """Pixel (y, x) holds (x, y, x + y): every crop can be checked against its coordinates."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, xx + yy], -1).astype(np.uint8)


def test_expand_and_square_box_closed_form():
    box = Box(10.0, 20.0, 40.0, 30.0, 0.9)
    grown = expand_box(box, 1.2)
    assert grown == pytest.approx((6.0, 17.0, 48.0, 36.0, 0.9))  # centre (30, 35) kept
    assert expand_box((10, 20, 40, 30), 1 / 0.8)[:4] == pytest.approx((5.0, 16.25, 50.0, 37.5))
    assert square_box(box)[:4] == pytest.approx((10.0, 15.0, 40.0, 40.0))
    assert box_iou(Box(0, 0, 10, 10), Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou(Box(0, 0, 10, 10), Box(20, 0, 10, 10)) == 0.0
    with pytest.raises(ValueError, match="ratio must be > 0"):
        expand_box(box, 0)
    with pytest.raises(ValueError, match="width and height must be > 0"):
        expand_box((0, 0, -1, 5))


def test_square_crop_is_the_slice_when_scale_is_one():
    image = _gradient_image()
    crop, transform = square_crop(image, (20.4, 10.2, 24.0, 20.0), 24)
    # side = max(24, 20) = 24 around centre (32.4, 20.2): corner (20.4, 8.2) rounds to (20, 8)
    assert transform == CropTransform(x0=20, y0=8, side=24, size=24, image_height=60, image_width=90)
    assert crop_transform((20.4, 10.2, 24.0, 20.0), 24, image.shape) == transform
    np.testing.assert_array_equal(crop, image[8:32, 20:44])
    assert transform.to_image([[0, 0], [23, 23]]) == pytest.approx(np.array([[20, 8], [43, 31]]))


def test_square_crop_downscale_maps_pixel_centres():
    image = _gradient_image().astype(np.float32)
    crop, transform = square_crop(image, (10, 10, 40, 40), 20)
    assert transform.scale == 2.0 and (transform.x0, transform.y0) == (10, 10)
    # area averaging of a linear ramp = the ramp at the pixel centre: crop (u, v) -> image (10 + 2u + 0.5, ...)
    u = np.arange(20)
    np.testing.assert_allclose(crop[0, :, 0], 10 + 2 * u + 0.5, atol=1e-4)
    np.testing.assert_allclose(crop[:, 0, 1], 10 + 2 * u + 0.5, atol=1e-4)
    centres = transform.to_image(np.stack([u, u], -1))
    np.testing.assert_allclose(centres[:, 0], 10 + 2 * u + 0.5)
    np.testing.assert_allclose(transform.to_crop(centres), np.stack([u, u], -1).astype(float))


def test_square_crop_pads_past_the_edges():
    image = _gradient_image()
    crop, transform = square_crop(image, (-5, -3, 10, 10), 10)
    assert (transform.x0, transform.y0) == (-5, -3)
    # replicate: row/column indices clamp to 0
    expected = image[np.clip(np.arange(-3, 7), 0, 59)][:, np.clip(np.arange(-5, 5), 0, 89)]
    np.testing.assert_array_equal(crop, expected)
    crop, _ = square_crop(image, (85, 55, 10, 10), 10, pad=(255, 0, 7))
    np.testing.assert_array_equal(crop[:5, :5], image[55:60, 85:90])
    assert (crop[5:, :] == [255, 0, 7]).all() and (crop[:, 5:] == [255, 0, 7]).all()
    with pytest.raises(ValueError, match="entirely outside"):
        square_crop(image, (200, 200, 10, 10), 10)
    with pytest.raises(ValueError, match="colour needs 3 values"):
        square_crop(image, (85, 55, 10, 10), 10, pad=(1, 2))


def test_paste_back_of_the_unmodified_crop_reproduces_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    crop, transform = square_crop(image, (10, 5, 40, 40), 40)  # scale 1: exact
    np.testing.assert_array_equal(paste_back(image, crop, transform), image)
    # scale != 1 on a smooth image: the only change is the down/up resampling inside the square, measured
    yy, xx = np.mgrid[0:64, 0:80]
    smooth = np.stack([128 + 100 * np.sin(xx / 11), 128 + 100 * np.cos(yy / 13), 60 + xx + yy], -1)
    smooth = np.rint(smooth).astype(np.uint8)
    crop, transform = square_crop(smooth, (10, 5, 40, 40), 20)
    out = paste_back(smooth, crop, transform)
    error = np.abs(out.astype(int) - smooth.astype(int))
    assert error[:5].max() == 0 and error[:, :10].max() == 0 and error[45:].max() == 0  # outside the square
    assert error.max() <= 2 and error.mean() < 0.15  # measured: max 1, mean 0.05 (2x down, then up)


def test_paste_back_feather_is_continuous_and_hard_when_zero():
    image = np.zeros((50, 60, 3), np.float32)
    white = np.ones((20, 20, 3), np.float32)
    transform = CropTransform(x0=10, y0=5, side=40, size=20, image_height=50, image_width=60)
    out = paste_back(image, white, transform, feather=0.25)[..., 0]
    row = out[25, 10:50]  # across the square's middle: the smoothstep ramp over 10 px on each side
    t = np.clip(np.minimum(np.arange(40) + 0.5, 40 - np.arange(40) - 0.5) / 10, 0, 1)
    np.testing.assert_allclose(row, t * t * (3 - 2 * t), atol=1e-6)
    assert out[25, 9] == 0 and out[25, 10] < 0.01 and row[10:30].min() == 1.0
    assert np.abs(np.diff(out, axis=1)).max() <= 1.5 / 10 and np.abs(np.diff(out, axis=0)).max() <= 1.5 / 10
    hard = paste_back(image, white, transform, feather=0.0)[..., 0]
    assert hard[5:45, 10:50].min() == 1.0 and hard.sum() == 40 * 40
    # a square reaching past the image is clipped; a mask in crop pixels multiplies in
    edge = CropTransform(x0=-10, y0=-10, side=20, size=20, image_height=50, image_width=60)
    mask = np.zeros((20, 20), np.float32)
    mask[10:, 10:] = 1.0
    out = paste_back(image, white, edge, feather=0.0, mask=mask)[..., 0]
    assert out[:10, :10].min() == 1.0 and out.sum() == 100
    with pytest.raises(ValueError, match="generated_crop is uint8 but the image is float32"):
        paste_back(image, np.zeros((20, 20, 3), np.uint8), transform)
    with pytest.raises(ValueError, match="cut from a 60x50 image"):
        paste_back(np.zeros((10, 10, 3), np.float32), white, transform)


def _smooth_reference(track: np.ndarray, window: int) -> np.ndarray:
    """float64 loop: linear gap filling, then a centred average shrinking symmetrically at the ends."""
    track = track.copy()
    count = len(track)
    known = [t for t in range(count) if not np.isnan(track[t]).any()]
    for t in range(count):
        if t in known:
            continue
        before = [k for k in known if k < t]
        after = [k for k in known if k > t]
        if not before:
            track[t] = track[after[0]]
        elif not after:
            track[t] = track[before[-1]]
        else:
            a, b = before[-1], after[0]
            track[t] = track[a] + (track[b] - track[a]) * (t - a) / (b - a)
    out = np.empty_like(track)
    for t in range(count):
        reach = min(window // 2, t, count - 1 - t)
        out[t] = track[t - reach:t + reach + 1].mean(axis=0)
    return out


def test_smooth_boxes_fills_gaps_and_averages():
    rng = np.random.default_rng(1)
    count = 40
    t = np.arange(count, dtype=np.float64)
    truth = np.stack([50 + 2 * t, 30 - t, 80 + 0 * t, 80 + 0.5 * t], -1)
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    noisy[[0, 1, 7, 8, 9, 20, 38, 39]] = np.nan  # misses at both ends and inside
    smoothed = smooth_boxes(noisy, window=7)
    np.testing.assert_allclose(smoothed, _smooth_reference(noisy, 7), atol=1e-9)
    # constant velocity is preserved exactly, gaps included
    linear = truth.copy()
    linear[[5, 6, 17]] = np.nan
    np.testing.assert_allclose(smooth_boxes(linear, 9), truth, atol=1e-9)
    # the noise shrinks: window 7 averages ~7 samples (std 2 / sqrt(7))
    inner = slice(12, 18)
    assert np.std(smoothed[inner] - truth[inner]) < np.std(noisy[inner] - truth[inner])
    np.testing.assert_allclose(smooth_boxes(noisy, 1)[[0, 1, 38, 39]],
                               noisy[[2, 2, 37, 37]], atol=1e-12)  # ends hold the nearest detection
    with pytest.raises(ValueError, match="every row is NaN"):
        smooth_boxes(np.full((5, 4), np.nan))
    with pytest.raises(ValueError, match="odd integer"):
        smooth_boxes(truth, 4)


def test_detector_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*yunet.onnx|yunet.onnx.*does not exist"):
        FaceDetector(tmp_path / "yunet.onnx")
    with pytest.raises(ValueError, match="cannot tell what detector"):
        FaceDetector(tmp_path / "model.bin")
    (tmp_path / "res10.caffemodel").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="deploy.prototxt"):
        FaceDetector(tmp_path / "res10.caffemodel")
    (tmp_path / "bad.xml").write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ValueError, match="could not load the Haar cascade" if haar_available() else
                       "'bad.xml' is a Haar cascade, which OpenCV .* cannot run"):
        FaceDetector(tmp_path / "bad.xml")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        detect_faces(np.zeros((32, 32), np.uint8))


def test_an_onnx_file_that_is_no_detector_is_named(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is in the test extra")
    from onnx import TensorProto, helper

    port = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 8, 8]) for name in ("input", "out")]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "g", port[:1], port[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "identity.onnx"))
    with pytest.raises(ValueError, match="'identity.onnx' is neither a YuNet nor an SCRFD face detector"):
        FaceDetector(tmp_path / "identity.onnx")


@needs_haar
def test_haar_finds_nothing_in_noise_and_respects_min_size():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert detect_faces(noise) == []
    assert FaceDetector(min_size_fraction=0.5).min_size_fraction == 0.5


def test_user_face_boxes_from_text_mask_and_landmarks():
    from singer_core.face.user_box import box_from_landmarks, box_from_mask, parse_box_text

    assert parse_box_text("", 100, 80, "t") is None and parse_box_text("  ", 100, 80, "t") is None
    assert parse_box_text("10, 20, 30, 40", 100, 80, "t")[:4] == (10.0, 20.0, 30.0, 40.0)
    assert parse_box_text("[10 20;30 40.5]", 100, 80, "t")[:4] == (10.0, 20.0, 30.0, 40.5)
    with pytest.raises(ValueError, match="t: the face box '10, 20, 30' has 3 numbers, needs 4; write it as"):
        parse_box_text("10, 20, 30", 100, 80, "t")
    with pytest.raises(ValueError, match="cannot read the face box 'a,b,c,d'"):
        parse_box_text("a,b,c,d", 100, 80, "t")
    with pytest.raises(ValueError, match="lies outside the 100x80 image"):
        parse_box_text("100, 0, 5, 5", 100, 80, "t")
    with pytest.raises(ValueError, match="positive width and height"):
        parse_box_text("1, 1, 0, 5", 100, 80, "t")
    mask = np.zeros((80, 100), np.float32)
    mask[20:61, 10:41] = 1.0  # rows 20..60, columns 10..40
    assert box_from_mask(mask, "t")[:4] == (10.0, 20.0, 31.0, 41.0)
    assert box_from_mask(mask[None], "t")[:4] == (10.0, 20.0, 31.0, 41.0)
    with pytest.raises(ValueError, match="the face mask is empty.*MaskEditor"):
        box_from_mask(np.zeros((8, 8)), "t")
    marks = np.random.default_rng(0).uniform(10, 50, (68, 2))
    marks[5] = (3.0, 60.0)  # a jaw point sets the left and bottom edges; mouth points (48-67) do not count
    marks[50] = (70.0, 70.0)
    box = box_from_landmarks(marks)
    assert box.x == 3.0 and box.y + box.h == 60.0 and box.x + box.w == pytest.approx(marks[:27, 0].max())
