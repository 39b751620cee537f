"""Evaluation of a motion generator (FD2Talk stage 1) on the test split of a SINGER clip dataset: LMD,
mouth-energy correlation, lip-expert sync, diversity, Beat Align Score and coefficient errors, for the
model and, as the reference row, the dataset's ground truth."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..audio.features import check_features
from ..progress import Progress
from . import motion as metrics

logger = logging.getLogger(__name__)

# (key, label, better) of the table rows; better: "low", "high" or "" (closer to ground truth)
MOTION_ROWS = (
    ("lmd", "LMD mouth (px)", "low"),
    ("lmd_face", "LMD mouth / eye distance", "low"),
    ("mouth_energy_corr", "mouth-energy correlation", "high"),
    ("sync_cosine", "lip-expert sync cosine", "high"),
    ("sync_distance", "sync distance (LSE-D style)", "low"),
    ("sync_confidence", "sync confidence (LSE-C style)", "high"),
    ("sync_offset", "sync best offset (frames)", ""),
    ("diversity_pose", "diversity pose (deg)", ""),
    ("diversity_landmarks", "diversity landmarks (px)", ""),
    ("beat_align", "Beat Align Score", "high"),
    ("exp_l1", "exp L1", "low"),
    ("angle_l1", "angle L1 (rad)", "low"),
    ("trans_l1", "trans L1", "low"),
)


def project_landmarks(face_model, identity: torch.Tensor, exp: torch.Tensor, angle: torch.Tensor,
                      trans: torch.Tensor, image_size: int, camera=None) -> torch.Tensor:
    """The 68 landmarks of a posed face in pixels (what render_coeffs reports, without rasterising).

    Args:
        face_model: the MorphableModel (SynthSinger: procedural_model(seed=0)).
        identity: (80,) id coefficients.
        exp: (T, 64); angle: (T, 3) radians; trans: (T, 3).
        image_size: frame size S in pixels.
        camera: the Camera (default Camera()).

    Returns:
        (T, 68, 2) float32 pixels (x right, y down).
    """
    from ..face.morphable import project, transform

    dtype, device = face_model.dtype, face_model.device
    frames = exp.shape[0]
    shape = face_model.vertices(identity.to(device, dtype).reshape(1, -1).expand(frames, -1),
                                exp.to(device, dtype))
    world = transform(shape[:, face_model.landmarks68.to(device)], angle.to(device, dtype),
                      trans.to(device, dtype))
    pixels, _ = project(world, camera, image_size)
    return pixels.float().cpu()


def frame_energy(waveform: torch.Tensor, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """(C, S) audio -> (frames,) RMS of the mono mix over each video frame [i / fps, (i + 1) / fps)."""
    mono = waveform.double().mean(0).numpy()
    edges = np.rint(np.arange(frames + 1) * sample_rate / fps).astype(np.int64)
    energy = np.zeros(frames)
    for index in range(frames):
        part = mono[edges[index]:edges[index + 1]]
        energy[index] = math.sqrt(float(np.mean(part * part))) if part.size else 0.0
    return energy


def sync_windows(audio: torch.Tensor, mouth: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame sequences -> overlapping windows starting at every frame that has a full window.

    Args:
        audio: (F, A) per-frame audio vectors.
        mouth: (F, M, 3) per-frame mouth displacements.
        window: W frames.

    Returns:
        audio windows (F - W + 1, W, A) and mouth windows (F - W + 1, W, M, 3).
    """
    if audio.shape[0] != mouth.shape[0]:
        raise ValueError(f"sync_windows: {audio.shape[0]} audio frames but {mouth.shape[0]} mouth frames")
    if audio.shape[0] < window:
        raise ValueError(f"sync_windows: {audio.shape[0]} frames are fewer than one {window}-frame window")
    return (audio.unfold(0, window, 1).movedim(-1, 1).contiguous(),
            mouth.unfold(0, window, 1).movedim(-1, 1).contiguous())


class _LipSync:
    """Lip-expert scoring of one motion (windows built the way the expert was trained)."""

    def __init__(self, expert, face_model, max_offset: int):
        from ..motion.lip_expert import mouth_vertex_indices

        self.expert, self.face_model, self.max_offset = expert, face_model, max_offset
        self.indices = mouth_vertex_indices(face_model, count=expert.config.mouth_vertices)

    def __call__(self, features, exp: torch.Tensor) -> dict[str, float]:
        from ..motion.generator import reduce_audio_rows
        from ..motion.lip_expert import mouth_motion

        config = self.expert.config
        check_features(features, "evaluate_motion", model="the lip expert", encoder=config.audio_encoder)
        parameter = next(self.expert.parameters())
        audio = reduce_audio_rows(features.features, config.audio_reduce)
        mouth = mouth_motion(self.face_model, exp.to(self.face_model.dtype), self.indices)
        audio, mouth = sync_windows(audio, mouth, config.window)
        offset = min(self.max_offset, audio.shape[0] - 1)
        scores = metrics.lip_sync_confidence(self.expert, audio.to(parameter.device, parameter.dtype),
                                             mouth.to(parameter.device, parameter.dtype), max_offset=offset)
        return {f"sync_{name}": value for name, value in scores.items()}


