"""The evaluation report (singer_core.eval.report): PIL charts put curves and bars where the axis mapping says,
the markdown table carries values computed independently (float64 numpy), missing inputs read "n/a (needs ...)",
and the onset beat estimate finds clicks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from singer_core.eval import report
from singer_core.face.motion_types import SingerMotion


def _box(width: int, height: int) -> tuple[int, int, int, int]:
    """The plot area; test_plot_area_is_where_a_full_range_series_runs checks it against drawn pixels."""
    return report.plot_area(width, height)


def _row(value: float, low: float, high: float, box) -> int:
    return int(round(box[3] - (value - low) / (high - low) * (box[3] - box[1])))


def _is(pixel, color) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(color)).max() <= 10)


@pytest.mark.parametrize("width,height", [(400, 200), (640, 240), (333, 151)])
def test_plot_area_is_where_a_full_range_series_runs(width, height):
    """A series from the bottom of y_range (first sample) to its top (last sample) is drawn from the plot area's
    bottom-left corner to its top-right one: the bounding box of its pixels (the largest blob of its colour; the
    legend swatch is separate) is plot_area() to within the line's width."""
    from scipy import ndimage

    image = report.line_chart({"rise": [0.0, 1.0]}, width=width, height=height, y_range=(0.0, 1.0))
    blobs, count = ndimage.label(np.abs(image.astype(int) - np.array(report.PALETTE[0])).max(-1) <= 10)
    sizes = ndimage.sum(np.ones_like(blobs), blobs, index=range(1, count + 1))
    rows, cols = ndimage.find_objects(blobs)[int(np.argmax(sizes))]
    x0, y0, x1, y1 = report.plot_area(width, height)
    assert abs(cols.start - x0) <= 1 and abs(cols.stop - 1 - x1) <= 1
    assert abs(rows.start - y0) <= 1 and abs(rows.stop - 1 - y1) <= 1
    assert 0 < x0 < x1 < width - 1 and 0 < y0 < y1 < height - 1


def test_line_chart_draws_curves_where_the_values_map():
    width, height = 400, 200
    image = report.line_chart({"flat": [0.5] * 10, "rise": [0.0, 1.0]}, width=width, height=height,
                              y_range=(0.0, 1.0))
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    box = _box(width, height)
    flat_row = _row(0.5, 0.0, 1.0, box)
    for x in range(box[0] + 3, box[2] - 3, 17):  # a flat series: one horizontal line of colour 0
        column = image[flat_row - 1:flat_row + 2, x]
        assert any(_is(pixel, report.PALETTE[0]) for pixel in column), x
    # the rising series runs from the bottom-left to the top-right corner: at a quarter of the width it is
    # at a quarter of the height
    x = int(round(box[0] + 0.25 * (box[2] - box[0])))
    row = _row(0.25, 0.0, 1.0, box)
    assert any(_is(pixel, report.PALETTE[1]) for pixel in image[row - 2:row + 3, x])
    # far from both curves the plot area is background or grid
    quiet = image[_row(0.9, 0.0, 1.0, box), box[0] + 10:box[0] + 40]
    assert not any(_is(pixel, report.PALETTE[0]) or _is(pixel, report.PALETTE[1]) for pixel in quiet)


def test_bar_chart_draws_bars_from_zero_to_the_value():
    width, height = 300, 220
    image = report.bar_chart({"up": 0.5, "down": -0.25}, width=width, height=height, y_range=(-1.0, 1.0))
    assert image.shape == (height, width, 3)
    box = _box(width, height)
    slot = (box[2] - box[0]) / 2
    centres = [int(round(box[0] + slot * (index + 0.5))) for index in range(2)]
    zero = _row(0.0, -1.0, 1.0, box)
    inside_up = (zero + _row(0.5, -1.0, 1.0, box)) // 2
    inside_down = (zero + _row(-0.25, -1.0, 1.0, box)) // 2
    assert _is(image[inside_up, centres[0]], report.PALETTE[0])
    assert _is(image[inside_down, centres[1]], report.PALETTE[1])
    assert not _is(image[_row(0.75, -1.0, 1.0, box), centres[0]], report.PALETTE[0])  # above the bar's top
    assert not _is(image[_row(-0.6, -1.0, 1.0, box), centres[1]], report.PALETTE[1])  # below the bar's bottom
    assert not _is(image[inside_up, centres[1]], report.PALETTE[1])  # the negative bar is not above zero


def _motion(seed: int, frames: int = 30) -> SingerMotion:
    generator = torch.Generator().manual_seed(seed)
    exp = torch.zeros(frames, 64)
    exp[:, 0] = torch.rand(frames, generator=generator)  # jaw_open
    return SingerMotion(exp=exp, angle=0.05 * torch.randn(frames, 3, generator=generator),
                        trans=0.01 * torch.randn(frames, 3, generator=generator), fps=25.0)


def test_table_values_match_independent_computations():
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(6, 24, 24, 3, generator=generator)
    frames = (truth + 0.05 * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
    motion, gt_motion = _motion(1), _motion(2)

    evaluation = report.evaluate_clip(frames, fps=25.0, ground_truth=truth, motion=motion, gt_motion=gt_motion)
    table = report.markdown_table(evaluation)

    a, b = frames.double().numpy(), truth.double().numpy()
    expected_psnr = np.mean([10 * math.log10(1.0 / np.mean((a[i] - b[i]) ** 2)) for i in range(len(a))])
    expected_exp = np.mean(np.abs(motion.exp.double().numpy() - gt_motion.exp.double().numpy()))
    assert f"| PSNR (dB) | {expected_psnr:.4f} |" in table
    assert f"| exp L1 | {expected_exp:.4f} |" in table
    assert evaluation.per_frame["psnr"].shape == (6,)
    image = report.evaluation_plot(evaluation, width=500, panel_height=150)
    assert image.shape == (300, 500, 3)


def test_identical_clip_gives_inf_psnr_ssim_one_and_na_rows():
    frames = torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(3))

    same = report.markdown_table(report.evaluate_clip(frames, fps=25.0, ground_truth=frames.clone()))
    alone = report.evaluate_clip(frames, fps=25.0)
    table = report.markdown_table(alone)

    assert "| PSNR (dB) | inf |" in same and "| SSIM | 1.0000 |" in same
    assert "| PSNR (dB) | n/a (needs ground_truth frames) |" in table
    assert "| LMD mouth (px) | n/a (needs motion and gt_motion) |" in table
    assert "| Beat Align Score | n/a (needs motion and audio) |" in table
    assert report.evaluation_plot(alone, width=320, panel_height=120).shape == (120, 320, 3)


def test_estimate_beat_frames_finds_clicks():
    rate, fps, frames = 16000, 25.0, 100
    waveform = torch.zeros(1, int(frames * rate / fps))
    clicks = [10, 30, 55, 80]
    for frame in clicks:  # a short noise burst starting in the middle of each click frame
        start = int((frame + 0.3) * rate / fps)
        waveform[0, start:start + 200] = torch.randn(200, generator=torch.Generator().manual_seed(frame))
    beats = report.estimate_beat_frames(waveform, rate, fps, frames)
    assert beats.tolist() == clicks


def test_evaluate_clip_refuses_bad_frames():
    with pytest.raises(ValueError, match="frames must be"):
        report.evaluate_clip(torch.rand(4, 3, 16, 16), fps=25.0)
