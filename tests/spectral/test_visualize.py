"""Sub-band view: geometry, band placement, normalisation, log-mel front end, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from singer_core.audio.synth import sing
from singer_core.ops.wavelet import haar_dwt2
from singer_core.spectral.visualize import (
    SubbandViewConfig,
    audio_subband_image,
    log_mel_plane,
    subband_grid,
)

BACKGROUND = (24, 24, 24)  # the canvas colour between cells; no colormap used below takes this exact value


def _runs(mask: np.ndarray) -> list[slice]:
    """Maximal runs of True in a 1-D mask, as slices."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [slice(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2], strict=True)]


def _cell_boxes(image: np.ndarray) -> dict[tuple[int, int], tuple[slice, slice]]:
    """Pixel boxes of every (level, band) cell of an unlabelled grid, found in the image itself: the runs of
    rows and of columns that hold any pixel other than the background."""
    filled = np.any(image != np.array(BACKGROUND, dtype=np.uint8), axis=2)
    rows, cols = _runs(filled.any(axis=1)), _runs(filled.any(axis=0))
    return {(level, band): (rows[level], cols[band]) for level in range(len(rows)) for band in range(len(cols))}


def _colormap(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB: OpenCV's colormap, the one the docs name."""
    import cv2

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{name.upper()}"))[:, 0, ::-1]


def test_grid_matches_a_pywavelets_rendering():
    """Every cell against an independent rendering: PyWavelets' Haar bands per level, flipped (low rows at the
    bottom), upsampled by whole-number factors (np.repeat), the approximation min-max scaled and each detail band
    scaled to +-its 99.5th percentile of |coef|, through OpenCV's viridis table."""
    pywt = pytest.importorskip("pywt")
    plane = torch.randn(64, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    config = SubbandViewConfig(levels=3, cell_height=64, labels=False, colormap="viridis")
    image = subband_grid(plane, config)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    boxes = _cell_boxes(image)
    assert sorted(boxes) == [(level, band) for level in range(3) for band in range(4)]
    lut = _colormap("viridis")
    approximation = plane.numpy()
    for level in range(3):
        approximation, details = pywt.dwt2(approximation, "haar")
        for band, coefficients in enumerate([approximation, *details]):
            if band == 0:
                lo, hi = coefficients.min(), coefficients.max()
            else:
                hi = np.percentile(np.abs(coefficients), 99.5)
                lo = -hi
            unit = np.clip((coefficients[::-1] - lo) / (hi - lo), 0.0, 1.0)
            # cell 64 x 200 (width from the level-1 band's 32 x 100 aspect); bands halve per level
            unit = np.repeat(np.repeat(unit, 64 // unit.shape[0], axis=0), 200 // unit.shape[1], axis=1)
            expected = lut[np.round(unit * 255).astype(np.int64)]
            got = image[boxes[level, band]]
            assert got.shape == expected.shape == (64, 200, 3), (level, band)
            # float32 inside the view may round a pixel to the neighbouring table entry
            assert np.mean(np.all(got == expected, axis=2)) > 0.99, (level, band)
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 4, (level, band)


def test_labels_add_one_caption_strip_per_level_and_leave_the_cells():
    plane = torch.randn(64, 200, generator=torch.Generator().manual_seed(1))
    bare = subband_grid(plane, SubbandViewConfig(levels=3, cell_height=48, labels=False))
    labelled = subband_grid(plane, SubbandViewConfig(levels=3, cell_height=48, labels=True))
    assert labelled.shape[1] == bare.shape[1] and labelled.shape[0] > bare.shape[0]
    strip, remainder = divmod(labelled.shape[0] - bare.shape[0], 3)
    assert remainder == 0 and strip > 0
    for (level, _band), (rows, cols) in _cell_boxes(bare).items():
        assert rows.stop - rows.start == 48
        shifted = slice(rows.start + (level + 1) * strip, rows.stop + (level + 1) * strip)
        np.testing.assert_array_equal(labelled[shifted, cols], bare[rows, cols])
        caption = labelled[shifted.start - strip:shifted.start, cols]
        assert caption.max() > 200  # light caption text drawn in the strip above the cell


def test_horizontal_stripes_light_up_only_the_lh_cell():
    """Rows alternating +1/-1 have all their energy in LH (cH): the other detail cells of
    level 1 stay at the colour of zero, the LH cell shows the full range."""
    plane = -torch.ones(32, 32)
    plane[::2] = 1.0
    bands = haar_dwt2(plane)
    assert bands[1].abs().sum() > 0 and bands[2].abs().sum() == 0
    config = SubbandViewConfig(levels=1, colormap="gray", labels=False, cell_height=32, normalize="shared")
    image = subband_grid(plane, config)
    boxes = _cell_boxes(image)
    lh = image[boxes[0, 1]]
    hl = image[boxes[0, 2]]
    hh = image[boxes[0, 3]]
    assert lh.std() < 1 and abs(int(lh.mean()) - 255) <= 1  # constant +peak -> top of the gray ramp
    for cell in (hl, hh):
        assert cell.std() == 0 and abs(int(cell.mean()) - 128) <= 1  # zero -> middle grey


def test_singer_order_swaps_the_detail_columns():
    plane = -torch.ones(32, 32)
    plane[::2] = 1.0
    config = SubbandViewConfig(levels=1, colormap="gray", labels=False, cell_height=32, order="singer")
    image = subband_grid(plane, config)
    boxes = _cell_boxes(image)
    assert image[boxes[0, 2]].mean() > 250 and abs(image[boxes[0, 1]].mean() - 128) <= 1


def test_band_vs_shared_normalisation():
    plane = torch.zeros(32, 32)
    plane[::2] += 10.0  # strong horizontal detail
    plane[:, ::2] += 0.1 * torch.randn(32, 16)  # weak vertical detail
    band = SubbandViewConfig(levels=1, colormap="gray", labels=False, cell_height=32, normalize="band")
    shared = SubbandViewConfig(levels=1, colormap="gray", labels=False, cell_height=32, normalize="shared")
    per_band = subband_grid(plane, band)
    one_range = subband_grid(plane, shared)
    hl_band = per_band[_cell_boxes(per_band)[0, 2]].astype(float)
    hl_shared = one_range[_cell_boxes(one_range)[0, 2]].astype(float)
    assert hl_band.std() > 10 * hl_shared.std()  # per-band stretches the weak band, shared keeps it faint


def test_log_mel_plane_shape_and_range():
    song = sing(2.0, seed=3)
    plane = log_mel_plane(song.waveform, song.sample_rate, n_mels=64)
    assert plane.shape[0] == 64
    assert abs(plane.shape[1] - 2.0 / 0.0125) <= 2
    assert float(plane.max() - plane.min()) <= 80.0 + 1e-3
    stereo = torch.stack([song.waveform, song.waveform])
    torch.testing.assert_close(log_mel_plane(stereo, song.sample_rate, n_mels=64), plane)


def test_audio_subband_image_on_a_song_and_silence(caplog):
    song = sing(3.0, seed=4)
    image = audio_subband_image(song.waveform, song.sample_rate, SubbandViewConfig(levels=3))
    assert image.std() > 10
    silent = audio_subband_image(torch.zeros(48000), 48000, SubbandViewConfig(levels=2))
    assert "silent" in caplog.text
    assert silent.shape[2] == 3


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: subband_grid(torch.randn(3, 4, 5)), "2D tensor"),
        (lambda: subband_grid(torch.full((8, 8), float("nan"))), "NaN"),
        (lambda: subband_grid(torch.randn(8, 8), SubbandViewConfig(levels=4)), "at least 16 samples"),
        (lambda: log_mel_plane(torch.zeros(0), 16000), "empty"),
        (lambda: log_mel_plane(torch.full((100,), float("inf")), 16000), "NaN or infinite"),
        (lambda: log_mel_plane(torch.zeros(1000), 4000), "sample_rate"),
        (lambda: SubbandViewConfig(levels=0), "levels"),
        (lambda: SubbandViewConfig(colormap="rainbow"), "colormap"),
        (lambda: SubbandViewConfig(normalize="global"), "normalize"),
        (lambda: SubbandViewConfig.from_json('{"levels": 2, "colour": "red"}'), "unknown keys"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_config_json_round_trip():
    config = SubbandViewConfig(levels=4, colormap="magma", order="singer")
    assert SubbandViewConfig.from_json(config.to_json()) == config


def test_too_many_levels_for_a_short_clip_says_what_to_change():
    with pytest.raises(ValueError, match=r"0\.20 s clip gives 80 bins x 17 frames.*lower 'levels' to 4.*at least 0\.80 s"):
        audio_subband_image(sing(0.2, seed=1).waveform, 16000, SubbandViewConfig(levels=6))
    with pytest.raises(ValueError, match=r"raise 'n_mels' to at least 64"):
        audio_subband_image(sing(2.0, seed=1).waveform, 16000, SubbandViewConfig(levels=6), n_mels=32)


def test_feature_plane_is_width_by_time():
    """The MSM's d_a x l plane: row r of every frame becomes one column of the plane."""
    from singer_core.spectral.visualize import feature_plane

    features = torch.arange(5 * 3 * 4, dtype=torch.float32).reshape(5, 3, 4)  # (frames, rows, width)
    plane = feature_plane(features, row=1)
    assert plane.shape == (4, 5)
    for frame in range(5):
        for width in range(4):
            assert plane[width, frame] == features[frame, 1, width]
    torch.testing.assert_close(feature_plane(features, row=-1), features[:, 2].T)
    steps = feature_plane(features, row=None)  # rows laid out in time order
    assert steps.shape == (4, 15) and steps[2, 3 * 2 + 1] == features[2, 1, 2]
    with pytest.raises(ValueError, match="row 3 is out of range"):
        feature_plane(features, row=3)
    with pytest.raises(ValueError, match="frames, rows, width"):
        feature_plane(features[0])


def test_feature_subband_image_levels_and_error():
    from singer_core.spectral.visualize import feature_subband_image

    features = torch.randn(50, 2, 64)
    image = feature_subband_image(features, SubbandViewConfig(levels=2, cell_height=32))
    assert image.shape[0] == 2 * (14 + 32 + 2) + 2
    with pytest.raises(ValueError, match=r"lower 'levels' to 5.*at least 2.56 s"):
        feature_subband_image(features, SubbandViewConfig(levels=6), fps=25.0)