def _clip_scores(pred, gt: dict, gt_landmarks: torch.Tensor, pred_landmarks: torch.Tensor,
                 energy: np.ndarray, beats, has_coeffs: bool) -> dict[str, float]:
    scores = {
        "mouth_energy_corr": metrics.mouth_energy_correlation(pred_landmarks, energy),
        "diversity_pose": metrics.diversity(torch.rad2deg(pred["angle"])),
        "diversity_landmarks": metrics.diversity(pred_landmarks),
        "beat_align": (metrics.beat_align_score(pred_landmarks, beat_frames=beats) if beats is not None
                       else float("nan")),
    }
    if gt_landmarks is not None:
        scores["lmd"] = metrics.lmd(pred_landmarks, gt_landmarks)
        scores["lmd_face"] = metrics.lmd(pred_landmarks, gt_landmarks, normalize="face")
    if has_coeffs:
        errors = metrics.coefficient_error(pred, gt, kind="l1")
        scores |= {f"{group}_l1": value for group, value in errors.items()}
    return scores


def evaluate_motion(model, data_dir, *, split: str = "test", steps: int = 50, eta: float = 0.0, seed: int = 0,
                    lip_expert=None, max_clips: int | None = None, encoder=None, face_model=None,
                    max_offset: int = 5, progress: Progress | None = None) -> dict:
    """Generate a motion for every clip of a split and score it against the clip's ground truth.

    Per clip: audio.wav is encoded with `encoder` (default: the weight-free MelEncoder when the model was
    trained on "mel-80"), ``model.generate(features, steps=, eta=, seed=)`` gives the motion, whose 68
    landmarks are projected with the clip's identity (coeffs id) through the face model and camera the
    SynthSinger renderer uses. Scores (means over clips; NaN-valued clip scores are left out of a mean):

    - lmd: mouth LMD in pixels against the clip's landmarks; lmd_face: divided by the eye-corner distance;
    - mouth_energy_corr: Pearson of the inner-lip opening with the per-frame RMS of vocals.wav (audio.wav
      without one);
    - sync_cosine / sync_distance / sync_confidence / sync_offset: :func:`.motion.lip_sync_confidence` of
      `lip_expert` on 5-frame windows (only with a lip expert);
    - diversity_pose: diversity of the angles in degrees; diversity_landmarks: of the 68 landmarks (px);
    - beat_align: Bailando's BAS of the projected landmarks against meta.extra["beat_frames"];
    - exp_l1, angle_l1, trans_l1: coefficient L1 errors.

    The same scores of the ground-truth motion (where they do not compare it with itself) form the
    reference: model vs ground truth.

    Args:
        model: a MotionModel (or anything with ``generate(features, *, steps, eta, seed) -> SingerMotion`` and
            ``config.audio_encoder``); put on its device by the caller.
        data_dir: a SINGER dataset folder (index.json).
        split: "test", "train" or "all".
        steps: DDIM steps. eta: DDIM eta. seed: sampling seed (the same for every clip).
        lip_expert: optional LipExpert (eval mode is set here) for the sync scores.
        max_clips: evaluate only the first N clips of the split.
        encoder: the audio encoder (``encode(waveform, sample_rate, fps) -> SingerAudioFeatures``); default
            MelEncoder for "mel-80" models, required otherwise.
        face_model: the MorphableModel the clips were made with (default procedural_model(seed=0)).
        max_offset: offset sweep of the sync confidence in frames.
        progress: progress(clips done, clips) after each clip; may raise to stop.

    Returns:
        dict: "model" and "ground_truth" (metric -> mean over clips), "clips" (count), "split", "steps",
        "per_clip" (list of {"clip_id", "model": {...}, "ground_truth": {...}}).
    """
    from ..data.format import read_clip, read_index
    from ..face.procedural import procedural_model

    index = read_index(data_dir)
    clip_ids = index.split(split)
    if max_clips is not None:
        clip_ids = clip_ids[:max_clips]
    if not clip_ids:
        raise ValueError(f"evaluate_motion: the '{split}' split of '{data_dir}' has no clips; generate more clips "
                         "(a test split needs at least 5 identities at test_fraction 0.2) or use split='all'")
    if encoder is None:
        wanted = getattr(model.config, "audio_encoder", MEL_ENCODER_NAME)
        if wanted != MEL_ENCODER_NAME:
            raise ValueError(f"evaluate_motion: the model expects '{wanted}' audio features; pass encoder= "
                             "(load it with singer_core.audio.encoder_loading)")
        from ..audio.encoders import MelEncoder

        encoder = MelEncoder()
    face_model = procedural_model(seed=0) if face_model is None else face_model
    sync = None
    if lip_expert is not None:
        lip_expert.eval()
        sync = _LipSync(lip_expert, face_model, max_offset)
    per_clip = []
    root = Path(index.root) if index.root is not None else Path(data_dir)
    for number, clip_id in enumerate(clip_ids):
        clip = read_clip(root / clip_id)
        meta = clip.meta
        coeffs = clip.coeffs
        if coeffs is None:
            logger.warning("evaluate_motion: clip %s has no 3DMM coefficients (a real clip); skipped", clip_id)
            continue
        # 1. audio features and the model's motion
        audio = clip.audio
        features = encoder.encode(audio, meta.sample_rate, meta.fps)
        frames = min(features.features.shape[0], meta.frames)
        motion = model.generate(features, steps=steps, eta=eta, seed=seed)
        if abs(motion.fps - meta.fps) > 1e-6:
            raise RuntimeError(f"evaluate_motion: the model made {motion.fps} fps motion for a {meta.fps} fps clip")
        pred = {"exp": motion.exp[:frames], "angle": motion.angle[:frames], "trans": motion.trans[:frames]}
        gt = {name: coeffs[name][:frames].float() for name in ("exp", "angle", "trans")}
        identity = coeffs["id"].float()
        identity = identity[0] if identity.ndim == 2 else identity
        # 2. landmarks, vocal energy, beats
        pred_landmarks = project_landmarks(face_model, identity, pred["exp"], pred["angle"], pred["trans"],
                                           meta.size)
        stored = clip.landmarks
        gt_landmarks = (stored["landmarks"][:frames].float() if stored is not None else
                        project_landmarks(face_model, identity, gt["exp"], gt["angle"], gt["trans"], meta.size))
        vocals = clip.read_wav("vocals.wav") if (clip.folder / "vocals.wav").is_file() else audio
        energy = frame_energy(vocals, meta.sample_rate, meta.fps, frames)
        beats = meta.extra.get("beat_frames")
        # 3. scores of the model and of the ground truth
        model_scores = _clip_scores(pred, gt, gt_landmarks, pred_landmarks, energy, beats, True)
        gt_scores = _clip_scores(gt, gt, None, gt_landmarks, energy, beats, False)
        if sync is not None:
            clipped = dataclasses.replace(features, features=features.features[:frames])
            model_scores |= sync(clipped, pred["exp"])
            gt_scores |= sync(clipped, gt["exp"])
        per_clip.append({"clip_id": clip_id, "model": model_scores, "ground_truth": gt_scores})
        if progress is not None:
            progress(number + 1, len(clip_ids))
    if not per_clip:
        raise ValueError(f"evaluate_motion: no clip of the '{split}' split of '{data_dir}' has 3DMM "
                         "coefficients; motion evaluation needs SynthSinger clips")
    return {"split": split, "steps": steps, "eta": eta, "seed": seed, "clips": len(per_clip),
            "model": _mean_scores([item["model"] for item in per_clip]),
            "ground_truth": _mean_scores([item["ground_truth"] for item in per_clip]),
            "per_clip": per_clip}


def _mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(key for row in rows for key in row)
    out = {}
    for key in keys:
        values = [row[key] for row in rows if key in row and not math.isnan(row[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def format_motion_table(result: dict) -> str:
    """The result of :func:`evaluate_motion` as a plain-text table (metric, model, ground truth)."""
    model, reference = result["model"], result["ground_truth"]
    lines = [f"motion evaluation: {result['clips']} clip(s) of the '{result['split']}' split, "
             f"{result['steps']} DDIM steps, eta {result['eta']:g}, seed {result['seed']}"]
    header = f"{'metric':<34} {'model':>10} {'ground truth':>13}  better"
    lines += [header, "-" * len(header)]

    def cell(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    for key, label, better in MOTION_ROWS:
        if key not in model and key not in reference:
            continue
        hint = {"low": "lower", "high": "higher", "": "near GT"}[better]
        lines.append(f"{label:<34} {cell(model.get(key)):>10} {cell(reference.get(key)):>13}  {hint}")
    return "\n".join(lines)
