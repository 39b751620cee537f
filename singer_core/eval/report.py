"""Evaluation report of one generated clip: every SINGER metric its inputs allow (PSNR, SSIM, CPBD, LMD,
coefficient errors, mouth-energy correlation, Beat Align Score, diversity), a markdown table, and a plot
drawn with PIL (per-frame PSNR / SSIM curves, or a bar chart of the bounded scores)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..progress import Progress

logger = logging.getLogger(__name__)

CPBD_MAX_FRAMES = 50  # CPBD runs on at most this many evenly spaced frames (it is slow; edges are pooled)
PSNR_PLOT_CAP = 60.0  # dB: infinite PSNR (identical frames) is drawn at this height
PLOT_MARGIN = (56, 28, 16, 30)  # left, top, right, bottom pixels around a panel's plot area
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127))  # series / bar colours (RGB), in order
BACKGROUND, AXIS, GRID, TEXT = (255, 255, 255), (40, 40, 40), (225, 225, 225), (20, 20, 20)
ONSET_MIN_GAP_S = 0.25  # estimate_beat_frames: onsets closer than this keep only the stronger one

# (key, label, better): the table's rows in order; better "low", "high" or "" (near the reference)
ROWS = (
    ("psnr", "PSNR (dB)", "high"),
    ("ssim", "SSIM", "high"),
    ("cpbd", "CPBD (sharpness)", "high"),
    ("lmd", "LMD mouth (px)", "low"),
    ("lmd_face", "LMD mouth / eye distance", "low"),
    ("exp_l1", "exp L1", "low"),
    ("angle_l1", "angle L1 (rad)", "low"),
    ("trans_l1", "trans L1", "low"),
    ("mouth_energy_corr", "mouth-energy correlation", "high"),
    ("beat_align", "Beat Align Score", "high"),
    ("diversity_pose", "diversity pose (deg)", ""),
    ("diversity_landmarks", "diversity landmarks (px)", ""),
)
BOUNDED = ("ssim", "cpbd", "mouth_energy_corr", "beat_align")  # scores in [-1, 1]: the bar chart's bars


@dataclasses.dataclass(frozen=True)
class ClipEvaluation:
    """Scores of one generated clip.

    Args:
        generated: metric key -> value for the generated clip (keys of ROWS).
        reference: metric key -> value of the same no-comparison metric on the reference (ground-truth
            frames / motion), where one was given.
        missing: metric key -> what input it needs ("ground_truth frames", ...), for every metric not computed.
        per_frame: "psnr" / "ssim" -> (T,) float64 per-frame values (only with ground-truth frames).
        notes: remarks on what was adapted (trimmed frames, resized ground truth, estimated beats).
    """

    generated: dict[str, float]
    reference: dict[str, float]
    missing: dict[str, str]
    per_frame: dict[str, np.ndarray]
    notes: tuple[str, ...] = ()


def _frames(x, where: str, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[-1] not in (3, 4) or x.shape[0] == 0:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{where}: {name} must be (T, H, W, 3) frames in 0..1, got {shape}")
    return x[..., :3].detach().float().cpu()


def _spread(count: int, limit: int) -> np.ndarray:
    """At most `limit` evenly spaced indices of range(count)."""
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(np.int64))


def estimate_beat_frames(waveform: torch.Tensor, sample_rate: int, fps: float, frames: int, *,
                         min_gap_s: float = ONSET_MIN_GAP_S) -> np.ndarray:
    """Music beats of a song as onset frames: peaks of the spectral flux at the video frame rate.

    Per video frame i the samples [i / fps, (i + 1) / fps) of the mono mix are Hann-windowed and their
    log-magnitude spectrum log(1 + |rfft|) is taken; flux[i] = sum of the positive increases over frame i - 1
    (flux[0] = 0). Onsets are the local maxima (flux[i] > flux[i - 1], flux[i] >= flux[i + 1]) above
    mean + 0.5 std of the flux; of two onsets closer than min_gap_s the weaker is dropped. This is an onset
    estimate (notes, drum hits), not a tempo tracker; give the real beat times when they are known.

    Args:
        waveform: (C, S) float audio.
        sample_rate: Hz.
        fps: video frames per second.
        frames: how many video frames to cover.
        min_gap_s: the smallest distance between two onsets in seconds.

    Returns:
        (K,) int64 frame indices, increasing.
    """
    if waveform.ndim != 2 or waveform.shape[-1] == 0:
        raise ValueError(f"estimate_beat_frames: waveform must be (C, S) audio, got {tuple(waveform.shape)}")
    if not (fps > 0 and sample_rate > 0 and frames >= 3):
        raise ValueError(f"estimate_beat_frames: need fps > 0, sample_rate > 0 and >= 3 frames, got fps={fps}, "
                         f"sample_rate={sample_rate}, frames={frames}")
    mono = waveform.detach().double().mean(0).cpu().numpy()
    edges = np.rint(np.arange(frames + 1) * sample_rate / fps).astype(np.int64)
    length = int(max(1, (edges[1:] - edges[:-1]).max()))
    n_fft = 1 << (length - 1).bit_length()
    spectra = np.zeros((frames, n_fft // 2 + 1))
    for index in range(frames):
        part = mono[edges[index]:edges[index + 1]]
        if part.size:
            spectra[index] = np.log1p(np.abs(np.fft.rfft(part * np.hanning(part.size), n_fft)))
    flux = np.zeros(frames)
    flux[1:] = np.clip(spectra[1:] - spectra[:-1], 0.0, None).sum(axis=1)
    threshold = flux.mean() + 0.5 * flux.std()
    padded = np.concatenate([[np.inf], flux, [-np.inf]])
    peaks = [i for i in range(frames) if flux[i] > threshold and flux[i] > padded[i] and flux[i] >= padded[i + 2]]
    gap = min_gap_s * fps
    kept: list[int] = []
    for index in sorted(peaks, key=lambda i: -flux[i]):
        if all(abs(index - other) >= gap for other in kept):
            kept.append(index)
    return np.array(sorted(kept), dtype=np.int64)


def _motion_landmarks(motion, identity: torch.Tensor, face_model, image_size: int) -> torch.Tensor:
    from .evaluate import project_landmarks

    return project_landmarks(face_model, identity, motion.exp.float(), motion.angle.float(), motion.trans.float(),
                             image_size)


def evaluate_clip(frames: torch.Tensor, *, fps: float, ground_truth: torch.Tensor | None = None, motion=None,
                  gt_motion=None, identity: torch.Tensor | None = None, waveform: torch.Tensor | None = None,
                  sample_rate: int | None = None, beat_times: Sequence[float] | None = None, face_model=None,
                  progress: Progress | None = None) -> ClipEvaluation:
    """Score a generated clip with every metric its inputs allow.

    - frames alone: CPBD (on at most CPBD_MAX_FRAMES evenly spaced frames);
    - + ground_truth frames: per-frame PSNR and SSIM (:mod:`.image`; the longer video is trimmed, a ground
      truth of another size is resized to the frames' size, bilinear with antialiasing, and a note says so);
    - motion: its 68 landmarks are projected (:func:`.evaluate.project_landmarks`, the SynthSinger camera,
      image size = the frames' height) with `identity` (default: the mean face, zeros); diversity of pose
      (degrees) and landmarks;
    - + gt_motion (same fps): mouth LMD (px and per eye distance) and exp / angle / trans L1 errors;
    - + audio: mouth-energy correlation with the per-frame RMS (:func:`.evaluate.frame_energy`) and Bailando's
      Beat Align Score against `beat_times` or, without them, :func:`estimate_beat_frames`.

    No-comparison metrics (CPBD, mouth-energy, BAS, diversity) are also computed for the reference
    (ground-truth frames / gt_motion) when given.

    Args:
        frames: (T, H, W, 3) generated frames in 0..1.
        fps: their frame rate.
        ground_truth: optional (T', H', W', 3) ground-truth frames in 0..1.
        motion: optional SingerMotion of the generated clip; gt_motion: optional ground-truth SingerMotion.
        identity: optional (80,) identity coefficients for the landmark projection.
        waveform: optional (C, S) audio of the song (ideally the vocals); sample_rate: its rate in Hz.
        beat_times: optional music beat times in seconds (SynthSinger's beat track).
        face_model: the MorphableModel (default procedural_model(seed=0), SynthSinger's).
        progress: optional (done, total) callback over the metric groups; may raise to stop.

    Returns:
        a :class:`ClipEvaluation`.
    """
    from . import image
    from . import motion as motion_metrics
    from .evaluate import frame_energy

    who = "evaluate_clip"
    frames = _frames(frames, who, "frames")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"{who}: fps must be a positive number, got {fps!r}")
    if waveform is not None and (sample_rate is None or sample_rate <= 0):
        raise ValueError(f"{who}: waveform given without a positive sample_rate")
    generated: dict[str, float] = {}
    reference: dict[str, float] = {}
    missing: dict[str, str] = {}
    per_frame: dict[str, np.ndarray] = {}
    notes: list[str] = []
    total, done = 4, 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # 1. sharpness of the generated (and ground-truth) frames
    generated["cpbd"] = image.cpbd(frames[_spread(frames.shape[0], CPBD_MAX_FRAMES)])
    if ground_truth is not None:
        truth = _frames(ground_truth, who, "ground_truth")
        reference["cpbd"] = image.cpbd(truth[_spread(truth.shape[0], CPBD_MAX_FRAMES)])
    step()

    # 2. full-reference image metrics
    if ground_truth is None:
        missing["psnr"] = missing["ssim"] = "ground_truth frames"
    else:
        count = min(frames.shape[0], truth.shape[0])
        if frames.shape[0] != truth.shape[0]:
            notes.append(f"PSNR/SSIM on the first {count} frames (generated {frames.shape[0]}, "
                         f"ground truth {truth.shape[0]})")
        pred, truth = frames[:count], truth[:count]
        if pred.shape[1:3] != truth.shape[1:3]:
            notes.append(f"ground truth resized from {truth.shape[2]}x{truth.shape[1]} to "
                         f"{pred.shape[2]}x{pred.shape[1]} for PSNR/SSIM")
            truth = torch.nn.functional.interpolate(truth.permute(0, 3, 1, 2), size=tuple(pred.shape[1:3]),
                                                    mode="bilinear", align_corners=False, antialias=True)
            truth = truth.clamp(0, 1).permute(0, 2, 3, 1)
        per_frame["psnr"] = image.psnr(pred, truth, reduction="none").numpy()
        per_frame["ssim"] = image.ssim(pred, truth, reduction="none").numpy()
        generated["psnr"], generated["ssim"] = float(per_frame["psnr"].mean()), float(per_frame["ssim"].mean())
    step()

    # 3. motion metrics from projected landmarks
    motion_keys = ("lmd", "lmd_face", "exp_l1", "angle_l1", "trans_l1", "mouth_energy_corr", "beat_align",
                   "diversity_pose", "diversity_landmarks")
    if motion is None:
        for key in motion_keys:
            missing[key] = "motion" if key.startswith("diversity") else (
                "motion and gt_motion" if key in motion_keys[:5] else "motion and audio")
        step()
        step()
        return ClipEvaluation(generated, reference, missing, per_frame, tuple(notes))
    if face_model is None:
        from ..face.procedural import procedural_model

        face_model = procedural_model(seed=0)
    identity = torch.zeros(80) if identity is None else identity.detach().float().cpu().reshape(-1)
    size = int(frames.shape[1])
    motions = {"generated": motion} | ({"reference": gt_motion} if gt_motion is not None else {})
    landmarks = {name: _motion_landmarks(item, identity, face_model, size) for name, item in motions.items()}
    for name, item in motions.items():
        scores = generated if name == "generated" else reference
        scores["diversity_pose"] = motion_metrics.diversity(torch.rad2deg(item.angle.double()))
        scores["diversity_landmarks"] = motion_metrics.diversity(landmarks[name])
    if gt_motion is None:
        for key in motion_keys[:5]:
            missing[key] = "gt_motion"
    elif abs(motion.fps - gt_motion.fps) > 1e-6:
        for key in motion_keys[:5]:
            missing[key] = f"motions of one fps (generated {motion.fps:g}, ground truth {gt_motion.fps:g})"
    else:
        count = min(motion.frames, gt_motion.frames)
        if motion.frames != gt_motion.frames:
            notes.append(f"LMD / coefficient errors on the first {count} motion frames (generated "
                         f"{motion.frames}, ground truth {gt_motion.frames})")
        pred, truth = landmarks["generated"][:count], landmarks["reference"][:count]
        generated["lmd"] = motion_metrics.lmd(pred, truth)
        generated["lmd_face"] = motion_metrics.lmd(pred, truth, normalize="face")
        errors = motion_metrics.coefficient_error(
            {group: getattr(motion, group)[:count] for group in ("exp", "angle", "trans")},
            {group: getattr(gt_motion, group)[:count] for group in ("exp", "angle", "trans")})
        generated |= {f"{group}_l1": value for group, value in errors.items()}
    step()

    # 4. audio-driven metrics
    if waveform is None and beat_times is None:
        missing["mouth_energy_corr"] = missing["beat_align"] = "motion and audio"
    for name, item in motions.items():
        scores = generated if name == "generated" else reference
        if waveform is not None:
            energy = frame_energy(waveform.detach().float().cpu(), sample_rate, item.fps, item.frames)
            scores["mouth_energy_corr"] = motion_metrics.mouth_energy_correlation(landmarks[name], energy)
        elif name == "generated":
            missing["mouth_energy_corr"] = "motion and audio"
        if item.frames < 3:
            if name == "generated":
                missing["beat_align"] = "at least 3 motion frames"
            continue
        if beat_times is not None:
            scores["beat_align"] = motion_metrics.beat_align_score(landmarks[name], beat_times=list(beat_times),
                                                                   fps=item.fps)
        elif waveform is not None:
            beats = estimate_beat_frames(waveform.detach().float().cpu(), sample_rate, item.fps, item.frames)
            if name == "generated":
                notes.append(f"beats estimated from audio onsets ({beats.size} in {item.frames} frames)")
            scores["beat_align"] = motion_metrics.beat_align_score(landmarks[name], beat_frames=beats)
    step()
    return ClipEvaluation(generated, reference, missing, per_frame, tuple(notes))


# ---------------------------------------------------------------------------------------------------------
# table


def format_value(value: float | None) -> str:
    """A score as table text: 4 decimals, "inf" / "-inf" / "nan", "-" for None."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def markdown_table(evaluation: ClipEvaluation, title: str | None = None) -> str:
    """The evaluation as a markdown table: metric | generated | reference | better, then the notes.

    A metric that could not be computed shows "n/a (needs ...)" in the generated column.
    """
    lines = [f"**{title}**", ""] if title else []
    lines += ["| metric | generated | reference | better |", "|---|---:|---:|---|"]
    for key, label, better in ROWS:
        hint = {"low": "lower", "high": "higher", "": "near reference"}[better]
        if key in evaluation.generated:
            value = format_value(evaluation.generated[key])
        else:
            value = f"n/a (needs {evaluation.missing.get(key, 'more inputs')})"
        lines.append(f"| {label} | {value} | {format_value(evaluation.reference.get(key))} | {hint} |")
    if evaluation.notes:
        lines += [""] + [f"- {note}" for note in evaluation.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# plots (PIL, no matplotlib)


def plot_area(width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel box of a panel's plot area (inclusive corners) for PLOT_MARGIN."""
    left, top, right, bottom = PLOT_MARGIN
    if width - left - right < 8 or height - top - bottom < 8:
        raise ValueError(f"plot: a {width}x{height} panel is too small (margins {PLOT_MARGIN})")
    return left, top, width - 1 - right, height - 1 - bottom


def value_to_y(value: float, y_range: tuple[float, float], box: tuple[int, int, int, int]) -> int:
    """Pixel row of `value`: y1 at y_range[0], y0 at y_range[1], linear, clipped to the box."""
    low, high = y_range
    share = (min(max(value, low), high) - low) / (high - low)
    return int(round(box[3] - share * (box[3] - box[1])))


def _canvas(width: int, height: int, title: str, y_range: tuple[float, float]):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    box = plot_area(width, height)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = y_range[0] + share * (y_range[1] - y_range[0])
        y = value_to_y(value, y_range, box)
        draw.line([(box[0], y), (box[2], y)], fill=GRID)
        draw.text((4, y - 6), f"{value:.3g}", fill=TEXT)
    draw.rectangle(box, outline=AXIS)
    draw.text((box[0], 6), title, fill=TEXT)
    return image, draw, box


def line_chart(series: Mapping[str, Sequence[float]], *, width: int = 640, height: int = 240, title: str = "",
               y_range: tuple[float, float] | None = None, x_label: str = "frame") -> np.ndarray:
    """Curves over frames.

    Series i is drawn in PALETTE[i] as a 2-px polyline through (x_t, value_to_y(v_t)), x_t = x0 + t (x1 - x0) /
    (T - 1) (a single value: a dot at the centre); non-finite values are clipped to the range.

    Args:
        series: name -> (T,) values (each may have its own T).
        width, height: panel size in pixels.
        title: text at the top left (the legend follows it).
        y_range: (low, high); default the finite min / max of all series (widened when equal).
        x_label: text under the x axis.

    Returns:
        (height, width, 3) uint8 RGB.
    """
    arrays = {name: np.asarray(values, dtype=np.float64).reshape(-1) for name, values in series.items()}
    if not arrays or any(array.size == 0 for array in arrays.values()):
        raise ValueError("line_chart: give at least one non-empty series")
    if y_range is None:
        finite = np.concatenate([array[np.isfinite(array)] for array in arrays.values()])
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        y_range = (low - 0.5, high + 0.5) if high - low < 1e-12 else (low, high)
    if not y_range[1] > y_range[0]:
        raise ValueError(f"line_chart: y_range must be (low, high) with high > low, got {y_range}")
    image, draw, box = _canvas(width, height, title, y_range)
    legend_x = box[0] + 8 + 7 * len(title)
    for index, (name, array) in enumerate(arrays.items()):
        color = PALETTE[index % len(PALETTE)]
        values = np.nan_to_num(array, nan=y_range[0], posinf=y_range[1], neginf=y_range[0])
        count = values.size
        xs = [box[0] + (box[2] - box[0]) * (t / (count - 1) if count > 1 else 0.5) for t in range(count)]
        points = [(int(round(x)), value_to_y(v, y_range, box)) for x, v in zip(xs, values, strict=True)]
        if count == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        else:
            draw.line(points, fill=color, width=2)
        draw.rectangle([legend_x, 8, legend_x + 10, 16], fill=color)
        draw.text((legend_x + 14, 6), name, fill=TEXT)
        legend_x += 24 + 7 * len(name)
    draw.text((box[0], box[3] + 8), f"{x_label} 0", fill=TEXT)
    last = max(array.size for array in arrays.values()) - 1
    draw.text((box[2] - 7 * len(str(last)), box[3] + 8), str(last), fill=TEXT)
    return np.asarray(image, dtype=np.uint8).copy()


def bar_geometry(count: int, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """(left, right) pixel columns of `count` bars in a plot box: equal slots, each bar the middle 60 %."""
    slot = (box[2] - box[0]) / count
    return [(int(round(box[0] + slot * (i + 0.2))), int(round(box[0] + slot * (i + 0.8)))) for i in range(count)]


def bar_chart(values: Mapping[str, float], *, width: int = 640, height: int = 240, title: str = "",
              y_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Bars from 0 (clipped to the range) to each value, bar i in PALETTE[i] at bar_geometry's columns;
    a NaN value draws no bar and is labelled "nan". Labels under the bars, values above them.

    Args:
        values: label -> value.
        width, height: panel size in pixels.
        title: text at the top left.
        y_range: (low, high) of the axis.

    Returns:
        (height, width, 3) uint8 RGB.
    """
    if not values:
        raise ValueError("bar_chart: give at least one value")
    if not y_range[1] > y_range[0]:
        raise ValueError(f"bar_chart: y_range must be (low, high) with high > low, got {y_range}")
    image, draw, box = _canvas(width, height, title, y_range)
    base = value_to_y(min(max(0.0, y_range[0]), y_range[1]), y_range, box)
    draw.line([(box[0], base), (box[2], base)], fill=AXIS)
    for index, ((label, value), (left, right)) in enumerate(zip(values.items(), bar_geometry(len(values), box),
                                                                strict=True)):
        text = format_value(value)
        if math.isfinite(value) or math.isinf(value):
            top = value_to_y(value, y_range, box)
            draw.rectangle([left, min(top, base), right, max(top, base)], fill=PALETTE[index % len(PALETTE)])
            draw.text((left, min(top, base) - 12 if min(top, base) - 12 > box[1] else box[1] + 2), text, fill=TEXT)
        else:
            draw.text((left, base - 12), text, fill=TEXT)
        draw.text((left, box[3] + 8), label[: max(1, (right - left) // 6 + 4)], fill=TEXT)
    return np.asarray(image, dtype=np.uint8).copy()


def evaluation_plot(evaluation: ClipEvaluation, *, width: int = 640, panel_height: int = 220) -> np.ndarray:
    """The evaluation's picture: with per-frame PSNR / SSIM, a PSNR panel (infinite values drawn at
    PSNR_PLOT_CAP dB) above an SSIM panel (range 0..1, or down to the minimum when lower); otherwise one
    bar chart of the bounded scores (BOUNDED keys the clip has; "no bounded score" text when none).

    Returns:
        (H, width, 3) uint8 RGB; H = 2 panel_height with curves, panel_height otherwise.
    """
    if "psnr" in evaluation.per_frame:
        psnr_values = np.minimum(evaluation.per_frame["psnr"], PSNR_PLOT_CAP)
        finite = psnr_values[np.isfinite(psnr_values)]
        low = float(np.floor(finite.min() / 5.0) * 5.0) if finite.size else 0.0
        low = min(low, PSNR_PLOT_CAP - 5.0)
        top = line_chart({"PSNR dB per frame": psnr_values}, width=width, height=panel_height,
                         title="PSNR", y_range=(low, PSNR_PLOT_CAP))
        ssim_values = evaluation.per_frame["ssim"]
        floor = min(0.0, float(np.floor(np.nanmin(ssim_values) * 10.0) / 10.0))
        bottom = line_chart({"SSIM per frame": ssim_values}, width=width, height=panel_height, title="SSIM",
                            y_range=(floor, 1.0))
        return np.concatenate([top, bottom], axis=0)
    labels = {key: label for key, label, _ in ROWS}
    values = {labels[key]: evaluation.generated[key] for key in BOUNDED if key in evaluation.generated}
    if not values:
        values = {"no bounded score": float("nan")}
    return bar_chart(values, width=width, height=panel_height, title="scores of the generated clip")
