"""Motion metrics of talking / singing heads: landmark distance (LMD, Chen et al. 2019 "Hierarchical
cross-modal talking face generation"), mouth opening vs vocal energy, lip-sync confidence (a lip expert's
cosine and a SyncNet-style offset sweep, Chung & Zisserman 2016 / Wav2Lip's LSE-D, LSE-C), diversity
(FD2Talk / SadTalker), Bailando's Beat Align Score (Li et al. 2022, ``calc_ba_score``) and 3DMM
coefficient errors.

Arrays are torch tensors or numpy arrays; everything is computed in float64 numpy and returned as Python
floats (or dicts of them). Time is always the first axis.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

logger = logging.getLogger(__name__)

MOUTH = slice(48, 68)  # iBUG 68-point mouth: outer lip 48..59, inner lip 60..67
INNER_LIP_TOP, INNER_LIP_BOTTOM = 62, 66  # middle of the inner upper / lower lip
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 36, 45  # outer eye corners (face-size reference)
BA_SIGMA2 = 9.0  # Bailando: exp(-d^2 / (2 * 9)), d in frames
BA_SMOOTH_SIGMA = 5.0  # Bailando: scipy.ndimage.gaussian_filter(kinetic_velocity, 5)
COEFF_GROUPS = ("exp", "angle", "trans")


def _array(x, where: str, name: str) -> np.ndarray:
    """torch tensor / numpy array / sequence -> float64 numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {name} must be a numeric array, got {type(x).__name__} ({error})") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {name} contains NaN or infinite values")
    return array


def _landmarks(x, where: str, name: str) -> np.ndarray:
    array = _array(x, where, name)
    if array.ndim != 3 or array.shape[1] != 68 or array.shape[2] not in (2, 3) or array.shape[0] == 0:
        raise ValueError(f"{where}: {name} must be (T, 68, 2) or (T, 68, 3) iBUG landmarks with T >= 1, "
                         f"got shape {array.shape}")
    return array


def _same_frames(a: np.ndarray, b: np.ndarray, where: str, names: tuple[str, str]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{where}: {names[0]} has {a.shape[0]} frames but {names[1]} has {b.shape[0]}; they "
                         "must be aligned frame by frame (same fps and length: resample or trim one)")


def face_size(landmarks) -> np.ndarray:
    """(T, 68, 2|3) landmarks -> (T,) distance between the outer eye corners (points 36 and 45)."""
    array = _landmarks(landmarks, "face_size", "landmarks")
    return np.linalg.norm(array[:, EYE_OUTER_RIGHT] - array[:, EYE_OUTER_LEFT], axis=-1)


def lmd(pred_landmarks, gt_landmarks, *, mouth_only: bool = True, normalize=None) -> float:
    """Landmark distance: mean over frames and points of the Euclidean distance between predicted and
    ground-truth landmarks.

    Args:
        pred_landmarks: (T, 68, 2) (or 3) iBUG landmarks, pixels.
        gt_landmarks: the same shape.
        mouth_only: only the 20 mouth points 48..67 (the talking-head "M-LMD"); False: all 68.
        normalize: None (pixels), a number (every distance is divided by it, e.g. the image size), or
            "face" (divided by the ground truth's per-frame outer-eye-corner distance).

    Returns:
        The LMD as a float.
    """
    pred = _landmarks(pred_landmarks, "lmd", "pred_landmarks")
    gt = _landmarks(gt_landmarks, "lmd", "gt_landmarks")
    if pred.shape != gt.shape:
        _same_frames(pred, gt, "lmd", ("pred_landmarks", "gt_landmarks"))
        raise ValueError(f"lmd: pred_landmarks {pred.shape} and gt_landmarks {gt.shape} differ in shape")
    points = MOUTH if mouth_only else slice(0, 68)
    distance = np.linalg.norm(pred[:, points] - gt[:, points], axis=-1)  # (T, P)
    if normalize is None:
        pass
    elif isinstance(normalize, str):
        if normalize != "face":
            raise ValueError(f"lmd: normalize must be None, a number or 'face', got {normalize!r}")
        size = face_size(gt)
        if (size <= 0).any():
            raise ValueError("lmd: the ground truth has frames with coinciding eye corners; cannot normalise "
                             "by face size (use normalize=None or a number)")
        distance = distance / size[:, None]
    else:
        scale = float(normalize)
        if not scale > 0:
            raise ValueError(f"lmd: normalize must be positive, got {normalize!r}")
        distance = distance / scale
    return float(distance.mean())


