"""The training data caches under ``cache_dir`` shared by the training tasks: SynthSinger datasets generated on
demand (``synth_dataset``) and per-clip audio features encoded once as safetensors (``cached_features``), with
content stamps that change whenever a file they were built from changes.

The ``motion``, ``lip-expert``, ``dynamic-sync``, ``singer`` and ``frames`` tasks read their features here, so
the same dataset and encoder share one cache folder.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
from pathlib import Path

from ..audio.encoders import MEL_ENCODER_NAME
from ..data.format import read_index
from ..data.synthetic import GENERATOR_VERSION, SynthSingerConfig, generate_dataset

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
            logger.info("data cache: reusing SynthSinger in '%s'", folder)
            return folder
    except (FileNotFoundError, ValueError):
        pass
    logger.info("data cache: generating SynthSinger (%d clips of %.1f s) into '%s'", config.clips,
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
                logger.warning("data cache: recomputing damaged features '%s' (%s)", path, error)
        for stale in folder.glob(f"{glob.escape(clip_id)}-*.safetensors"):  # features of replaced audio
            if stale.name != path.name and len(stale.name) == len(path.name):
                stale.unlink(missing_ok=True)
        if encoder is None:
            encoder = _encoder(spec)
        waveform = clip.read_wav(spec.source)
        features = encoder.encode(waveform, clip.meta.sample_rate, clip.meta.fps, layers=spec.layers,
                                  allow_silence=True)
        if features.frames < clip.meta.frames:
            raise RuntimeError(f"data cache: '{spec.source}' of clip {clip_id!r} gives {features.frames} feature "
                               f"frames, the clip has {clip.meta.frames}; the audio is shorter than the video")
        if features.frames > clip.meta.frames:
            features = dataclasses.replace(features, features=features.features[: clip.meta.frames].contiguous())
        features.save(path)
        paths[clip_id] = path
    return paths
