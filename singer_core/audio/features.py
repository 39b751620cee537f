"""SINGER_AUDIO_FEATURES: per-video-frame audio features (Hallo's (F, 12, 768) wav2vec2 layers,
ER-NeRF's (F, 2, 1024) HuBERT steps, Wav2Lip's (F, 16, 80) mel windows) with their frame rate and
encoder, saved as one .safetensors file."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .frames import frame_windows

logger = logging.getLogger(__name__)

ROW_KINDS = ("layers", "steps")
FORMAT_NAME = "SINGER_AUDIO_FEATURES"  # safetensors metadata "format" of our files
FORMAT_VERSION = "1"
_FIELDS = ("fps", "encoder", "sample_rate", "num_samples", "rows")
_CHECK_ELEMENTS = 1 << 18  # elements per block when checking finiteness (no full-size temporaries)


@dataclasses.dataclass(frozen=True, eq=False)
class SingerAudioFeatures:
    """Audio features aligned to video frames.

    ``features[i]`` belongs to video frame i (time i / fps). ``rows`` says what the middle axis is:
    ``"layers"`` -- hidden states of transformer layers 1..L (Hallo: wav2vec2-base gives (F, 12, 768);
    a single row is the last layer) -- or ``"steps"`` -- sub-frame time steps (ER-NeRF: two 50 Hz
    HuBERT states per 25 fps frame, (F, 2, 1024); Wav2Lip: 16 mel frames per video frame, (F, 16, 80)).
    """

    features: torch.Tensor  # (F, R, D) float: F video frames, R rows per frame, D feature width
    fps: float  # video frames per second the features are aligned to
    encoder: str  # encoder id: hub id / folder or file name (e.g. "facebook/wav2vec2-base-960h") or "mel-80"
    sample_rate: int  # sample rate the encoder consumed (16000)
    num_samples: int  # length of the encoded audio in samples at sample_rate (including any padding)
    rows: str = "layers"  # what R means: "layers" (transformer layers 1..L) or "steps" (sub-frame steps)

    def __post_init__(self):
        features = self.features
        if not isinstance(features, torch.Tensor) or features.ndim != 3:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(
                f"SingerAudioFeatures: features must be a (frames, rows, width) tensor, got {shape}"
            )
        if not features.is_floating_point():
            raise ValueError(f"SingerAudioFeatures: features must be floating point, got {features.dtype}")
        if features.shape[0] < 1 or features.shape[1] < 1 or features.shape[2] < 1:
            raise ValueError(
                f"SingerAudioFeatures: features have an empty axis: shape {tuple(features.shape)}; "
                "encode at least one frame of audio"
            )
        block = max(1, _CHECK_ELEMENTS // (features.shape[1] * features.shape[2]))
        for start in range(0, features.shape[0], block):
            if not bool(torch.isfinite(features[start : start + block]).all()):
                raise ValueError(
                    "SingerAudioFeatures: features contain NaN or infinite values (from frame "
                    f"{start} on); the encoder overflowed -- run it in float32"
                )
        fps = self.fps
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"SingerAudioFeatures: fps must be a positive finite number, got {fps!r}")
        object.__setattr__(self, "fps", float(fps))
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"SingerAudioFeatures: encoder must be a non-empty name, got {self.encoder!r}")
        for name, minimum in (("sample_rate", 1), ("num_samples", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"SingerAudioFeatures: {name} must be an integer >= {minimum}, "
                                 f"got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.rows not in ROW_KINDS:
            raise ValueError(f"SingerAudioFeatures: rows must be one of {ROW_KINDS}, got {self.rows!r}")

    # ---- shape and time -------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        """Number of video frames F."""
        return self.features.shape[0]

    @property
    def num_rows(self) -> int:
        """R: layers or sub-frame steps per frame."""
        return self.features.shape[1]

    @property
    def width(self) -> int:
        """D: feature width."""
        return self.features.shape[2]

    @property
    def seconds(self) -> float:
        """Duration of the frames on the video timeline: F / fps."""
        return self.frames / self.fps

    @property
    def audio_seconds(self) -> float:
        """Duration of the encoded audio: num_samples / sample_rate."""
        return self.num_samples / self.sample_rate

    def __repr__(self) -> str:
        return (
            f"SingerAudioFeatures(frames={self.frames}, rows={self.num_rows} {self.rows}, "
            f"width={self.width}, fps={self.fps:g}, encoder={self.encoder!r}, dtype={self.features.dtype}, "
            f"device={self.features.device})"
        )

    # ---- derived views --------------------------------------------------------------------------
    def windows(self, radius: int = 2) -> torch.Tensor:
        """(F, 2 * radius + 1, R, D): each frame with its neighbours i-radius..i+radius, clamped at the
        ends (Hallo's audio window, radius 2 -> (F, 5, 12, 768) for wav2vec2-base)."""
        return frame_windows(self.features, radius)

    def select_rows(self, rows: int | slice | Sequence[int]) -> SingerAudioFeatures:
        """A copy keeping only some rows, the axis kept: ``select_rows(-1)`` -> the last layer (F, 1, D);
        ``select_rows(slice(4, 8))`` -> layers 5..8; ``select_rows([0, 11])``.

        Args:
            rows: an index, a slice or a sequence of indices into the R axis (negative allowed).
        """
        count = self.num_rows
        if isinstance(rows, slice):
            index = list(range(count))[rows]
        elif isinstance(rows, numbers.Integral) and not isinstance(rows, bool):
            index = [int(rows)]
        elif isinstance(rows, Sequence) and not isinstance(rows, str):
            index = [int(r) for r in rows]
        else:
            raise ValueError(f"select_rows: rows must be an int, a slice or a list of ints, got {rows!r}")
        bad = [r for r in index if not -count <= r < count]
        if bad or not index:
            raise ValueError(f"select_rows: rows {bad or rows!r} out of range for {count} {self.rows}")
        selected = self.features[:, torch.tensor(index, dtype=torch.long, device=self.features.device)]
        return dataclasses.replace(self, features=selected)

    def to(self, device=None, dtype: torch.dtype | None = None) -> SingerAudioFeatures:
        """A copy with the tensor moved to ``device`` and/or cast to floating ``dtype``."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"SingerAudioFeatures.to: dtype must be floating point, got {dtype}")
        return dataclasses.replace(self, features=self.features.to(device=device, dtype=dtype))

    # ---- files ----------------------------------------------------------------------------------
    def metadata(self) -> dict:
        """The scalar fields as a JSON-able dict."""
        return {name: getattr(self, name) for name in _FIELDS}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ONE .safetensors file: tensor "features" + the scalar fields as JSON in the metadata.

        Written to a temporary name in the same folder and renamed, so a crash leaves no partial file.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"SingerAudioFeatures.save: '{path}' must end in .safetensors")
        from ..io.fs import fs_error, remove_quietly

        metadata = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "fields": json.dumps(self.metadata())}
        who = "SingerAudioFeatures.save"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(handle)
        except OSError as error:
            raise fs_error(error, path, who=who) from error
        try:
            save_file({"features": self.features.detach().contiguous().cpu()}, temporary, metadata=metadata)
            os.replace(temporary, path)
        except OSError as error:
            remove_quietly(temporary)
            raise fs_error(error, path, who=who) from error
        except BaseException as error:
            remove_quietly(temporary)
            text = str(error)
            if "No space left" in text or "os error 28" in text:  # safetensors' Rust I/O error on a full disk
                import errno

                raise fs_error(OSError(errno.ENOSPC, "No space left on device"), path, who=who) from error
            if "Read-only file system" in text or "os error 30" in text:
                import errno

                raise fs_error(OSError(errno.EROFS, "Read-only file system"), path, who=who) from error
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> SingerAudioFeatures:
        """Read a file written by :meth:`save`; refuses other or damaged files with a clear message."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SingerAudioFeatures.load: '{path}' does not exist")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                keys = set(handle.keys())
                if metadata.get("format") != FORMAT_NAME or keys != {"features"}:
                    raise ValueError(
                        f"SingerAudioFeatures.load: '{path}' is a safetensors file but not saved "
                        f"audio features (format {metadata.get('format')!r}, tensors "
                        f"{sorted(keys)[:5]}); give a file written by SingerAudioFeatures.save"
                    )
                features = handle.get_tensor("features")
        except SafetensorError as error:
            raise ValueError(
                f"SingerAudioFeatures.load: '{path}' is not a valid safetensors file or is "
                f"truncated ({error}); save the features again"
            ) from error
        if metadata.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"SingerAudioFeatures.load: '{path}' has format version {metadata.get('version')!r}; "
                f"this code reads version {FORMAT_VERSION}"
            )
        try:
            fields = json.loads(metadata.get("fields", ""))
        except json.JSONDecodeError as error:
            raise ValueError(f"SingerAudioFeatures.load: '{path}' has damaged metadata ({error})") from error
        if not isinstance(fields, dict) or set(fields) != set(_FIELDS):
            got = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
            raise ValueError(f"SingerAudioFeatures.load: '{path}' metadata fields {got} != {sorted(_FIELDS)}")
        return cls(features=features.to(device), **fields)