def mouth_opening(landmarks) -> np.ndarray:
    """(T, 68, 2|3) landmarks -> (T,) float64 inner-lip opening |p62 - p66| / |p36 - p45|."""
    array = _landmarks(landmarks, "mouth_opening", "landmarks")
    size = face_size(array)
    if (size <= 0).any():
        raise ValueError("mouth_opening: some frames have coinciding eye corners (36, 45); the landmarks are "
                         "degenerate")
    return np.linalg.norm(array[:, INNER_LIP_TOP] - array[:, INNER_LIP_BOTTOM], axis=-1) / size


def pearson(a, b, where: str = "pearson") -> float:
    """Pearson correlation of two (T,) series; NaN (with a log line) when either is constant."""
    x, y = _array(a, where, "a").reshape(-1), _array(b, where, "b").reshape(-1)
    _same_frames(x, y, where, ("the first series", "the second"))
    if x.size < 2:
        raise ValueError(f"{where}: need at least 2 frames, got {x.size}")
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if denominator == 0.0:
        logger.info("%s: a series is constant; the correlation is undefined (NaN)", where)
        return float("nan")
    return float((x * y).sum() / denominator)


def mouth_energy_correlation(mouth, energy) -> float:
    """Pearson correlation between the mouth opening and the vocal energy over time.

    Args:
        mouth: (T, 68, 2|3) landmarks (-> :func:`mouth_opening`) or an opening series (T,).
        energy: (T,) vocal energy per video frame (e.g. RMS of the vocals over each frame).

    Returns:
        The correlation in [-1, 1]; NaN when either series is constant (a closed mouth, silence).
    """
    array = _array(mouth, "mouth_energy_correlation", "mouth")
    opening = mouth_opening(array) if array.ndim == 3 else array
    if opening.ndim != 1:
        raise ValueError(f"mouth_energy_correlation: mouth must be (T, 68, 2) landmarks or a (T,) opening, got "
                         f"shape {array.shape}")
    energy = _array(energy, "mouth_energy_correlation", "energy")
    if energy.ndim != 1:
        raise ValueError(f"mouth_energy_correlation: energy must be (T,), got shape {energy.shape}")
    _same_frames(opening, energy, "mouth_energy_correlation", ("mouth", "energy"))
    return pearson(opening, energy, "mouth_energy_correlation")


def lip_sync_confidence(expert, audio_windows, mouth_windows, *, max_offset: int = 5,
                        batch_size: int = 256) -> dict[str, float]:
    """Lip-sync scores of a lip expert (e.g. :class:`singer_core.motion.lip_expert.LipExpert`; any object
    with ``sync_probability(audio, mouth) -> (B,)`` cosine similarities works).

    With s(i, o) = expert.sync_probability(audio_windows[i + o], mouth_windows[i]) for every frame i whose
    shifted audio window exists, and the distance d(i, o) = 1 - s(i, o):

    - ``cosine``: mean over frames of s(i, 0), the expert's sync score at the true alignment;
    - ``distance`` (LSE-D style): min over offsets o in [-max_offset, max_offset] of D(o) = mean_i d(i, o);
    - ``confidence`` (LSE-C style): median over offsets of D(o) minus that minimum (SyncNet's ``conf``:
      how much the best offset stands out);
    - ``offset``: the minimising offset o* in frames (mouth window i matches audio window i + o*: positive
      means the mouth moves o* frames before the sound).

    SyncNet pads missing audio with zeros; here each D(o) averages only the frames where both windows
    exist. Distances are 1 - cosine of the expert's embeddings, not SyncNet's Euclidean distances, so the
    numbers are comparable between our models, not with published LSE values.

    Args:
        expert: the lip expert (put in eval mode by the caller; called under torch.no_grad()).
        audio_windows: (N, ...) the expert's audio input per frame (LipExpert: (N, W, A)).
        mouth_windows: (N, ...) the expert's mouth input per frame (LipExpert: (N, W, M, 3)).
        max_offset: largest shift in frames (SyncNet's vshift is 15 at 25 fps); at most N - 1.
        batch_size: pairs per expert call.

    Returns:
        dict with cosine, distance, confidence (floats) and offset (an int as float).
    """
    import torch

    if not hasattr(expert, "sync_probability"):
        raise ValueError(f"lip_sync_confidence: expert must have sync_probability(audio, mouth), got "
                         f"{type(expert).__name__}")
    audio = audio_windows if isinstance(audio_windows, torch.Tensor) else torch.as_tensor(audio_windows)
    mouth = mouth_windows if isinstance(mouth_windows, torch.Tensor) else torch.as_tensor(mouth_windows)
    frames = audio.shape[0]
    if mouth.shape[0] != frames:
        raise ValueError(f"lip_sync_confidence: {frames} audio windows but {mouth.shape[0]} mouth windows; "
                         "give one of each per video frame (same fps)")
    if frames < 2:
        raise ValueError(f"lip_sync_confidence: need at least 2 frames, got {frames}")
    if not 0 <= max_offset < frames:
        raise ValueError(f"lip_sync_confidence: max_offset must be in [0, {frames - 1}] for {frames} frames, "
                         f"got {max_offset}")
    offsets = list(range(-max_offset, max_offset + 1))
    mean_distance, cosine = [], None
    with torch.no_grad():
        for offset in offsets:
            first, stop = max(0, -offset), min(frames, frames - offset)
            scores = []
            for start in range(first, stop, batch_size):
                end = min(stop, start + batch_size)
                score = expert.sync_probability(audio[start + offset:end + offset], mouth[start:end])
                scores.append(torch.as_tensor(score).detach().double().cpu().reshape(-1))
            scores = torch.cat(scores)
            if scores.shape[0] != stop - first:
                raise RuntimeError(f"lip_sync_confidence: expert.sync_probability returned {scores.shape[0]} "
                                   f"scores for {stop - first} pairs; it must return one per pair (B,)")
            if offset == 0:
                cosine = float(scores.mean())
            mean_distance.append(float((1.0 - scores).mean()))
    distances = np.array(mean_distance)
    best = int(np.argmin(distances))
    return {"cosine": cosine, "distance": float(distances[best]),
            "confidence": float(np.median(distances) - distances[best]), "offset": float(offsets[best])}


