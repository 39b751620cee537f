"""Training data of the motion-stage tasks (FD2Talk Sec. 3.4.1): a SINGER clip dataset (SynthSinger generated on
demand into a cache), per-clip audio features cached once as safetensors, and per-frame 3DMM coefficients.

Shared by the ``motion`` and ``lip-expert`` tasks: both see the same audio vectors (the encoder's (F, R, D)
rows reduced to (F, A) by ``motion.generator.reduce_audio_rows``) and the same coefficients.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..data.format import read_index
from ..data.synthetic import GENERATOR_VERSION, SynthSingerConfig, generate_dataset
from .loop import LoopConfig

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
FEATURES_VERSION = 2  # bump when the encoding of cached features changes (2: per-clip content stamps)


@dataclasses.dataclass(frozen=True)
class AudioSpec:
    """How the audio of a clip becomes per-frame vectors.

    encoder: "mel-80" (no weights) or what load_audio_encoder accepts (hub id, folder, file).
    layers: "all" or "last" (transformer encoders; ignored by mel-80).
    reduce: rows -> vector: "flatten", "mean_rows" or "last_row".
    source: the clip's wav file to encode ("audio.wav" = the mix, "vocals.wav" = the voice stem).
    models_dir: folder searched for encoder weights (None: the Hugging Face cache only).
    """

    encoder: str = MEL_ENCODER_NAME
    layers: str = "all"
    reduce: str = "flatten"
    source: str = "audio.wav"
    models_dir: str | None = None

    def key(self) -> str:
        """Folder name of the feature cache of this spec (the reduction is applied after the cache)."""
        text = json.dumps([self.encoder, self.layers, self.source], sort_keys=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(self.encoder).name)[:40]
        return f"{safe}-{self.layers}-{Path(self.source).stem}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def synth_dataset(config: SynthSingerConfig, cache_dir: Path, progress=None) -> Path:
    """The folder of a SynthSinger dataset made with `config` under cache_dir (generated once; an interrupted
    generation resumes: finished clips are kept)."""
    digest = hashlib.sha1(f"{config.to_json()} v{GENERATOR_VERSION}".encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"synthsinger-{digest}"
    try:
        index = read_index(folder)
        if len(index.clips) == config.clips:
            logger.info("motion data: reusing SynthSinger in '%s'", folder)
            return folder
    except (FileNotFoundError, ValueError):
        pass
    logger.info("motion data: generating SynthSinger (%d clips of %.1f s) into '%s'", config.clips,
                config.seconds, folder)
    generate_dataset(folder, config, progress=progress)
    return folder


def _encoder(spec: AudioSpec):
    from ..audio.encoder_loading import load_audio_encoder

    return load_audio_encoder(spec.encoder, models_dir=spec.models_dir)


def content_stamp(paths, extra: str = "") -> str:
    """A short hash of the names, sizes and modification times (ns) of `paths` (files or folders, whose files
    count one level deep) and `extra`: changes whenever one of those files is replaced or edited."""
    digest = hashlib.sha1(extra.encode())
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for item in files:
            stat = item.stat()
            digest.update(f"{item.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:12]


def _encoder_stamp(spec: AudioSpec) -> str:
    """The encoder part of the cache key: its name/config (spec.key) and, for local weights, their content."""
    local = Path(spec.encoder).expanduser()
    weights = [local] if local.exists() else []
    return content_stamp(weights, f"{spec.key()} features-v{FEATURES_VERSION}")


def cached_features(root: Path, clip_ids: list[str], spec: AudioSpec, cache_dir: Path) -> dict[str, Path]:
    """Encode each clip's `spec.source` once into
    cache_dir/features/<dataset>/<spec>-<encoder stamp>/<clip>-<clip stamp>.safetensors.

    The key covers the content the features are built from: the dataset's absolute path and index.json, the
    encoder's name, layers and source (and the size and time stamps of local encoder weights), and per clip the
    size and modification time of its meta.json and source wav. Replacing a clip's audio.wav therefore encodes
    it again (the stale file of that clip is removed); a cached file of the wrong length is recomputed.
    """
    from ..audio.features import SingerAudioFeatures
    from ..data.format import META_FILE, read_clip

    root = Path(root).resolve()
    dataset_key = hashlib.sha1((str(root) + (root / "index.json").read_text()).encode()).hexdigest()[:12]
    folder = (Path(cache_dir) / FEATURES_DIR / f"{root.name[:40]}-{dataset_key}" /
              f"{spec.key()}-{_encoder_stamp(spec)}")
    paths, encoder = {}, None
    for clip_id in clip_ids:
        clip = read_clip(root / clip_id)
        stamp = content_stamp([clip.path(META_FILE), clip.path(spec.source)])
        path = folder / f"{clip_id}-{stamp}.safetensors"
        if path.is_file():
            try:
                if SingerAudioFeatures.load(path).frames == clip.meta.frames:
                    paths[clip_id] = path
                    continue
            except ValueError as error:
                logger.warning("motion data: recomputing damaged features '%s' (%s)", path, error)
        for stale in folder.glob(f"{glob.escape(clip_id)}-*.safetensors"):  # features of replaced audio
            if stale.name != path.name and len(stale.name) == len(path.name):
                stale.unlink(missing_ok=True)
        if encoder is None:
            encoder = _encoder(spec)
        waveform = clip.read_wav(spec.source)
        features = encoder.encode(waveform, clip.meta.sample_rate, clip.meta.fps, layers=spec.layers,
                                  allow_silence=True)
        if features.frames < clip.meta.frames:
            raise RuntimeError(f"motion data: '{spec.source}' of clip {clip_id!r} gives {features.frames} feature "
                               f"frames, the clip has {clip.meta.frames}; the audio is shorter than the video")
        if features.frames > clip.meta.frames:
            features = dataclasses.replace(features, features=features.features[: clip.meta.frames].contiguous())
        features.save(path)
        paths[clip_id] = path
    return paths


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
