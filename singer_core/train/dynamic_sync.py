"""The ``dynamic-sync`` training task: DAMC's Dynamic-Sync Encoder E_d (Fu et al., §2.2) trained jointly with
its lip-sync expert discriminator D_lip and the reconstruction decoders (``nerf.dynamic_sync.dynamic_sync_losses``).

Each sample is video frame i of a clip: the 16-step mel window of frame i (MelEncoder "mel-80", cached once
per clip by ``data_cache.cached_features``), the aligned mouth motion ``mouth_windows(mouth, i, W)`` of the
clip's landmarks normalised by ``normalized_mouth``, and an off-sync mouth window of the same clip starting
at a frame j with |j - i| >= min_shift (SyncNet's rule: 5 frames), drawn uniformly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from .data_cache import AudioSpec, cached_features
from .loop import EpochSampler, TrainParts, step_generator
from .motion_data import MotionDataConfig

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class DynamicSyncTrainConfig(MotionDataConfig):
    """Everything of a dynamic-sync run: loop settings, the DynamicSyncEncoder size, loss weights, pair sampling
    and the data. E_d reads MelEncoder windows, so audio_encoder must stay "mel-80" (audio_layers, audio_reduce
    and audio_models_dir are not used by this task; audio_source picks the mix or the vocal stem)."""

    # model (DynamicSyncConfig fields; mel_steps / mel_bins come from the mel-80 features)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # E_d conv stage widths (each halves bins and steps)
    embed_dim: int = 256  # width of the dynamic feature f_d
    sync_dim: int = 128  # width of D_lip's shared audio / mouth embedding
    hidden: int = 256  # hidden width of D_lip's mouth encoder and of both decoders
    window: int = 5  # video frames of a mouth window (a 16-step mel window spans 5 frames at 25 fps)
    # mouth motion
    mouth_center: bool = True  # subtract each clip's mean normalised mouth shape (motion, not identity shape)
    mouth_scale: float = 20.0  # multiplies the normalised mouth (units of the outer-eye-corner distance)
    # losses (DynamicSyncLossConfig fields)
    sync_weight: float = 1.0  # weight of D_lip's BCE on aligned vs. off-sync pairs
    mel_weight: float = 1.0  # weight of the L1 mel reconstruction from f_d
    mouth_weight: float = 1.0  # weight of the L1 mouth-motion reconstruction from f_d (0 disables it)
    # pairs
    min_shift: int = 5  # off-sync mouth windows start at least this many frames from the aligned one

    def __post_init__(self):
        super().__post_init__()
        if self.audio_encoder != MEL_ENCODER_NAME:
            raise ValueError(f"DynamicSyncTrainConfig: audio_encoder must be {MEL_ENCODER_NAME!r} (E_d encodes mel "
                             f"windows), got {self.audio_encoder!r}")
        if not (isinstance(self.mouth_scale, (int, float)) and not isinstance(self.mouth_scale, bool)
                and 0 < self.mouth_scale < float("inf")):
            raise ValueError(f"DynamicSyncTrainConfig: mouth_scale must be a positive number, got {self.mouth_scale!r}")
        if isinstance(self.min_shift, bool) or not isinstance(self.min_shift, int) or self.min_shift < 1:
            raise ValueError(f"DynamicSyncTrainConfig: min_shift must be an integer >= 1, got {self.min_shift!r}")
        self.model_config()  # validates the model fields
        self.loss_config()  # validates the loss weights

    def model_config(self, mel_steps: int = 16, mel_bins: int = 80):
        """The DynamicSyncConfig of this run for mel windows of (mel_steps, mel_bins)."""
        from ..nerf.dynamic_sync import DynamicSyncConfig

        return DynamicSyncConfig(mel_steps=mel_steps, mel_bins=mel_bins, channels=tuple(self.channels),
                                 embed_dim=self.embed_dim, sync_dim=self.sync_dim, mouth_frames=self.window,
                                 hidden=self.hidden)

    def loss_config(self):
        """The DynamicSyncLossConfig of the *_weight fields."""
        from ..nerf.dynamic_sync import DynamicSyncLossConfig

        return DynamicSyncLossConfig(sync_weight=self.sync_weight, mel_weight=self.mel_weight,
                                     mouth_weight=self.mouth_weight)


_TINY = DynamicSyncTrainConfig(steps=200, batch_size=16, lr=2e-3, warmup_steps=5, checkpoint_every=100, log_every=5,
                               channels=(4, 8), embed_dim=16, sync_dim=8, hidden=32, synth_clips=3,
                               synth_seconds=2.0, synth_size=32)
_PAPER = DynamicSyncTrainConfig(steps=100_000, batch_size=64, lr=1e-4, checkpoint_every=5000, log_every=50,
                                synth_clips=400, synth_seconds=10.0)


@dataclasses.dataclass
class SyncClips:
    """Every usable training clip in memory.

    mel: per clip (T, S, M) float32 mel windows (window t starts at video frame t).
    mouth: per clip (T, 20, 2) float32 mouth motion: ``normalized_mouth`` of the landmarks, minus the clip's
        mean over frames when centred, times the scale.
    clip_ids: their ids.
    """

    mel: list[torch.Tensor]
    mouth: list[torch.Tensor]
    clip_ids: list[str]


def load_sync_clips(root: Path, split: str, source: str, cache_dir: Path, *, center: bool = True,
                    scale: float = 1.0) -> SyncClips:
    """Cached mel-80 windows of `source` and mouth motion of the clips of `split` that carry landmarks
    (clips without a landmarks file are skipped with a warning).

    Args:
        root: dataset folder (SINGER clip format).
        split: "train", "test" or "all".
        source: the clip's wav file to encode ("audio.wav" or "vocals.wav").
        cache_dir: feature cache (shared with the motion tasks: same folders for the same dataset and source).
        center: subtract each clip's mean normalised mouth shape over its frames.
        scale: multiply the (centred) normalised mouth by this.
    """
    from ..audio.features import SingerAudioFeatures
    from ..data.format import read_clip, read_index
    from ..nerf.dynamic_sync import normalized_mouth

    index = read_index(root)
    wanted = index.split(split)
    marks = {}
    for clip_id in wanted:
        landmarks = read_clip(Path(root) / clip_id).landmarks
        if landmarks is not None and "landmarks" in landmarks:
            marks[clip_id] = landmarks["landmarks"]
    if len(marks) < len(wanted):
        logger.warning("dynamic-sync data: %d clips of split %r have no landmarks and are skipped",
                       len(wanted) - len(marks), split)
    if not marks:
        raise ValueError(f"dynamic-sync data: split {split!r} of '{root}' has no clip with landmarks "
                         "(landmarks.safetensors); run the preprocessor on the dataset or train on SynthSinger")
    clip_ids = list(marks)
    paths = cached_features(root, clip_ids, AudioSpec(encoder=MEL_ENCODER_NAME, source=source), cache_dir)
    mel, mouth = [], []
    for clip_id in clip_ids:
        features = SingerAudioFeatures.load(paths[clip_id]).features.float()  # (T, 16, 80)
        points = marks[clip_id]
        if points.shape[0] != features.shape[0]:
            raise RuntimeError(f"dynamic-sync data: clip {clip_id!r} has {points.shape[0]} landmark frames and "
                               f"{features.shape[0]} mel windows; the clip's files disagree")
        mel.append(features.contiguous())
        shape = normalized_mouth(points)  # (T, 20, 2)
        if center:
            shape = shape - shape.mean(0)
        mouth.append((shape * scale).contiguous())
    return SyncClips(mel, mouth, clip_ids)


class SyncWindows:
    """Batches of (mel window, aligned mouth window, off-sync mouth window), a function of (seed, step, rank,
    world).

    Args:
        clips: the training clips.
        config: the run config (window, min_shift, batch_size, seed).
    """

    def __init__(self, clips: SyncClips, config: DynamicSyncTrainConfig):
        self.clips, self.config = clips, config
        window, shift = config.window, config.min_shift
        # sample = (clip number, frame i) with the whole mouth window inside the clip; a clip must also have
        # a start at least `shift` frames away for the off-sync window
        self.items = [(number, start) for number, mouth in enumerate(clips.mouth)
                      if mouth.shape[0] - window >= shift for start in range(mouth.shape[0] - window + 1)]
        if not self.items:
            raise ValueError(f"dynamic-sync task: no clip is long enough for window={window} and "
                             f"min_shift={shift} (need at least {window + shift} frames); use longer clips or "
                             "lower them")
        self.sampler = EpochSampler(len(self.items), config.batch_size, config.seed)

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """mel (B, S, M), mouth and negative_mouth (B, W, 20, 2); clip, start, negative_start (B,) int64 say
        where each sample came from."""
        from ..nerf.dynamic_sync import mouth_windows

        window, shift = self.config.window, self.config.min_shift
        generator = step_generator(self.config.seed, step, rank)
        mel, mouth, negative, numbers, starts, negative_starts = [], [], [], [], [], []
        for index in self.sampler.indices(step, rank=rank, world=world):
            number, start = self.items[index]
            track = self.clips.mouth[number]
            last = track.shape[0] - window
            # off-sync start: uniform over the starts at least `shift` frames away
            choices = [s for s in range(last + 1) if abs(s - start) >= shift]
            other = choices[int(torch.randint(len(choices), (), generator=generator))]
            mel.append(self.clips.mel[number][start])
            pair = mouth_windows(track, torch.tensor([start, other]), window)  # (2, W, 20, 2)
            mouth.append(pair[0])
            negative.append(pair[1])
            numbers.append(number)
            starts.append(start)
            negative_starts.append(other)
        return {"mel": torch.stack(mel), "mouth": torch.stack(mouth), "negative_mouth": torch.stack(negative),
                "clip": torch.tensor(numbers), "start": torch.tensor(starts),
                "negative_start": torch.tensor(negative_starts)}


class DynamicSyncTrainer(torch.nn.Module):
    """The trained module: forward = dynamic_sync_losses, so accelerate / DDP see one forward call.

    Args:
        model: the DynamicSyncEncoder (with D_lip and the decoders).
        weights: the DynamicSyncLossConfig.
    """

    def __init__(self, model: torch.nn.Module, weights):
        super().__init__()
        self.model, self.weights = model, weights

    def forward(self, mel: torch.Tensor, mouth: torch.Tensor, negative_mouth: torch.Tensor) -> dict:
        """mel (B, S, M), mouth / negative_mouth (B, W, P, C) -> dynamic_sync_losses' dict.

        Runs in float32 even under mixed precision: D_lip's loss is F.binary_cross_entropy on a probability,
        which CUDA autocast refuses (and the model is small).
        """
        from ..nerf.dynamic_sync import dynamic_sync_losses

        kind = mel.device.type
        with torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind) else contextlib.nullcontext():
            return dynamic_sync_losses(self.model, mel.float(), mouth.float(), negative_mouth=negative_mouth.float(),
                                       weights=self.weights)


class DynamicSyncTask:
    """DAMC Dynamic-Sync Encoder E_d with its lip-sync expert D_lip and reconstruction decoders (§2.2)."""

    name = "dynamic-sync"
    config_class = DynamicSyncTrainConfig
    presets = {"tiny": _TINY, "paper": _PAPER}
    default_preset = "tiny"

    def build(self, config: DynamicSyncTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from ..nerf.dynamic_sync import DynamicSyncEncoder

        # 1. data: SynthSinger in the (motion tasks') cache unless a dataset is given; mel windows cached
        clips = load_sync_clips(config.dataset(data_dir, cache_dir), config.split, config.audio_source, cache_dir,
                                center=config.mouth_center, scale=config.mouth_scale)
        steps, bins = clips.mel[0].shape[1:]
        logger.info("dynamic-sync task: %d clips, %d frames, mel windows %d x %d", len(clips.clip_ids),
                    sum(m.shape[0] for m in clips.mouth), steps, bins)
        # 2. the encoder with its heads (initialised from the seeded global RNG)
        model = DynamicSyncEncoder(config.model_config(int(steps), int(bins)))
        return TrainParts(trainable={"dynamic_sync": DynamicSyncTrainer(model, config.loss_config())}, frozen={},
                          data=SyncWindows(clips, config))

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        terms = models["dynamic_sync"](batch["mel"], batch["mouth"], batch["negative_mouth"])
        scalars = {key: float(terms[key].detach()) for key in ("sync", "mel", "mouth", "p_sync_positive",
                                                               "p_sync_negative")}
        return terms["loss"], scalars

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        return models["dynamic_sync"].model.save_pretrained(folder)