def diversity(x) -> float:
    """Diversity of a motion: the mean over dimensions of the standard deviation over time (population,
    ddof=0), as FD2Talk / SadTalker report for head pose and landmarks.

    Args:
        x: (T, D) or (T, ...) (flattened to (T, D)), e.g. angles (T, 3) or landmarks (T, 68, 2).

    Returns:
        The diversity as a float.
    """
    array = _array(x, "diversity", "x")
    if array.ndim < 2 or array.shape[0] < 2:
        raise ValueError(f"diversity: x must be (T, D) with T >= 2 frames, got shape {array.shape}")
    return float(array.reshape(array.shape[0], -1).std(axis=0).mean())


def kinetic_velocity(motion) -> np.ndarray:
    """Bailando's kinetic velocity: (T, J, C) -> (T - 1,) mean over joints of |x[t + 1, j] - x[t, j]|.

    A (T, D) input is one point in D dimensions (J = 1).
    """
    array = _array(motion, "kinetic_velocity", "motion")
    if array.ndim == 2:
        array = array[:, None, :]
    if array.ndim != 3 or array.shape[0] < 3:
        raise ValueError(f"kinetic_velocity: motion must be (T, D) or (T, J, C) with T >= 3 frames, got shape "
                         f"{array.shape}")
    return np.linalg.norm(array[1:] - array[:-1], axis=2).mean(axis=1)