# ---- the one check of features against a model -------------------------------------------------------------
def same_encoder(first: str, second: str) -> bool:
    """Whether two encoder ids name the same encoder: equal, or equal last path components ignoring case (the
    hub id "facebook/wav2vec2-base-960h" and a downloaded folder ".../wav2vec2-base-960h")."""

    def short(name: str) -> str:
        return name.rstrip("/\\").replace("\\", "/").split("/")[-1].lower()

    return first == second or short(first) == short(second)


def check_features(features: SingerAudioFeatures, who: str, *, model: str = "this model", encoder: str | None = None,
                   trained_on: str | None = None, fps: float | None = None, fps_tolerance: float = 1e-6,
                   fps_owner: str | None = None, shape: tuple[int, int] | None = None,
                   rows: str | None = None) -> SingerAudioFeatures:
    """Check song features against what a model takes: the pack's one such check, run once where features enter
    a model (MotionModel.audio_vector, SingerPipeline, the NeRF renderer, the lip-sync evaluation); the code
    behind that point trusts the features. Each expectation left None is not checked.

    Args:
        features: the SingerAudioFeatures to check.
        who: the caller, first word of every message ("MotionModel", "SingerPipeline", ...).
        model: how the messages name the model ("this model", "the network's AudioProj", "'subject'").
        encoder: the encoder id the model was trained on, enforced (compared with `same_encoder`).
        trained_on: the same, only named in the shape message (for models that accept any encoder of the
            right shape).
        fps: the frame rate the model was trained at / renders; fps_tolerance: the allowed difference;
            fps_owner: what the message puts before that rate (default "<model> was trained at"; e.g. "the
            video is at", "'subject' renders").
        shape: (rows, width) per frame the model takes.
        rows: the row layout the model takes, "layers" or "steps".

    Returns:
        `features`, unchanged.

    Raises:
        ValueError: what does not match (encoder, then fps, shape, row layout), what the model takes and how to
            encode the song again.
    """
    if not isinstance(features, SingerAudioFeatures):
        raise ValueError(f"{who}: expected SingerAudioFeatures (from Encode Audio or AudioEncoder.encode), got "
                         f"{type(features).__name__}")
    # 1. the encoder
    if encoder is not None and not same_encoder(features.encoder, encoder):
        raise ValueError(f"{who}: the audio features come from encoder '{features.encoder}', but {model} was "
                         f"trained on '{encoder}'; encode the audio with '{encoder}'")
    # 2. the frame rate
    if fps is not None and abs(features.fps - fps) > fps_tolerance:
        owner = fps_owner or f"{model} was trained at"
        raise ValueError(f"{who}: the audio features are at {features.fps:g} fps, but {owner} {fps:g} "
                         f"fps (the result would play {features.fps / fps:.2f}x too fast or slow against the song); "
                         f"encode the audio at fps={fps:g}")
    # 3. rows x width per frame
    if shape is not None and (features.num_rows, features.width) != tuple(shape):
        source = encoder or trained_on
        raise ValueError(f"{who}: the audio features have {features.num_rows} rows x {features.width} width per "
                         f"frame ((frames, {features.num_rows}, {features.width}) from '{features.encoder}'), but "
                         f"{model} takes {shape[0]} x {shape[1]} ((frames, {shape[0]}, {shape[1]})"
                         + (f" from '{source}'" if source else "") + "); encode the song with the encoder it was "
                         "trained with and the same layer settings (Load Audio Encoder, Encode Audio)")
    # 4. the row layout
    if rows is not None and features.rows != rows:
        fix = ("layers='all' (the hidden states of every transformer layer)" if rows == "layers" else
               "an encoder that gives sub-frame steps (mel-80 windows, or HuBERT with steps_per_frame)")
        raise ValueError(f"{who}: the audio features from '{features.encoder}' have rows={features.rows!r}, but "
                         f"{model} takes rows={rows!r}; encode with {fix}")
    return features
