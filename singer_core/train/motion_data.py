"""Training data of the motion-stage tasks (FD2Talk Sec. 3.4.1): the data settings of a run
(``MotionDataConfig``: split, audio encoder, SynthSinger fallback) and the clips in memory (``MotionClips``:
per-frame audio vectors and 3DMM coefficients), built on the caches of :mod:`.data_cache`.

Shared by the ``motion`` and ``lip-expert`` tasks: both see the same audio vectors (the encoder's (F, R, D)
rows reduced to (F, A) by ``motion.generator.reduce_audio_rows``) and the same coefficients.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..data.format import read_index
from ..data.synthetic import SynthSingerConfig
from .config import LoopConfig
from .data_cache import FEATURES_DIR, AudioSpec, cached_features, synth_dataset

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MotionDataConfig(LoopConfig):
    """Loop settings + where the motion-stage data comes from (the motion and lip-expert configs extend it)."""

    split: str = "train"  # dataset split to train on
    audio_encoder: str = MEL_ENCODER_NAME  # "mel-80" or a wav2vec2 / HuBERT hub id, folder or file
    audio_layers: str = "all"  # "all" or "last" transformer layers (ignored by mel-80)
    audio_reduce: str = "flatten"  # rows -> per-frame vector: "flatten", "mean_rows" or "last_row"
    audio_source: str = "audio.wav"  # wav file of the clip to encode ("audio.wav" mix or "vocals.wav")
    audio_models_dir: str | None = None  # folder searched for encoder weights
    synth_clips: int = 40  # SynthSinger clips generated when no --data is given
    synth_seconds: float = 8.0  # their length in seconds
    synth_size: int = 64  # their frame size (only the audio and coefficients are used)
    synth_seed: int = 0  # their seed
    synth_backing: bool = True  # mix a band under the voice (singing with music)

    def __post_init__(self):
        super().__post_init__()
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"{type(self).__name__}: split must be 'train', 'test' or 'all', got {self.split!r}")
        if self.audio_layers not in ("all", "last"):
            raise ValueError(f"{type(self).__name__}: audio_layers must be 'all' or 'last', got {self.audio_layers!r}")
        self.synth_config()  # validates the synth_* fields

    def audio_spec(self) -> AudioSpec:
        """The AudioSpec of the audio_* fields."""
        return AudioSpec(self.audio_encoder, self.audio_layers, self.audio_reduce, self.audio_source,
                         self.audio_models_dir)

    def synth_config(self) -> SynthSingerConfig:
        """The SynthSinger dataset generated when no --data is given."""
        return SynthSingerConfig(clips=self.synth_clips, seconds=self.synth_seconds, size=self.synth_size,
                                 seed=self.synth_seed, backing=self.synth_backing)

    def dataset(self, data_dir: Path | None, cache_dir: Path) -> Path:
        """data_dir, or the cached SynthSinger of the synth_* fields (generated on first use)."""
        return Path(data_dir) if data_dir is not None else synth_dataset(self.synth_config(), cache_dir)


@dataclasses.dataclass
class MotionClips:
    """Every usable training clip in memory.

    audio: per clip (T, A) float32 audio vectors.
    exp: per clip (T, 64) expression coefficients.
    pose: per clip (T, 6) angle (3) then trans (3).
    clip_ids: their ids.
    encoder: SingerAudioFeatures.encoder of the features; rows, width: their (R, D).
    """

    audio: list[torch.Tensor]
    exp: list[torch.Tensor]
    pose: list[torch.Tensor]
    clip_ids: list[str]
    encoder: str
    rows: int
    width: int

    def windows(self, frames: int, stride: int) -> list[tuple[int, int]]:
        """(clip number, first frame) of every window of `frames` frames, `stride` apart."""
        return [(number, start) for number, exp in enumerate(self.exp)
                for start in range(0, exp.shape[0] - frames + 1, stride)]

    def statistics(self) -> dict[str, torch.Tensor]:
        """exp_mean/exp_std (64,), pose_mean/pose_std (6,) over every frame (float64 sums, float32 out)."""
        exp = torch.cat(self.exp).double()
        pose = torch.cat(self.pose).double()
        return {"exp_mean": exp.mean(0).float(), "exp_std": exp.std(0, unbiased=False).float(),
                "pose_mean": pose.mean(0).float(), "pose_std": pose.std(0, unbiased=False).float()}


def load_motion_clips(root: Path, split: str, spec: AudioSpec, cache_dir: Path) -> MotionClips:
    """Coefficients and (cached) audio vectors of the clips of `split` that have 3DMM coefficients."""
    from ..audio.features import SingerAudioFeatures
    from ..data.format import read_clip
    from ..motion.generator import reduce_audio_rows

    index = read_index(root)
    clip_ids = [clip_id for clip_id in index.split(split) if index.clips[clip_id].has_coeffs]
    skipped = len(index.split(split)) - len(clip_ids)
    if skipped:
        logger.warning("motion data: %d clips of split %r have no 3DMM coefficients and are skipped", skipped, split)
    if not clip_ids:
        raise ValueError(f"motion data: split {split!r} of '{root}' has no clip with 3DMM coefficients "
                         "(coeffs.safetensors); motion training needs SynthSinger clips or clips fitted with 3DMM "
                         "coefficients")
    paths = cached_features(root, clip_ids, spec, cache_dir)
    audio, exp, pose, encoders, shapes = [], [], [], set(), set()
    for clip_id in clip_ids:
        coeffs = read_clip(Path(root) / clip_id).coeffs
        features = SingerAudioFeatures.load(paths[clip_id])
        encoders.add(features.encoder)
        shapes.add((features.num_rows, features.width))
        audio.append(reduce_audio_rows(features.features.float(), spec.reduce).contiguous())
        exp.append(coeffs["exp"].float())
        pose.append(torch.cat([coeffs["angle"], coeffs["trans"]], dim=-1).float())
    if len(encoders) != 1 or len(shapes) != 1:
        raise RuntimeError(f"motion data: cached features disagree ({sorted(encoders)}, {sorted(shapes)}); "
                           f"delete '{Path(cache_dir) / FEATURES_DIR}' and run again")
    rows, width = shapes.pop()
    return MotionClips(audio, exp, pose, clip_ids, encoders.pop(), rows, width)