def motion_beats(motion, smooth_sigma: float = BA_SMOOTH_SIGMA) -> np.ndarray:
    """Bailando's motion beats: frame indices of the strict local minima (scipy.signal.argrelextrema with
    np.less) of the kinetic velocity smoothed by scipy.ndimage.gaussian_filter(velocity, smooth_sigma)."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import argrelextrema

    velocity = gaussian_filter(kinetic_velocity(motion), smooth_sigma)
    return argrelextrema(velocity, np.less)[0]


def beat_align_score(motion, beat_frames=None, fps: float | None = None, *, beat_times=None,
                     sigma2: float = BA_SIGMA2, smooth_sigma: float = BA_SMOOTH_SIGMA) -> float:
    """Beat Align Score, reproducing Bailando's ``calc_ba_score`` (utils/beat_align_score.py).

    1. kinetic velocity v[t] = mean_j |x[t + 1, j] - x[t, j]|, t = 0 .. T - 2 (T - 1 values);
    2. v is smoothed by a Gaussian of sigma 5 frames; motion beats = its strict local minima;
    3. music beats are kept when their frame index is < T - 1 (Bailando truncates the music's per-frame
       beat track to the velocity length);
    4. BAS = mean over MUSIC beats b of exp(-min_m (m - b)^2 / (2 sigma2)), m over motion beats, with
       sigma2 = 9 frames^2. The average runs over music beats (every music beat looks for its nearest
       motion beat), as in Bailando's ``BA(music_beats, motion_beats)``.

    Bailando runs at the dataset's frame rate (AIST++ 60 fps); sigma2 is in frames of THIS motion.

    Edge cases (where Bailando would fail): no music beat inside the motion -> NaN; no motion beat -> 0.0.

    Args:
        motion: (T, J, C) points (landmarks (T, 68, 2), joints) or (T, D) (one point in D dimensions).
        beat_frames: music beat frame indices (ints) of the motion's frames, or
        beat_times: music beat times in seconds (with fps; each becomes round(time * fps)).
        fps: frames per second of `motion` (needed with beat_times).
        sigma2: the Gaussian's variance in frames^2.
        smooth_sigma: the velocity smoothing in frames.

    Returns:
        The score in [0, 1] (a float).
    """
    if (beat_frames is None) == (beat_times is None):
        raise ValueError("beat_align_score: give exactly one of beat_frames (frame indices) or beat_times "
                         "(seconds, with fps)")
    if beat_times is not None:
        if fps is None or not fps > 0:
            raise ValueError(f"beat_align_score: beat_times need the motion's fps > 0, got fps={fps!r}")
        beats = np.rint(_array(beat_times, "beat_align_score", "beat_times").reshape(-1) * fps)
    else:
        beats = _array(beat_frames, "beat_align_score", "beat_frames").reshape(-1)
        if (beats != np.rint(beats)).any():
            raise ValueError("beat_align_score: beat_frames must be integer frame indices; pass times in "
                             "seconds as beat_times= with fps=")
    dance = motion_beats(motion, smooth_sigma)
    length = kinetic_velocity(motion).shape[0]
    music = beats[(beats >= 0) & (beats < length)]
    if music.size == 0:
        logger.info("beat_align_score: no music beat inside the %d-frame motion; the score is undefined", length)
        return float("nan")
    if dance.size == 0:
        return 0.0
    nearest = np.min((dance[None, :] - music[:, None]) ** 2, axis=1)
    return float(np.mean(np.exp(-nearest / (2.0 * sigma2))))


def _groups(value, where: str, name: str) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        source = value
    elif all(hasattr(value, group) for group in COEFF_GROUPS):
        source = {group: getattr(value, group) for group in COEFF_GROUPS}
    else:
        raise ValueError(f"{where}: {name} must be a SingerMotion or a mapping with {COEFF_GROUPS}, got "
                         f"{type(value).__name__}")
    return {group: _array(source[group], where, f"{name}.{group}") for group in source}


def coefficient_error(pred, gt, *, kind: str = "l1") -> dict[str, float]:
    """Error of 3DMM coefficients per group (exp, angle, trans).

    Args:
        pred: a SingerMotion or a mapping of group name -> (T, D) coefficients.
        gt: the same groups and shapes.
        kind: "l1" -> mean absolute error over frames and dimensions; "l2" -> mean over frames of the
            Euclidean norm of the group's difference vector.

    Returns:
        dict group -> error for every group both have (exp, angle, trans for SingerMotions).
    """
    if kind not in ("l1", "l2"):
        raise ValueError(f"coefficient_error: kind must be 'l1' or 'l2', got {kind!r}")
    pred_groups = _groups(pred, "coefficient_error", "pred")
    gt_groups = _groups(gt, "coefficient_error", "gt")
    shared = [group for group in pred_groups if group in gt_groups]
    if not shared:
        raise ValueError(f"coefficient_error: pred has {sorted(pred_groups)} and gt {sorted(gt_groups)}; "
                         "nothing to compare")
    out = {}
    for group in shared:
        a, b = pred_groups[group], gt_groups[group]
        if a.shape != b.shape:
            raise ValueError(f"coefficient_error: {group} differs in shape: pred {a.shape}, gt {b.shape} "
                             "(same frames at the same fps are needed)")
        difference = (a - b).reshape(a.shape[0], -1)
        out[group] = float(np.abs(difference).mean() if kind == "l1"
                           else np.linalg.norm(difference, axis=1).mean())
    return out
