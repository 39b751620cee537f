"""A trained SINGER model folder (the `singer` trainer's ``out/final``) loaded for inference: the typed
``singer_training.json`` beside the weights, the loaded stack (SingerNet + VAE + what sampling needs), and the
song's audio features for it.

Folder layout (read by ComfyUI's SINGER model loader and :func:`load_model_folder`)::

    config.json, model.safetensors    SingerNet.save_pretrained
    vae/                              diffusers AutoencoderKL folder (absent: `singer_training.json` names one)
    singer_training.json              SingerTrainingInfo: {"audio": {"encoder": "mel-80", "layers": "all", ...},
                                       "frames": 8, "motion_frames": 2, "image_size": 64, "vae": "vae",
                                       "face_model": null, "schedule": {...NoiseSchedule...}, ...}

The audio description lets a loader rebuild the audio encoder without downloads (``mel-80`` has no weights).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..audio.features import SingerAudioFeatures, check_features, same_encoder
from ..io.checkpoint import atomic_write_bytes
from ..ops.noise_schedule import NoiseSchedule
from ..progress import Progress
from .net import SingerNet

logger = logging.getLogger(__name__)


TRAINING_INFO = "singer_training.json"  # written by the singer trainer next to config.json / model.safetensors
VAE_DIR = "vae"
DEFAULT_AUDIO_ENCODER = "facebook/wav2vec2-base-960h"  # what a folder without singer_training.json is assumed to use


# ---------------------------------------------------------------------------------------- singer_training.json

@dataclasses.dataclass(frozen=True)
class TrainingAudio:
    """How the network's audio was encoded in training (the trainer's AudioSpec and window radius)."""

    encoder: str  # "mel-80" (no weights) or a wav2vec2 hub id / folder / file
    layers: str = "all"  # "all" or "last" transformer layers (ignored by mel-80)
    reduce: str = "flatten"  # rows -> vector in the trainer's feature cache: "flatten", "mean_rows", "last_row"
    source: str = "audio.wav"  # the clip's wav that was encoded ("audio.wav" = the mix, "vocals.wav" = the voice)
    models_dir: str | None = None  # folder the trainer searched for encoder weights (None: the HF cache)
    radius: int = 0  # audio frames on each side of a video frame in its audio window

    def __post_init__(self) -> None:
        if self.layers not in ("all", "last"):
            raise ValueError(f"audio.layers must be 'all' or 'last', got {self.layers!r}")
        if self.radius < 0:
            raise ValueError(f"audio.radius must be >= 0, got {self.radius}")


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Sampling a folder recommends (what 0 = auto means on ComfyUI's Sample SINGER Video)."""

    steps: int  # DDIM steps
    cfg: float  # classifier-free guidance scale (1 = no guidance)

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.cfg >= 0.0:
            raise ValueError(f"sampling needs steps >= 1 and cfg >= 0, got steps={self.steps}, cfg={self.cfg}")


@dataclasses.dataclass(frozen=True)
class SingerTrainingInfo:
    """The ``singer_training.json`` of a model folder: what loading and sampling the network needs beyond its
    config.json. Written by the singer trainer's export (and the demo's tiny stack), read by
    :func:`load_model_folder` and the ComfyUI loader / sampler. Fields without a default are required.
    """

    task: str  # what wrote the folder: "singer" (the trainer) or "random (untrained)"
    vae: str  # VAE: a folder relative to the model folder ("vae"), an absolute folder, or a hub id
    image_size: int  # square frame side in pixels the network was trained on
    frames: int  # frames per generated clip
    motion_frames: int  # preceding frames fed through the reference UNet with the reference image
    audio: TrainingAudio  # how the audio features were made
    schedule: NoiseSchedule  # the training noise schedule (sampling walks it)
    face_model: str | None = None  # ArcFace .onnx the face embedding came from (None: zero embedding)
    sampling: SamplingSettings | None = None  # recommended steps / cfg (None: the loader's defaults)

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.frames < 1 or self.motion_frames < 0:
            raise ValueError(f"need image_size >= 1, frames >= 1, motion_frames >= 0, got {self.image_size}, "
                             f"{self.frames}, {self.motion_frames}")

    def to_json(self) -> str:
        """The file's text (sorted keys, indent 2; ``sampling`` is left out when None)."""
        data = dataclasses.asdict(self)
        data["schedule"] = json.loads(self.schedule.to_json())
        if self.sampling is None:
            del data["sampling"]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = TRAINING_INFO) -> SingerTrainingInfo:
        """Parse the file's text; ValueError names the file, the field and what it must be."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"'{source}' is not valid JSON ({error}); {_FIX}") from error
        return _parse(cls, data, source, "")

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/singer_training.json`` (atomically). Returns its path."""
        return atomic_write_bytes(Path(folder) / TRAINING_INFO, self.to_json().encode(), who="SingerTrainingInfo")

    @classmethod
    def read(cls, folder: str | os.PathLike) -> SingerTrainingInfo:
        """Read ``folder/singer_training.json``; FileNotFoundError when absent, ValueError when damaged."""
        path = Path(folder) / TRAINING_INFO
        if not path.is_file():
            raise FileNotFoundError(f"'{folder}' has no {TRAINING_INFO}; {_FIX}")
        return cls.from_json(path.read_text(), source=str(path))


