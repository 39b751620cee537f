"""The SynthSinger frames of FD2Talk's stage-2 training tasks (``frames``: the frame Diffusion UNet, Sec. 3.3;
``frame-autoencoder``: the E / D fine-tune, Sec. 3.4.2): the shared data settings and the clips with their
ground-truth expression + pose coefficients.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..data.synthetic import SynthSingerConfig
from .config import LoopConfig
from .data_cache import synth_dataset

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FrameDataConfig(LoopConfig):
    """Loop settings + the SynthSinger frames (shared by the frames and frame-autoencoder tasks)."""

    image_size: int = 64  # square frames (pixels)
    split: str = "train"  # dataset split to train on
    synth_clips: int = 8  # SynthSinger clips generated when no --data is given
    synth_seconds: float = 2.0  # their length in seconds
    synth_seed: int = 0  # their seed
    synth_clips_per_identity: int = 8  # songs per identity (= synth_clips: one singer, as the tiny SINGER stack)

    def __post_init__(self):
        super().__post_init__()
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"{type(self).__name__}: split must be 'train', 'test' or 'all', got {self.split!r}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"{type(self).__name__}: image_size must be a multiple of 8, got {self.image_size}")
        self.synth_config()

    def synth_config(self) -> SynthSingerConfig:
        return SynthSingerConfig(clips=self.synth_clips, seconds=self.synth_seconds, size=self.image_size,
                                 seed=self.synth_seed, clips_per_identity=self.synth_clips_per_identity)

    def dataset(self, data_dir: Path | None, cache_dir: Path) -> Path:
        return Path(data_dir) if data_dir is not None else synth_dataset(self.synth_config(), cache_dir)


@dataclasses.dataclass(frozen=True)
class FrameClip:
    """One clip: frames (F, 3, S, S) uint8 and motion (F, 70) float32 [exp 64, angle 3, trans 3]."""

    clip_id: str
    frames: torch.Tensor
    motion: torch.Tensor


def load_frame_clips(root: Path, split: str, image_size: int) -> list[FrameClip]:
    """Every clip of `split` with ground-truth coefficients: frames resized to image_size and [exp, angle, trans]."""
    from ..data.dataset import SingerClipDataset
    from ..data.format import read_clip

    dataset = SingerClipDataset(root, split, window=None, image_size=image_size, with_audio=False)
    clips = []
    for item in range(len(dataset)):
        sample = dataset[item]
        coeffs = read_clip(Path(root) / sample["clip_id"]).coeffs
        if coeffs is None:
            raise ValueError(f"frames task: clip {sample['clip_id']!r} of '{root}' has no coefficients "
                             "(coeffs.safetensors); preprocess the videos with coefficient fitting or use SynthSinger")
        frames = sample["frames"].mul(255.0).round_().to(torch.uint8)
        count = frames.shape[0]
        motion = torch.cat([coeffs["exp"][:count], coeffs["angle"][:count], coeffs["trans"][:count]], 1).float()
        clips.append(FrameClip(sample["clip_id"], frames, motion))
    return clips


__all__ = ["FrameClip", "FrameDataConfig", "load_frame_clips"]
