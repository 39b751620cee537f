"""singer_core.eval metrics against closed forms and independent float64 numpy references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage, signal
from scipy.ndimage import gaussian_filter

from singer_core.eval import fvd as fvd_module
from singer_core.eval import image, metrics
from singer_core.eval import motion as motion_metrics

# ------------------------------------------------------------------------------------------------ PSNR


def test_psnr_matches_closed_form_for_known_noise():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.8, size=(3, 16, 20, 3))
    sigmas = np.array([0.01, 0.05, 0.1])
    signs = rng.choice([-1.0, 1.0], size=target.shape)
    pred = target + signs * sigmas[:, None, None, None]  # every pixel off by exactly +-sigma: MSE = sigma^2
    per_frame = metrics.psnr(torch.from_numpy(pred), torch.from_numpy(target), reduction="none")
    np.testing.assert_allclose(per_frame.numpy(), 10 * np.log10(1.0 / sigmas ** 2), rtol=1e-10)
    assert metrics.psnr(pred, target) == pytest.approx(np.mean(10 * np.log10(1.0 / sigmas ** 2)))
    # data_range 255 on uint8-scaled values
    assert metrics.psnr(pred[0] * 255, target[0] * 255, data_range=255.0) == pytest.approx(40.0)
    assert metrics.psnr(target, target) == math.inf


def test_psnr_and_ssim_refuse_mismatched_or_channels_first_input():
    x = torch.rand(4, 32, 32, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(x, x[:3])
    with pytest.raises(ValueError, match="permute"):
        metrics.ssim(x.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(torch.rand(1, 8, 8, 1), torch.rand(1, 8, 8, 1))


# ------------------------------------------------------------------------------------------------ SSIM


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al. 2004 on one (H, W) float64 plane: 2-D Gaussian window, 'valid' correlation."""
    coords = np.arange(11) - 5.0
    g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()

    def filt(a):
        return signal.correlate2d(a, g, mode="valid")

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def test_ssim_matches_float64_reference_per_channel_and_on_luma():
    rng = np.random.default_rng(1)
    target = ndimage.gaussian_filter(rng.uniform(0, 1, size=(2, 24, 30, 3)), (0, 1.5, 1.5, 0))
    pred = np.clip(target + rng.normal(0, 0.05, size=target.shape), 0, 1)
    expected = [np.mean([_ssim_reference(pred[t, ..., c], target[t, ..., c], 1.0) for c in range(3)])
                for t in range(2)]
    got = metrics.ssim(torch.from_numpy(pred).float(), torch.from_numpy(target).float(), reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6)  # float32 inputs
    weights = np.array([0.299, 0.587, 0.114])
    luma_expected = np.mean([_ssim_reference(pred[t] @ weights, target[t] @ weights, 1.0) for t in range(2)])
    assert metrics.ssim(pred, target, luminance=True) == pytest.approx(luma_expected, abs=1e-10)
    # uint8 range
    expected255 = _ssim_reference(pred[0, ..., 0] * 255, target[0, ..., 0] * 255, 255.0)
    assert metrics.ssim(pred[0, ..., :1] * 255, target[0, ..., :1] * 255, data_range=255.0) == pytest.approx(
        expected255, abs=1e-10)


def test_ssim_of_identical_images_is_one_and_chunking_changes_nothing(monkeypatch):
    x = torch.rand(3, 20, 20, 3, generator=torch.Generator().manual_seed(2))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    whole = metrics.ssim(x, 1 - x, reduction="none")
    assert whole.mean() < 0.5
    monkeypatch.setattr(image, "_SSIM_CHUNK_PIXELS", 20 * 20 * 3)  # one frame per block
    np.testing.assert_allclose(metrics.ssim(x, 1 - x, reduction="none").numpy(), whole.numpy(), rtol=1e-12)


# ------------------------------------------------------------------------------------------------ CPBD