_FIX = "re-export the model (python -m singer_core.train singer --out DIR writes DIR/final) or fix the file"
# field type names (the annotations, as strings) -> (Python types accepted, what the message says)
_SCALARS = {"str": ((str,), "a string"), "int": ((int,), "an integer"), "float": ((int, float), "a number")}
_NESTED = {"TrainingAudio": TrainingAudio, "SamplingSettings": SamplingSettings}


def _parse(cls, data, source: str, prefix: str):
    """One dataclass from a JSON object, every field checked by its annotation (nested dataclasses by name)."""
    where = prefix.rstrip(".") or "the file"
    if not isinstance(data, Mapping):
        raise ValueError(f"'{source}': {where} must be a JSON object, got {type(data).__name__}; {_FIX}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"'{source}': unknown keys {[prefix + key for key in unknown]} in {where}; known keys "
                         f"are {sorted(fields)}; remove them, or re-export the model with this version of the pack")
    missing = [prefix + name for name, field in fields.items() if name not in data
               and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"'{source}': missing {missing}; {_FIX}")
    values = {}
    for name, value in data.items():
        kind = fields[name].type
        base = kind.removesuffix(" | None")
        if value is None:
            if base == kind:
                raise ValueError(f"'{source}': {prefix}{name} must not be null; {_FIX}")
            values[name] = None
        elif base == "NoiseSchedule":
            try:
                values[name] = NoiseSchedule.from_json(json.dumps(value))
            except (TypeError, ValueError) as error:
                raise ValueError(f"'{source}': {prefix}{name} is not a noise schedule ({error}); {_FIX}") from error
        elif base in _NESTED:
            values[name] = _parse(_NESTED[base], value, source, f"{prefix}{name}.")
        else:
            accepted, said = _SCALARS[base]
            if isinstance(value, bool) or not isinstance(value, accepted):
                said += " or null" if base != kind else ""
                raise ValueError(f"'{source}': {prefix}{name} must be {said}, got {value!r}; {_FIX}")
            values[name] = float(value) if base == "float" else value
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"'{source}': {error}; {_FIX}") from error


def read_training_info(folder: str | os.PathLike) -> SingerTrainingInfo | None:
    """The typed ``singer_training.json`` of a model folder, or None when the folder has none."""
    if not (Path(folder) / TRAINING_INFO).is_file():
        return None
    return SingerTrainingInfo.read(folder)


# sampling of the tiny mel-80 stacks (make demo): 20 DDIM steps, no guidance (their short training leaves the
# unconditional branch weak); stored in their singer_training.json, and assumed for tiny folders written before
TINY_SAMPLING = SamplingSettings(steps=20, cfg=1.0)


# ---------------------------------------------------------------------------------------- the loaded stack

@dataclasses.dataclass
class SingerVideoModel:
    """A loaded SINGER stack: what the ComfyUI loader hands to the sampler and what the demo renders with.

    net: SingerNet; vae: diffusers AutoencoderKL; face_model_path: ArcFace .onnx or None (zero identity
    embedding); audio_encoder: the encoder the net was trained with ("mel-80" or a wav2vec2 hub id / folder);
    audio_layers: "all" or "last"; clip_frames / motion_frames: clip length and motion frames to sample with;
    schedule: the training noise schedule; source: where it came from (for messages).
    """

    net: SingerNet
    vae: object
    face_model_path: Path | None = None
    audio_encoder: str = DEFAULT_AUDIO_ENCODER
    audio_layers: str = "all"
    clip_frames: int = 16
    motion_frames: int = 2
    schedule: NoiseSchedule = dataclasses.field(default_factory=NoiseSchedule)
    source: str = ""

    def __repr__(self) -> str:
        config = self.net.config
        return (f"SingerVideoModel({self.source!r}, latents {config.sample_size}, audio {self.audio_encoder}, "
                f"clip {self.clip_frames}+{self.motion_frames})")

    @property
    def image_size(self) -> int:
        """Side in pixels of the square the network generates (latent side x VAE downscale)."""
        from .vae import vae_downscale

        return self.net.config.sample_size * vae_downscale(self.vae)

    def builtin_audio_encoder(self):
        """The audio encoder when it needs no weights (mel-80), else None (connect a loaded one)."""
        if self.audio_encoder == MEL_ENCODER_NAME:
            from ..audio.encoders import MelEncoder

            return MelEncoder()
        return None

    def prepare_features(self, features: SingerAudioFeatures, who: str = "SingerVideoModel") -> SingerAudioFeatures:
        """Check features against the network's audio projection.

        features: (F, R, D) per video frame: transformer "layers", or for a net trained on mel-80 windows their
        (16, 80) rows (the pipeline accepts those as they are).
        """
        config = self.net.config
        return check_features(features, who, trained_on=self.audio_encoder,
                              shape=(config.audio_blocks, config.audio_channels),
                              rows=None if same_encoder(features.encoder, MEL_ENCODER_NAME) else "layers")

    def pipeline(self):
        """A SingerPipeline over this model's parts (audio is given to it as features)."""
        from .pipeline import SingerPipeline

        return SingerPipeline.from_parts(self.net, self.vae, face_model_path=self.face_model_path,
                                         schedule=self.schedule, audio_encoder_name=self.audio_encoder)


