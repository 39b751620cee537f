"""The ``lip-expert`` training task: FD2Talk's lip expert (Sec. 3.4.1, eq. 10) trained contrastively, as
Wav2Lip trains its SyncNet expert: binary cross-entropy of P_sync on in-sync pairs (audio and mouth-vertex
motion of the same W frames) and off-sync pairs (the audio window shifted by at least min_shift frames
within the same clip).

Mouth-vertex motion is the displacement of the mouth vertices of the procedural 3DMM (the model SynthSinger
renders with) driven by the clip's expression coefficients; in the linear 3DMM (eq. 1) the identity part
cancels in the displacement (``motion.lip_expert.mouth_motion``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from ..audio.encoders import MEL_ENCODER_NAME
from .loop import EpochSampler, TrainParts, step_generator
from .motion_data import MotionDataConfig, load_motion_clips

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LipExpertTrainConfig(MotionDataConfig):
    """Everything of a lip-expert run: loop settings, the LipExpert size, the pair sampling and the data."""

    # model (LipExpertConfig fields)
    window: int = 5  # W: frames per sync window (Wav2Lip / SyncNet: 5)
    mouth_vertices: int = 64  # M: mouth vertices per frame
    hidden: int = 256  # tower width
    embedding: int = 128  # embedding width E
    layers: int = 3  # temporal conv layers per tower
    motion_scale: float = 10.0  # multiplies the mouth displacements (model units are decimetres)
    # pairs
    positive_fraction: float = 0.5  # share of in-sync pairs in a batch (drawn per sample)
    min_shift: int = 5  # off-sync pairs shift the audio by at least this many frames

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.positive_fraction < 1.0:
            raise ValueError(f"LipExpertTrainConfig: positive_fraction must be in (0, 1), got {self.positive_fraction}")
        if self.min_shift < 1:
            raise ValueError(f"LipExpertTrainConfig: min_shift must be >= 1, got {self.min_shift}")
        self.model_config(MEL_ENCODER_NAME, 1280)  # validates the model fields

    def model_config(self, encoder: str, audio_dim: int):
        """The LipExpertConfig of this run for audio vectors of width audio_dim from `encoder`."""
        from ..motion.lip_expert import LipExpertConfig

        return LipExpertConfig(audio_dim=audio_dim, mouth_vertices=self.mouth_vertices, window=self.window,
                               hidden=self.hidden, embedding=self.embedding, layers=self.layers,
                               motion_scale=self.motion_scale, audio_encoder=encoder, audio_reduce=self.audio_reduce)


_TINY = LipExpertTrainConfig(steps=40, batch_size=8, lr=1e-3, warmup_steps=5, checkpoint_every=20, log_every=5,
                             hidden=32, embedding=16, layers=2, synth_clips=3, synth_seconds=2.0, synth_size=32)
_PAPER = LipExpertTrainConfig(steps=100_000, batch_size=64, lr=1e-4, checkpoint_every=5000, log_every=50,
                              audio_encoder="facebook/wav2vec2-base-960h", audio_layers="last",
                              audio_reduce="last_row", synth_clips=400, synth_seconds=10.0)


class SyncPairs:
    """Batches of (audio window, mouth window, label) pairs, a function of (seed, step, rank, world).

    Args:
        audio: per clip (T, A) audio vectors.
        mouth: per clip (T, M, 3) mouth-vertex displacements.
        config: the run config.
    """

    def __init__(self, audio: list[torch.Tensor], mouth: list[torch.Tensor], config: LipExpertTrainConfig):
        self.audio, self.mouth, self.config = audio, mouth, config
        window, shift = config.window, config.min_shift
        # a clip can give off-sync pairs when it has two window starts min_shift apart
        self.items = [(number, start) for number, track in enumerate(mouth)
                      if track.shape[0] - window >= shift for start in range(track.shape[0] - window + 1)]
        if not self.items:
            raise ValueError(f"lip-expert task: no clip is long enough for window={window} and min_shift={shift} "
                             f"(need at least {window + shift} frames); use longer clips or lower them")
        self.sampler = EpochSampler(len(self.items), config.batch_size, config.seed)

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """audio (B, W, A), mouth (B, W, M, 3), label (B,) float 1 = in sync."""
        window, shift = self.config.window, self.config.min_shift
        generator = step_generator(self.config.seed, step, rank)
        audio, mouth, labels = [], [], []
        for index in self.sampler.indices(step, rank=rank, world=world):
            number, start = self.items[index]
            positive = bool(torch.rand((), generator=generator) < self.config.positive_fraction)
            audio_start = start
            if not positive:  # any start at least `shift` frames away, uniformly
                last = self.mouth[number].shape[0] - window
                choices = [s for s in range(last + 1) if abs(s - start) >= shift]
                audio_start = choices[int(torch.randint(len(choices), (), generator=generator))]
            audio.append(self.audio[number][audio_start:audio_start + window])
            mouth.append(self.mouth[number][start:start + window])
            labels.append(1.0 if positive else 0.0)
        return {"audio": torch.stack(audio), "mouth": torch.stack(mouth), "label": torch.tensor(labels)}


class LipExpertTask:
    """FD2Talk's lip expert on 3D mouth-vertex motion, trained on in-sync vs shifted audio windows."""

    name = "lip-expert"
    config_class = LipExpertTrainConfig
    presets = {"tiny": _TINY, "paper": _PAPER}
    default_preset = "tiny"

    def build(self, config: LipExpertTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from ..face.procedural import procedural_model
        from ..motion.lip_expert import LipExpert, mouth_motion, mouth_vertex_indices

        clips = load_motion_clips(config.dataset(data_dir, cache_dir), config.split, config.audio_spec(), cache_dir)
        face = procedural_model(seed=0)
        indices = mouth_vertex_indices(face, count=config.mouth_vertices)
        with torch.no_grad():
            mouth = [mouth_motion(face, exp, indices).float() for exp in clips.exp]  # (T, M, 3) each
        expert = LipExpert(config.model_config(clips.encoder, clips.audio[0].shape[-1]))
        logger.info("lip-expert task: %d clips, audio %s (%d per frame), %d mouth vertices", len(clips.clip_ids),
                    clips.encoder, clips.audio[0].shape[-1], config.mouth_vertices)
        return TrainParts(trainable={"lip_expert": expert}, frozen={}, data=SyncPairs(clips.audio, mouth, config))

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        # LipExpert.contrastive_loss, through forward() so that a DDP wrapper sees the call
        probability = models["lip_expert"](batch["audio"], batch["mouth"]).clamp(1e-7, 1 - 1e-7)
        loss = F.binary_cross_entropy(probability, batch["label"].to(probability.dtype))
        labels = batch["label"] > 0.5
        scalars = {"accuracy": float(((probability > 0.5) == labels).float().mean())}
        if bool(labels.any()):
            scalars["p_sync_in"] = float(probability.detach()[labels].mean())
        if not bool(labels.all()):
            scalars["p_sync_off"] = float(probability.detach()[~labels].mean())
        return loss, scalars

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        return models["lip_expert"].save_pretrained(folder)