def _blocky_image(seed: int, size: int = 128, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.uniform(low, high, size=(size // 8, size // 8))
    return np.kron(cells, np.ones((8, 8)))  # sharp steps every 8 pixels


def _blur8(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, quantised to 8 bits as a decoded frame would be (0..255 floats)."""
    return np.round(ndimage.gaussian_filter(x * 255.0, sigma) if sigma else x * 255.0)


def test_cpbd_scores_a_sharp_image_above_its_blurred_copies():
    sharp = _blocky_image(3)  # contrast > 50 per block: just-noticeable-blur width 3
    scores = [metrics.cpbd(_blur8(sharp, sigma), data_range=255.0) for sigma in (0, 0.5, 1.0, 2.0)]
    assert scores[0] > 0.9 and scores[0] > scores[1] > scores[2] >= scores[3] and scores[3] < 0.05
    # low contrast (<= 50 per block): JNB width 5, the same blur is less visible
    faint = _blocky_image(3, low=0.42, high=0.58)
    assert metrics.cpbd(_blur8(faint, 1.0), data_range=255.0) > scores[2] + 0.5
    # an RGB video pools its frames; float input with data_range 1 is the same image
    video = np.repeat(np.stack([sharp, sharp])[..., None], 3, axis=-1)
    assert metrics.cpbd(video) == pytest.approx(metrics.cpbd(sharp * 255.0, data_range=255.0))


def test_cpbd_of_flat_or_tiny_images_is_zero():
    assert metrics.cpbd(np.full((128, 128), 0.5)) == 0.0
    assert metrics.cpbd(np.zeros((2, 64, 64, 3))) == 0.0
    assert metrics.cpbd(_blocky_image(4, size=32)) == 0.0  # smaller than one 64 x 64 block


def test_edge_width_is_the_distance_between_the_extrema_around_the_edge():
    # a ramp from 0 (columns <= 5) to 40 (columns >= 9): the extrema sit at columns 5 and 9 -> width 4
    row = np.array([0, 0, 0, 0, 0, 0, 10, 20, 30, 40, 40, 40, 40, 40, 40, 40], dtype=np.float64)
    img = np.tile(row, (5, 1))
    edges = np.zeros(img.shape, dtype=bool)
    edges[2, 7] = True
    widths = image.edge_widths(img, edges)
    assert widths[2, 7] == 4.0 and np.count_nonzero(widths) == 1
    falling = image.edge_widths(img[:, ::-1].copy(), edges[:, ::-1].copy())
    assert falling[2, 8] == 4.0
    # a vertical gradient (angle 90) is not measured
    assert np.count_nonzero(image.edge_widths(img.T.copy(), edges.T.copy())) == 0


# ------------------------------------------------------------------------------------------------ landmarks


def _face(frames: int = 4) -> np.ndarray:
    """(T, 68, 2) landmarks with eye corners 36, 45 ten pixels apart."""
    marks = np.zeros((frames, 68, 2))
    marks[:, 36] = [0.0, 0.0]
    marks[:, 45] = [10.0, 0.0]
    return marks


def test_lmd_hand_computed():
    gt = _face()
    pred = gt.copy()
    pred[:, 48:68] += [3.0, 4.0]  # every mouth point 5 px off
    pred[:, :17] += [30.0, 40.0]  # the jaw 50 px off (ignored by the mouth LMD)
    assert metrics.lmd(pred, gt) == pytest.approx(5.0)
    assert metrics.lmd(torch.from_numpy(pred), torch.from_numpy(gt), normalize="face") == pytest.approx(0.5)
    assert metrics.lmd(pred, gt, normalize=10.0) == pytest.approx(0.5)
    assert metrics.lmd(pred, gt, mouth_only=False) == pytest.approx((20 * 5.0 + 17 * 50.0) / 68)
    with pytest.raises(ValueError, match="frames"):
        metrics.lmd(pred[:3], gt)


def test_mouth_opening_and_energy_correlation():
    rng = np.random.default_rng(5)
    energy = rng.uniform(0, 1, size=12)
    marks = _face(12)
    marks[:, 62] = [5.0, 0.0]
    marks[:, 66, 0] = 5.0
    marks[:, 66, 1] = 2.0 + 3.0 * energy  # opening = (2 + 3 e) / 10
    np.testing.assert_allclose(metrics.mouth_opening(marks), (2.0 + 3.0 * energy) / 10.0)
    assert metrics.mouth_energy_correlation(marks, energy) == pytest.approx(1.0)
    noisy = energy + rng.normal(0, 0.3, size=12)
    assert metrics.mouth_energy_correlation(noisy, energy) == pytest.approx(np.corrcoef(noisy, energy)[0, 1])
    assert metrics.mouth_energy_correlation(-energy, energy) == pytest.approx(-1.0)
    assert math.isnan(metrics.mouth_energy_correlation(np.ones(12), energy))
    with pytest.raises(ValueError, match="same fps"):
        metrics.mouth_energy_correlation(marks, energy[:10])


class _CosineExpert:
    """A stand-in lip expert: cosine of flattened windows."""

    def sync_probability(self, audio, mouth):
        return torch.nn.functional.cosine_similarity(audio.flatten(1), mouth.flatten(1), dim=1)


def test_lip_sync_confidence_finds_the_offset_and_matches_a_loop():
    rng = np.random.default_rng(6)
    frames, shift = 30, 2
    audio = rng.normal(size=(frames + shift, 8))
    mouth = audio[shift:] + 0.1 * rng.normal(size=(frames, 8))  # mouth i shows audio i + 2
    audio = audio[:frames]
    result = metrics.lip_sync_confidence(_CosineExpert(), torch.from_numpy(audio), torch.from_numpy(mouth),
                                         max_offset=4, batch_size=7)

    def cos(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    mean_distance = {}
    for offset in range(-4, 5):
        pairs = [1 - cos(audio[i + offset], mouth[i]) for i in range(frames) if 0 <= i + offset < frames]
        mean_distance[offset] = np.mean(pairs)
    values = np.array(list(mean_distance.values()))
    assert result["offset"] == shift
    assert result["distance"] == pytest.approx(values.min())
    assert result["confidence"] == pytest.approx(np.median(values) - values.min())
    assert result["cosine"] == pytest.approx(np.mean([cos(audio[i], mouth[i]) for i in range(frames)]))
    with pytest.raises(ValueError, match="same fps"):
        metrics.lip_sync_confidence(_CosineExpert(), torch.from_numpy(audio), torch.from_numpy(mouth[:-1]))


def test_diversity_is_mean_std_over_time():
    x = np.array([[0.0, 0.0], [2.0, 4.0]])
    assert metrics.diversity(x) == pytest.approx(1.5)
    marks = np.random.default_rng(7).normal(size=(9, 68, 2))
    assert metrics.diversity(marks) == pytest.approx(marks.reshape(9, -1).std(axis=0).mean())


# ------------------------------------------------------------------------------------------------ BAS


def _bailando_reference(joints: np.ndarray, music_beats: np.ndarray) -> float:
    """Bailando's calc_db + BA written as loops (velocity, Gaussian smoothing, strict minima)."""
    frames = joints.shape[0]
    velocity = np.array([np.mean([np.linalg.norm(joints[t + 1, j] - joints[t, j]) for j in range(joints.shape[1])])
                         for t in range(frames - 1)])
    smooth = gaussian_filter(velocity, 5)
    minima = [t for t in range(1, len(smooth) - 1) if smooth[t] < smooth[t - 1] and smooth[t] < smooth[t + 1]]
    beats = [b for b in music_beats if b < len(smooth)]
    return float(np.mean([math.exp(-min((m - b) ** 2 for m in minima) / 2 / 9) for b in beats]))


def test_beat_align_score_hand_computed_case():
    # speed 1 + cos(2 pi t / 20): velocity minima at frames 10, 30, 50, 70
    speed = 1.0 + np.cos(2 * np.pi * np.arange(80) / 20.0)
    position = np.concatenate([[0.0], np.cumsum(speed)])[:, None]  # (81, 1)
    np.testing.assert_array_equal(motion_metrics.motion_beats(position), [10, 30, 50, 70])
    # music beats 10, 33, 50 (and 85, past the motion: dropped); motion beat 70 matches no music beat and
    # costs nothing (the mean runs over music beats)
    expected = (1.0 + math.exp(-9 / 18) + 1.0) / 3
    assert metrics.beat_align_score(position, beat_frames=[10, 33, 50, 85]) == pytest.approx(expected)
    assert metrics.beat_align_score(position, beat_times=[0.4, 1.32, 2.0], fps=25.0) == pytest.approx(expected)
    assert math.isnan(metrics.beat_align_score(position, beat_frames=[90]))
    assert metrics.beat_align_score(np.zeros((20, 2)), beat_frames=[5]) == 0.0  # no motion beat
    with pytest.raises(ValueError, match="exactly one"):
        metrics.beat_align_score(position)
    with pytest.raises(ValueError, match="fps"):
        metrics.beat_align_score(position, beat_times=[0.4])


def test_beat_align_score_matches_bailando_loops_on_random_landmarks():
    rng = np.random.default_rng(8)
    landmarks = np.cumsum(rng.normal(size=(60, 68, 2)), axis=0)
    beats = np.array([3, 11, 19, 27, 35, 43, 51, 59])
    assert metrics.beat_align_score(torch.from_numpy(landmarks), beat_frames=beats) == pytest.approx(
        _bailando_reference(landmarks, beats))


def test_coefficient_error_groups():
    from singer_core.face.motion_types import SingerMotion

    gt = SingerMotion(exp=torch.zeros(4, 64), angle=torch.zeros(4, 3), trans=torch.zeros(4, 3), fps=25.0)
    pred = SingerMotion(exp=torch.full((4, 64), 0.5), angle=torch.zeros(4, 3),
                        trans=torch.tensor([[3.0, 4.0, 0.0]]).expand(4, 3), fps=25.0)
    l1 = metrics.coefficient_error(pred, gt)
    assert l1 == pytest.approx({"exp": 0.5, "angle": 0.0, "trans": 7.0 / 3})
    l2 = metrics.coefficient_error(pred, gt, kind="l2")
    assert l2 == pytest.approx({"exp": 0.5 * 8.0, "angle": 0.0, "trans": 5.0})
    with pytest.raises(ValueError, match="differs in shape"):
        metrics.coefficient_error({"exp": torch.zeros(3, 64)}, {"exp": torch.zeros(4, 64)})


# ------------------------------------------------------------------------------------------------ Fréchet / FVD


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(9)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, size=5), rng.uniform(0.1, 2, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # commuting covariances: one eigenbasis q
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    c1, c2 = q @ np.diag(s1) @ q.T, q @ np.diag(s2) @ q.T
    assert metrics.frechet_distance(torch.from_numpy(mu1), torch.from_numpy(c1), mu2, c2) == pytest.approx(
        expected, rel=1e-8)
    assert metrics.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="one D"):
        metrics.frechet_distance(mu1, c1, mu2[:4], c2[:4, :4])


class _MeanI3D(torch.nn.Module):
    """A tiny 'I3D': per clip, the mean of every channel of every frame (B, 3 * T) features."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224 or rescale or resize or not return_features:
            raise RuntimeError("unexpected I3D input")
        if bool(x.min() < -1.0) or bool(x.max() > 1.0):
            raise RuntimeError("I3D input outside [-1, 1]")
        return x.mean(dim=(3, 4)).flatten(1)


def test_fvd_with_a_scripted_model(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(_MeanI3D())
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(scripted, str(path))
    rng = np.random.default_rng(10)
    colours_a = rng.uniform(0, 1, size=(6, 10, 1, 1, 3))  # constant-colour frames: resizing keeps them exact
    colours_b = rng.uniform(0.2, 1, size=(5, 10, 1, 1, 3))
    videos_a = torch.from_numpy(np.broadcast_to(colours_a, (6, 10, 20, 24, 3)).copy()).float()
    videos_b = torch.from_numpy(np.broadcast_to(colours_b, (5, 10, 16, 16, 3)).copy()).float()
    features_a = (2 * colours_a[:, :, 0, 0, :] - 1).transpose(0, 2, 1).reshape(6, -1)  # (N, 3 * T) c-major
    features_b = (2 * colours_b[:, :, 0, 0, :] - 1).transpose(0, 2, 1).reshape(5, -1)
    expected = metrics.frechet_distance(features_a.mean(0), np.cov(features_a, rowvar=False),
                                        features_b.mean(0), np.cov(features_b, rowvar=False))
    calls = []
    got = metrics.fvd(videos_a, videos_b, path, batch_size=4, progress=lambda done, total: calls.append(done))
    assert got == pytest.approx(expected, rel=1e-4)
    assert calls[-1] == 11
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        metrics.fvd(videos_a, videos_b, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="at least 10"):
        metrics.fvd(videos_a[:, :5], videos_b, path)


def test_exports_not_covered_above_match_scipy_and_float64_loops():
    """pearson, kinetic_velocity, face_size and feature_statistics against scipy / plain float64 loops."""
    from scipy import stats

    rng = np.random.default_rng(11)
    a, b = rng.normal(size=40), rng.normal(size=40)
    b = b + 0.7 * a
    assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], rel=1e-12)
    assert metrics.pearson(torch.from_numpy(a), torch.from_numpy(-3 * a + 1)) == pytest.approx(-1.0)
    assert math.isnan(metrics.pearson(a, np.full(40, 2.0)))
    # kinetic velocity: mean over joints of the Euclidean step length
    motion = rng.normal(size=(9, 5, 3))
    expected = [sum(math.sqrt(sum((motion[t + 1, j, c] - motion[t, j, c]) ** 2 for c in range(3)))
                    for j in range(5)) / 5 for t in range(8)]
    np.testing.assert_allclose(metrics.kinetic_velocity(motion), expected, rtol=1e-12)
    flat = motion[:, 0]  # (T, D): one point in D dimensions
    np.testing.assert_allclose(metrics.kinetic_velocity(flat), np.linalg.norm(np.diff(flat, axis=0), axis=1))
    # face size: distance between the outer eye corners (iBUG points 36 and 45)
    marks = rng.uniform(0, 100, size=(4, 68, 2))
    expected = [math.hypot(*(marks[t, 45] - marks[t, 36])) for t in range(4)]
    np.testing.assert_allclose(metrics.face_size(torch.from_numpy(marks)), expected, rtol=1e-12)
    # feature statistics: mean and unbiased covariance by explicit sums
    features = rng.normal(size=(7, 3))
    mean, cov = metrics.feature_statistics(features)
    loop_mean = [sum(features[n, i] for n in range(7)) / 7 for i in range(3)]
    loop_cov = [[sum((features[n, i] - loop_mean[i]) * (features[n, j] - loop_mean[j]) for n in range(7)) / 6
                 for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(mean, loop_mean, rtol=1e-12)
    np.testing.assert_allclose(cov, loop_cov, rtol=1e-12)
    # every name of the one namespace is the function of its home module
    for name in metrics.__all__:
        home = next(module for module in (image, motion_metrics, fvd_module) if hasattr(module, name))
        assert getattr(metrics, name) is getattr(home, name), name