def load_model_folder(folder: str | os.PathLike, *, vae=None, face_model_path: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SingerVideoModel:
    """Load a SINGER model folder (SingerNet.save_pretrained + vae/ + singer_training.json).

    folder: the model folder; vae: an AutoencoderKL or a VAE folder / hub id to use instead of the folder's;
    face_model_path: ArcFace .onnx (default: the one named in singer_training.json, if it exists);
    device, dtype: where to put the network. Without singer_training.json the VAE is folder/vae and the
    rest takes the SingerVideoModel defaults. Raises FileNotFoundError naming what is missing, ValueError
    naming a damaged singer_training.json field.
    """
    from .vae import load_vae

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"load_model_folder: '{folder}' needs config.json and model.safetensors "
                                "(SingerNet.save_pretrained, or the singer trainer's out/final)")
    try:
        info = read_training_info(folder)
    except ValueError as error:
        raise ValueError(f"load_model_folder: {error}") from error
    net = SingerNet.from_pretrained(folder, device=device, dtype=dtype)
    if vae is None or isinstance(vae, (str, os.PathLike)):
        source = vae if vae is not None else (info.vae if info is not None else VAE_DIR)
        path = Path(source).expanduser()
        if not path.is_absolute() and (folder / path).exists():
            path = folder / path
        if not path.exists() and vae is None:
            raise FileNotFoundError(f"load_model_folder: '{folder}' has no VAE: put a diffusers AutoencoderKL "
                                    f"folder at '{folder / VAE_DIR}' (config.json + diffusion_pytorch_model."
                                    "safetensors) or choose a VAE")
        vae = load_vae(path if path.exists() else source, device=device)
    face = face_model_path if face_model_path is not None else (info.face_model if info is not None else None)
    if face is not None and not Path(face).is_file():
        logger.warning("load_model_folder: face model '%s' not found; using the zero identity embedding", face)
        face = None
    model = SingerVideoModel(net=net, vae=vae, face_model_path=None if face is None else Path(face),
                             source=str(folder))
    if info is not None:
        model = dataclasses.replace(model, audio_encoder=info.audio.encoder, audio_layers=info.audio.layers,
                                    clip_frames=info.frames, motion_frames=info.motion_frames,
                                    schedule=info.schedule)
    return model


def encode_song(model: SingerVideoModel, waveform: torch.Tensor, sample_rate: int, fps: float, *, encoder=None,
                progress: Progress | None = None) -> SingerAudioFeatures:
    """Per-frame features of a song for `model`, ready for its pipeline.

    waveform: (C, T) or (T,) float; sample_rate: its Hz; fps: video frame rate; encoder: an AudioEncoder /
    MelEncoder (default: the model's built-in one; required for wav2vec2 models); progress: (done, total).
    """
    encoder = encoder if encoder is not None else model.builtin_audio_encoder()
    if encoder is None:
        raise ValueError(f"encode_song: this model needs the '{model.audio_encoder}' audio encoder; load it "
                         "(singer_core.audio.encoder_loading.load_audio_encoder) and pass encoder=")
    waveform = torch.as_tensor(waveform, dtype=torch.float32)
    waveform = waveform[None] if waveform.dim() == 1 else waveform
    features = encoder.encode(waveform, int(sample_rate), fps, layers=model.audio_layers, progress=progress)
    return model.prepare_features(features, "encode_song")


__all__ = ["TINY_SAMPLING", "TRAINING_INFO", "VAE_DIR", "SamplingSettings", "SingerTrainingInfo",
           "SingerVideoModel", "TrainingAudio", "encode_song", "load_model_folder", "read_training_info"]
