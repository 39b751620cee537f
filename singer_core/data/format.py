"""The SINGER clip dataset format: one folder per clip (video, 16 kHz audio, 3DMM coefficients,
landmarks, metadata) and an index.json with the SINGER paper's 4:1 train/test split by identity.

A dataset root looks like::

    root/index.json                      format, version, split seed, train/test clip ids, every ClipMeta
    root/<clip_id>/meta.json             ClipMeta
    root/<clip_id>/video.mp4             H.264 yuv420p at meta.fps, square meta.size pixels, AAC of the mix
    root/<clip_id>/audio.wav             16-bit PCM, mono, meta.sample_rate (16 kHz): the mix
    root/<clip_id>/coeffs.safetensors    3DMM coefficients (synthetic clips; real clips have none):
                                         exp (T, 64), angle (T, 3) radians, trans (T, 3) per frame and
                                         id (80,), tex (80,), gamma (27,) per clip (or (T, D) per frame)
    root/<clip_id>/landmarks.safetensors per-frame tensors: landmarks (T, 68, 2) pixels (x right, y down);
                                         real clips: box (T, 4), the crop in the source video, and more
    root/<clip_id>/<stem>.wav            optional stems at 16 kHz mono (vocals.wav when a backing is mixed in)
    root/<clip_id>/<name>.safetensors    optional extra tensors (timeline.safetensors: the song's truth)

Everything of a clip is written into a temporary sibling folder and renamed into place, so a crash or an
interruption leaves no half-written clip. Readers are lazy: frames are decoded per request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..audio.io import resample
from ..io.checkpoint import atomic_folder
from ..progress import Progress
from .wav import WavInfo, read_wav_span, wav_info

logger = logging.getLogger(__name__)
_RATE_WARNED: set[tuple[str, int]] = set()  # (file, rate) already warned about

FORMAT_NAME = "singer-clip-dataset"  # "format" of index.json
FORMAT_VERSION = 1
SOURCES = ("synthsinger", "real")
AUDIO_SAMPLE_RATE = 16000  # rate of audio.wav and every stem
INDEX_FILE = "index.json"
META_FILE = "meta.json"
VIDEO_FILE = "video.mp4"
AUDIO_FILE = "audio.wav"
COEFFS_FILE = "coeffs.safetensors"
LANDMARKS_FILE = "landmarks.safetensors"
PER_CLIP_COEFFS = {"id": 80, "tex": 80, "gamma": 27}  # may be stored once per clip: (D,) instead of (T, D)
PER_FRAME_COEFFS = {"exp": 64, "angle": 3, "trans": 3}  # always (T, D)
PER_CLIP_KEYS = (*PER_CLIP_COEFFS, "beat_times", "downbeats")  # 1-D tensors never sliced by frame rows
_RESERVED = {META_FILE, VIDEO_FILE, AUDIO_FILE, COEFFS_FILE, LANDMARKS_FILE}


@dataclasses.dataclass(frozen=True)
class ClipMeta:
    """What a clip is; stored as meta.json in its folder and repeated in index.json."""

    clip_id: str  # folder name under the dataset root (letters, digits, '_', '-', '.')
    identity: str  # who is in it; the train/test split never puts one identity on both sides
    source: str  # "synthsinger" (generated, with ground-truth coefficients) or "real" (preprocessed video)
    fps: float  # video frames per second (25)
    sample_rate: int  # sample rate of audio.wav in Hz (16000)
    frames: int  # number of video frames T
    size: int  # frame width = height in pixels
    seconds: float  # audio duration in seconds (T / fps rounds it up to whole frames)
    has_coeffs: bool  # coeffs.safetensors is present
    extra: dict = dataclasses.field(default_factory=dict)  # free JSON-able details (song config, source file)

    def __post_init__(self):
        name = self.clip_id
        if not isinstance(name, str) or not name or name.startswith(".") or any(
            not (char.isalnum() or char in "_-.") for char in name
        ):
            raise ValueError(
                f"ClipMeta: clip_id must be a folder name of letters, digits, '_', '-', '.' not starting "
                f"with '.', got {name!r}"
            )
        if not isinstance(self.identity, str) or not self.identity:
            raise ValueError(f"ClipMeta({name}): identity must be a non-empty string, got {self.identity!r}")
        if self.source not in SOURCES:
            raise ValueError(f"ClipMeta({name}): source must be one of {SOURCES}, got {self.source!r}")
        for field, minimum in (("sample_rate", 1), ("frames", 1), ("size", 2)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"ClipMeta({name}): {field} must be an integer >= {minimum}, got {value!r}")
            object.__setattr__(self, field, int(value))
        for field in ("fps", "seconds"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(f"ClipMeta({name}): {field} must be a positive number, got {value!r}")
            object.__setattr__(self, field, float(value))
        if not isinstance(self.has_coeffs, bool):
            raise ValueError(f"ClipMeta({name}): has_coeffs must be a bool, got {self.has_coeffs!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"ClipMeta({name}): extra must be a dict, got {type(self.extra).__name__}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "ClipMeta") -> ClipMeta:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown, missing = set(data) - known, {f for f in known - set(data) if f != "extra"}
        if unknown or missing:
            raise ValueError(
                f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                f"ClipMeta has {sorted(known)}"
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClipMeta:
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
    """The clips of a dataset root and its split (read_index)."""

    train: list[str]  # clip ids of the training split, sorted
    test: list[str]  # clip ids of the test split, sorted
    clips: dict[str, ClipMeta]  # every clip id -> its metadata
    root: Path | None = None  # the dataset folder (clip folders are root/<clip_id>)
    seed: int = 0  # seed of the identity shuffle that made the split
    test_fraction: float = 0.2  # share of identities in the test split

    def split(self, name: str) -> list[str]:
        """Clip ids of "train", "test" or "all" (train + test)."""
        if name == "all":
            return sorted(self.train + self.test)
        if name not in ("train", "test"):
            raise ValueError(f"DatasetIndex: split must be 'train', 'test' or 'all', got {name!r}")
        return list(getattr(self, name))


class Clip:
    """A clip folder, read lazily: nothing but meta.json is read until asked; nothing is cached.

    Args:
        folder: the clip folder (containing meta.json).
        meta: its ClipMeta (read from meta.json when None).
    """

    def __init__(self, folder: str | os.PathLike, meta: ClipMeta | None = None):
        self.folder = Path(folder)
        self.meta = meta if meta is not None else _read_meta(self.folder)

    def __repr__(self) -> str:
        meta = self.meta
        return (f"Clip({meta.clip_id!r}, identity={meta.identity!r}, frames={meta.frames}, "
                f"size={meta.size}, fps={meta.fps:g}, source={meta.source!r})")

    def path(self, name: str) -> Path:
        """The path of one of the clip's files, checked to exist."""
        path = self.folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"Clip {self.meta.clip_id!r}: '{path}' is missing; the clip is incomplete -- "
                "re-create it (synth / preprocess) or remove the folder and rebuild the index"
            )
        return path

    def frames(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Decode frames start .. stop-1 of video.mp4 -> (stop - start, H, W, 3) uint8 RGB."""
        from ..io.video_read import read_video

        total = self.meta.frames
        stop = total if stop is None else stop
        if not 0 <= start < stop <= total:
            raise ValueError(f"Clip {self.meta.clip_id!r}: frames [{start}, {stop}) are outside the "
                             f"clip's {total} frames")
        fps = self.meta.fps
        video = read_video(self.path(VIDEO_FILE), fps=fps, start_seconds=start / fps,
                           duration_seconds=(stop - start) / fps, with_audio=False)
        frames = video.frames
        if frames.shape[0] < stop - start:
            raise RuntimeError(
                f"Clip {self.meta.clip_id!r}: video.mp4 gave {frames.shape[0]} frames for "
                f"[{start}, {stop}); meta.json says {total} frames -- the video is damaged or the "
                "metadata is wrong; re-create the clip"
            )
        return frames[: stop - start]

    def wav_info(self, name: str = AUDIO_FILE) -> WavInfo:
        """The checked header of one of the clip's wav files (rate, channels, bit depth, length)."""
        return wav_info(self.path(name), f"Clip {self.meta.clip_id!r}")

    def audio_span(self, start: int, count: int, name: str = AUDIO_FILE) -> torch.Tensor:
        """Samples start .. start+count-1 of a wav file at meta.sample_rate -> (C, count) float32; zeros past
        the end.

        Reads only that span (the wav header gives the offset), so memory stays at the window. 8/16/24/32-bit
        PCM and float files are read; a file at another rate than meta.sample_rate is resampled (a warning
        names the clip once), never read as if it had the clip's rate.
        """
        if start < 0 or count < 0:
            raise ValueError(f"Clip.audio_span: need start >= 0 and count >= 0, got {start}, {count}")
        path = self.path(name)
        info = self.wav_info(name)
        rate = self.meta.sample_rate
        if info.sample_rate == rate:
            return torch.from_numpy(read_wav_span(path, info, start, count))
        key = (str(path), info.sample_rate)
        if key not in _RATE_WARNED:
            _RATE_WARNED.add(key)
            logger.warning("Clip %r: '%s' is %s but meta.json says %d Hz; resampling it to %d Hz (convert the "
                           "file to save this work)", self.meta.clip_id, name, info.description, rate, rate)
        # read the matching span of the file with a margin, from a sample that lands on an output sample
        step = info.sample_rate // math.gcd(info.sample_rate, rate)  # file samples per whole output step
        margin = 64
        first = max(0, (start - margin) * info.sample_rate // rate) // step * step
        last = -(-(start + count + margin) * info.sample_rate // rate)
        span = torch.from_numpy(read_wav_span(path, info, first, last - first))
        resampled = resample(span, info.sample_rate, rate)
        offset = start - first * rate // info.sample_rate
        out = torch.zeros(info.channels, count)
        piece = resampled[:, offset:offset + count]
        out[:, :piece.shape[1]] = piece
        end = -(-info.frames * rate // info.sample_rate)  # zeros past the end, as for a file at the clip's rate
        if start + count > end:
            out[:, max(0, end - start):] = 0.0
        return out

    @property
    def audio(self) -> torch.Tensor:
        """The whole of audio.wav -> (C, S) float32 at meta.sample_rate (read on every access)."""
        return self.read_wav(AUDIO_FILE)

    def read_wav(self, name: str) -> torch.Tensor:
        """A whole wav file of the clip (audio.wav, vocals.wav, ...) -> (C, S) float32 at meta.sample_rate."""
        info = self.wav_info(name)
        return self.audio_span(0, -(-info.frames * self.meta.sample_rate // info.sample_rate), name)

    @property
    def coeffs(self) -> dict[str, torch.Tensor] | None:
        """coeffs.safetensors as a dict (exp, angle, trans: (T, D); id, tex, gamma: (D,) or (T, D)), or
        None for clips without coefficients."""
        if not self.meta.has_coeffs:
            return None
        return self.tensors(COEFFS_FILE)

    @property
    def landmarks(self) -> dict[str, torch.Tensor] | None:
        """landmarks.safetensors as a dict of per-frame tensors (landmarks (T, 68, 2); real clips: box (T, 4)
        and what the preprocessor adds) or None when the clip has no landmarks file."""
        if not (self.folder / LANDMARKS_FILE).is_file():
            return None
        return self.tensors(LANDMARKS_FILE)

    def tensors(self, name: str, rows: slice | None = None) -> dict[str, torch.Tensor]:
        """Read a safetensors file of the clip; with rows, only those rows of the per-frame (T, ...) tensors.

        Returned whole: tensors whose first axis is not T, and the per-clip vectors named in PER_CLIP_KEYS
        (id, tex, gamma, beat_times, downbeats) when they are one-dimensional.
        """
        from safetensors import SafetensorError, safe_open

        path = self.path(name if name.endswith(".safetensors") else f"{name}.safetensors")
        out = {}
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    part = handle.get_slice(key)
                    shape = part.get_shape()
                    per_clip = len(shape) == 1 and key in PER_CLIP_KEYS
                    if rows is not None and len(shape) >= 1 and shape[0] == self.meta.frames and not per_clip:
                        out[key] = part[rows]
                    else:
                        out[key] = handle.get_tensor(key)
        except SafetensorError as error:
            raise ValueError(f"Clip {self.meta.clip_id!r}: '{path}' is damaged ({error}); re-create "
                             "the clip") from error
        return out


def write_clip(
    folder: str | os.PathLike,
    *,
    frames: torch.Tensor | np.ndarray,
    fps: float,
    audio: torch.Tensor,
    sample_rate: int,
    meta: ClipMeta,
    coeffs: dict[str, torch.Tensor] | None = None,
    landmarks: dict[str, torch.Tensor] | None = None,
    stems: dict[str, torch.Tensor] | None = None,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    overwrite: bool = False,
    crf: int = 18,
    progress: Progress | None = None,
) -> Path:
    """Write one clip folder atomically (into a temporary sibling, then renamed).

    Args:
        folder: the clip folder to create; its name must equal meta.clip_id.
        frames: (T, H, W, 3) uint8 RGB, H == W == meta.size, T == meta.frames.
        fps: frames per second (== meta.fps).
        audio: (C, S) float in [-1, 1], the mix: muxed into video.mp4 as is (AAC) and written to audio.wav
            as mono at 16 kHz.
        sample_rate: rate of `audio` in Hz.
        meta: the clip's ClipMeta (meta.sample_rate must be 16000; has_coeffs must match `coeffs`).
        coeffs: {"exp": (T, 64), "angle": (T, 3), "trans": (T, 3), "id": (80,) | (T, 80),
            "tex": (80,) | (T, 80), "gamma": (27,) | (T, 27)} or None (real clips).
        landmarks: per-frame tensors {"landmarks": (T, 68, 2) pixels, "box": (T, 4), ...} (any keys, each
            (T, ...)) or None.
        stems: optional {name: (C, S) float at sample_rate}, written as <name>.wav, 16 kHz mono
            (e.g. "vocals": the separation ground truth when a backing is mixed in).
        tensors: optional {name: {key: tensor}}, written as <name>.safetensors (e.g. the song timeline).
        overwrite: replace an existing folder (else an existing folder is an error).
        crf: H.264 quality (0 lossless .. 51; 18 is visually lossless).
        progress: optional callback (done, total) over the video frames; may raise to stop (no folder is
            left behind).

    Returns:
        The clip folder.
    """
    from safetensors.torch import save_file

    from ..audio.io import resample, to_mono, write_wav
    from ..io.video_write import write_video

    folder = Path(folder)
    # 1. check everything before writing anything
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"write_clip: frames must be (T, H, W, 3) uint8, got {tuple(frames.shape)} "
                         f"{frames.dtype}")
    count, height, width = frames.shape[:3]
    if folder.name != meta.clip_id:
        raise ValueError(f"write_clip: folder name {folder.name!r} must equal meta.clip_id {meta.clip_id!r}")
    if (count, height, width) != (meta.frames, meta.size, meta.size) or float(fps) != meta.fps:
        raise ValueError(
            f"write_clip({meta.clip_id}): frames {tuple(frames.shape)} at {fps} fps do not match meta "
            f"(frames={meta.frames}, size={meta.size}, fps={meta.fps}); frames must be square"
        )
    if meta.sample_rate != AUDIO_SAMPLE_RATE:
        raise ValueError(f"write_clip({meta.clip_id}): meta.sample_rate must be {AUDIO_SAMPLE_RATE}, "
                         f"got {meta.sample_rate}")
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise ValueError(f"write_clip({meta.clip_id}): audio must be (C, S) with S > 0, got "
                         f"{tuple(audio.shape)}")
    if meta.has_coeffs != (coeffs is not None):
        raise ValueError(f"write_clip({meta.clip_id}): meta.has_coeffs={meta.has_coeffs} but coeffs "
                         f"{'given' if coeffs is not None else 'missing'}")
    if coeffs is not None:
        _check_coeffs(coeffs, count, meta.clip_id)
    if landmarks is not None:
        marks = landmarks.get("landmarks")
        if marks is not None and tuple(marks.shape) != (count, 68, 2):
            raise ValueError(f"write_clip({meta.clip_id}): landmarks['landmarks'] must be ({count}, 68, 2), "
                             f"got {tuple(marks.shape)}")
        uneven = {key: tuple(value.shape) for key, value in landmarks.items()
                  if value.ndim == 0 or value.shape[0] != count}
        if uneven:
            raise ValueError(f"write_clip({meta.clip_id}): every landmarks tensor is per frame ({count}, ...); "
                             f"got {uneven}")
    extra_files = {f"{name}.wav" for name in stems or {}} | {f"{name}.safetensors" for name in tensors or {}}
    if extra_files & _RESERVED:
        raise ValueError(f"write_clip({meta.clip_id}): stem/tensor names {sorted(extra_files & _RESERVED)} "
                         "clash with the clip's own files")
    if folder.exists() and not overwrite:
        raise FileExistsError(f"write_clip: '{folder}' exists; pass overwrite=True (--overwrite) to "
                              "replace it")

    # 2. write into a temporary sibling folder, moved into place at the end (atomic_folder)
    with atomic_folder(folder) as temporary:
        audio = audio.detach().float().cpu()
        write_video(temporary / VIDEO_FILE, frames, fps, audio=audio, sample_rate=sample_rate, crf=crf,
                    progress=progress)
        write_wav(temporary / AUDIO_FILE, resample(to_mono(audio), sample_rate, AUDIO_SAMPLE_RATE),
                  AUDIO_SAMPLE_RATE)
        for name, stem in (stems or {}).items():
            stem = stem.detach().float().cpu()
            write_wav(temporary / f"{name}.wav", resample(to_mono(stem), sample_rate, AUDIO_SAMPLE_RATE),
                      AUDIO_SAMPLE_RATE)
        if coeffs is not None:
            save_file(_contiguous(coeffs), str(temporary / COEFFS_FILE))
        if landmarks is not None:
            save_file(_contiguous(landmarks), str(temporary / LANDMARKS_FILE))
        for name, group in (tensors or {}).items():
            save_file(_contiguous(group), str(temporary / f"{name}.safetensors"))
        (temporary / META_FILE).write_text(meta.to_json())
    return folder


def read_clip(folder: str | os.PathLike) -> Clip:
    """Open a clip folder lazily; checks that meta.json, video.mp4 and audio.wav (and coeffs.safetensors
    when meta.has_coeffs) exist."""
    clip = Clip(folder)
    clip.path(VIDEO_FILE)
    clip.path(AUDIO_FILE)
    if clip.meta.has_coeffs:
        clip.path(COEFFS_FILE)
    return clip


def scan_clips(root: str | os.PathLike) -> list[ClipMeta]:
    """The ClipMeta of every clip folder directly under root (folders with a meta.json), sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"scan_clips: '{root}' is not a folder")
    metas = [_read_meta(path.parent) for path in sorted(root.glob(f"*/{META_FILE}"))
             if not path.parent.name.startswith(".")]
    return sorted(metas, key=lambda meta: meta.clip_id)


def split_identities(identities, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split identities into (train, test): a seeded shuffle of the sorted names, the first
    round(n * test_fraction) go to test (at least one when there are two or more identities)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"split_identities: test_fraction must be in [0, 1), got {test_fraction}")
    names = sorted(set(identities))
    count = int(math.floor(len(names) * test_fraction + 0.5))
    if test_fraction > 0 and len(names) >= 2:
        count = max(count, 1)
    order = np.random.default_rng(seed).permutation(len(names))
    test = sorted(names[i] for i in order[:count])
    train = sorted(names[i] for i in order[count:])
    return train, test


def write_index(root: str | os.PathLike, metas: list[ClipMeta], *, test_fraction: float = 0.2,
                seed: int = 0) -> Path:
    """Write root/index.json: every clip's ClipMeta and a train/test split BY IDENTITY (4:1 by default),
    deterministic in (identities, test_fraction, seed). Written to a temporary name and renamed.

    Args:
        root: the dataset folder (clip folders are root/<clip_id>).
        metas: the clips (e.g. scan_clips(root)); clip ids must be unique.
        test_fraction: share of identities held out for testing (0.2 = the SINGER paper's 4:1).
        seed: seed of the identity shuffle.
    """
    root = Path(root)
    ids = [meta.clip_id for meta in metas]
    if len(set(ids)) != len(ids):
        duplicates = sorted({name for name in ids if ids.count(name) > 1})
        raise ValueError(f"write_index: clip ids must be unique, repeated: {duplicates[:5]}")
    if not metas:
        raise ValueError(f"write_index: no clips to index in '{root}'")
    train_ids, test_ids = split_identities([m.identity for m in metas], test_fraction=test_fraction,
                                           seed=seed)
    if not test_ids and test_fraction > 0:
        logger.warning("write_index: only one identity in '%s'; every clip is in the train split", root)
    test_set = set(test_ids)
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "train_identities": train_ids,
        "test_identities": test_ids,
        "train": sorted(m.clip_id for m in metas if m.identity not in test_set),
        "test": sorted(m.clip_id for m in metas if m.identity in test_set),
        "clips": {m.clip_id: m.to_dict() for m in sorted(metas, key=lambda m: m.clip_id)},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / INDEX_FILE
    handle, temporary = tempfile.mkstemp(prefix=f".{INDEX_FILE}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(index, stream, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_index(root: str | os.PathLike) -> DatasetIndex:
    """Read root/index.json -> DatasetIndex; a clear error if root is not a dataset."""
    root = Path(root)
    path = root / INDEX_FILE
    if not path.is_file():
        hint = (" (it holds clip folders: run write_index(root, scan_clips(root)) to index them)"
                if root.is_dir() and any(root.glob(f"*/{META_FILE}")) else "")
        raise FileNotFoundError(
            f"read_index: '{root}' is not a SINGER dataset: no {INDEX_FILE}{hint}; create one with "
            "`python -m singer_core.data synth --out DIR` or `python -m singer_core.data preprocess`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"read_index: '{path}' is not valid JSON ({error})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ValueError(f"read_index: '{path}' is not a {FORMAT_NAME} index (format "
                         f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"read_index: '{path}' has version {data.get('version')!r}; this code reads "
                         f"version {FORMAT_VERSION}")
    clips = {name: ClipMeta.from_dict(meta, f"read_index: '{path}' clip {name!r}")
             for name, meta in data["clips"].items()}
    for name, meta in clips.items():  # clip folders are root/<name>: a name must be a folder inside root
        if name != meta.clip_id:
            raise ValueError(f"read_index: '{path}' lists clip {name!r} with clip_id {meta.clip_id!r}; a clip "
                             "name must be its folder inside the dataset (no paths like '../x'); rebuild the "
                             "index with write_index(root, scan_clips(root))")
    for split in ("train", "test"):
        unknown = [name for name in data[split] if name not in clips]
        if unknown:
            raise ValueError(f"read_index: '{path}' {split} lists clips without metadata: {unknown[:5]}")
    return DatasetIndex(train=sorted(data["train"]), test=sorted(data["test"]), clips=clips, root=root,
                        seed=int(data.get("seed", 0)), test_fraction=float(data.get("test_fraction", 0.2)))


def full_coeffs(coeffs: dict[str, torch.Tensor], frames: int | None = None) -> torch.Tensor:
    """A coefficient dict (as stored) -> (T, 257) in the Deep3DFaceRecon layout (id, exp, tex, angle,
    gamma, trans); per-clip entries are repeated over the T frames (T from "exp" unless given)."""
    frames = coeffs["exp"].shape[0] if frames is None else frames
    parts = []
    for name, width in (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans", 3)):
        value = coeffs[name].float()
        parts.append(value.expand(frames, width) if value.ndim == 1 else value)
    return torch.cat(parts, dim=1)


def _read_meta(folder: Path) -> ClipMeta:
    path = folder / META_FILE
    if not path.is_file():
        index = folder.parent / INDEX_FILE
        if index.is_file() and f'"{folder.name}"' in index.read_text(errors="replace"):
            missing = "its folder" if not folder.exists() else f"its {META_FILE}"
            raise FileNotFoundError(f"read_clip: clip {folder.name!r} is listed in '{index}' but {missing} "
                                    f"'{folder if not folder.exists() else path}' is missing (deleted or moved); "
                                    "restore it, or rebuild index.json from the clips that are there: "
                                    "write_index(root, scan_clips(root))")
        raise FileNotFoundError(f"read_clip: '{folder}' is not a clip folder (no {META_FILE})")
    try:
        meta = ClipMeta.from_dict(json.loads(path.read_text()), f"read_clip: '{path}'")
    except json.JSONDecodeError as error:
        raise ValueError(f"read_clip: '{path}' is not valid JSON ({error})") from error
    if meta.clip_id != folder.name:
        raise ValueError(f"read_clip: '{path}' says clip_id {meta.clip_id!r} but the folder is "
                         f"{folder.name!r}; rename one of them")
    return meta


def _check_coeffs(coeffs: dict[str, torch.Tensor], frames: int, clip_id: str) -> None:
    known = PER_FRAME_COEFFS | PER_CLIP_COEFFS
    if set(coeffs) != set(known):
        raise ValueError(f"write_clip({clip_id}): coeffs must have exactly the keys {sorted(known)}, got "
                         f"{sorted(coeffs)}")
    for name, width in known.items():
        shape = tuple(coeffs[name].shape)
        allowed = [(frames, width)] + ([(width,)] if name in PER_CLIP_COEFFS else [])
        if shape not in allowed:
            raise ValueError(f"write_clip({clip_id}): coeffs[{name!r}] must be one of {allowed}, got {shape}")
        if not torch.isfinite(coeffs[name]).all():
            raise ValueError(f"write_clip({clip_id}): coeffs[{name!r}] contains NaN or infinity")


def _contiguous(group: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().contiguous() for key, value in group.items()}
