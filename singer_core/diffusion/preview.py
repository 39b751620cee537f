"""A tiny SINGER stack for previews, the demo and tests: a SingerNet + VAE folder (what the `singer` trainer
exports) built on the CPU in seconds to minutes, loaded back as one model, and a singing video rendered with it.

Model folder layout (the `singer` task's ``out/final``, read by ComfyUI's SINGER model loader)::

    config.json, model.safetensors    SingerNet.save_pretrained
    vae/                              diffusers AutoencoderKL folder (absent: `singer_training.json` names one)
    singer_training.json              {"audio": {"encoder": "mel-80", "layers": "all", "radius": 0, ...},
                                       "frames": 8, "motion_frames": 2, "image_size": 64, "vae": "vae",
                                       "face_model": null, "schedule": {...NoiseSchedule...}, ...}

The audio description lets a loader rebuild the audio encoder without downloads (``mel-80`` has no weights).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..audio.features import SingerAudioFeatures
from ..io.checkpoint import atomic_folder
from ..ops.noise_schedule import NoiseSchedule
from .config import DiffusionConfig
from .net import SingerNet

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

MODEL_INFO = "singer_training.json"  # same name as singer_core.train.singer.TRAINING_INFO
VAE_DIR = "vae"
MEL_ENCODER = "mel-80"
# SynthSinger data of build_tiny_stack(small_data=True): 2 clips of 0.4 s (10 frames), enough for 4-frame samples
SMALL_DATA = {"synth_clips": 2, "synth_seconds": 0.4}
# sampling the tiny stack is rendered with (make demo): 20 DDIM steps, no guidance (its short training leaves the
# unconditional branch weak); stored in its singer_training.json as {"sampling": ...}
TINY_SAMPLING = {"steps": 20, "cfg": 1.0}


@dataclasses.dataclass
class SingerVideoModel:
    """A loaded SINGER stack: what the ComfyUI loader hands to the sampler and what render_preview runs.

    net: SingerNet; vae: diffusers AutoencoderKL; face_model_path: ArcFace .onnx or None (zero identity
    embedding); audio_encoder: the encoder the net was trained with ("mel-80" or a wav2vec2 hub id / folder);
    audio_layers: "all" or "last"; clip_frames / motion_frames: clip length and motion frames to sample with;
    schedule: the training noise schedule; source: where it came from (for messages).
    """

    net: SingerNet
    vae: object
    face_model_path: Path | None = None
    audio_encoder: str = "facebook/wav2vec2-base-960h"
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
        if self.audio_encoder == MEL_ENCODER:
            from ..audio.encoders import MelEncoder

            return MelEncoder()
        return None

    def prepare_features(self, features: SingerAudioFeatures, who: str = "SingerVideoModel") -> SingerAudioFeatures:
        """Check features against the network's audio projection.

        features: (F, R, D) per video frame: transformer "layers", or for a net trained on mel-80 windows their
        (16, 80) rows (the pipeline accepts those as they are).
        """
        config = self.net.config
        if (features.num_rows, features.width) != (config.audio_blocks, config.audio_channels):
            raise ValueError(f"{who}: the audio features are (frames, {features.num_rows}, {features.width}) from "
                             f"'{features.encoder}', but this model takes (frames, {config.audio_blocks}, "
                             f"{config.audio_channels}) from '{self.audio_encoder}'; encode the song with that "
                             "encoder (Load Audio Encoder)")
        if features.rows != "layers" and features.encoder != MEL_ENCODER:
            raise ValueError(f"{who}: features from '{features.encoder}' have rows={features.rows!r}; encode "
                             "with layers='all' (every transformer layer) for SINGER")
        return features

    def pipeline(self):
        """A SingerPipeline over this model's parts (audio is given to it as features)."""
        from .pipeline import SingerPipeline

        return SingerPipeline.from_parts(self.net, self.vae, face_model_path=self.face_model_path,
                                         schedule=self.schedule)


def read_model_info(folder: str | os.PathLike) -> dict:
    """The `singer_training.json` of a model folder ({} when absent)."""
    path = Path(folder) / MODEL_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"read_model_info: '{path}' is not valid JSON ({error}); re-export the model") from error
    if not isinstance(info, dict):
        raise ValueError(f"read_model_info: '{path}' must hold a JSON object")
    return info


def load_model_folder(folder: str | os.PathLike, *, vae=None, face_model_path: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SingerVideoModel:
    """Load a SINGER model folder (SingerNet.save_pretrained + vae/ + singer_training.json).

    folder: the model folder; vae: an AutoencoderKL or a VAE folder / hub id to use instead of the folder's;
    face_model_path: ArcFace .onnx (default: the one named in singer_training.json, if it exists);
    device, dtype: where to put the network. Raises FileNotFoundError naming what is missing.
    """
    from .vae import load_vae

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"load_model_folder: '{folder}' needs config.json and model.safetensors "
                                "(SingerNet.save_pretrained, or the singer trainer's out/final)")
    info = read_model_info(folder)
    net = SingerNet.from_pretrained(folder, device=device, dtype=dtype)
    if vae is None or isinstance(vae, (str, os.PathLike)):
        source = vae if vae is not None else info.get("vae") or VAE_DIR
        path = Path(source).expanduser()
        if not path.is_absolute() and (folder / path).exists():
            path = folder / path
        if not path.exists() and vae is None:
            raise FileNotFoundError(f"load_model_folder: '{folder}' has no VAE: put a diffusers AutoencoderKL "
                                    f"folder at '{folder / VAE_DIR}' (config.json + diffusion_pytorch_model."
                                    "safetensors) or choose a VAE")
        vae = load_vae(path if path.exists() else source, device=device)
    face = face_model_path if face_model_path is not None else info.get("face_model")
    if face is not None and not Path(face).is_file():
        logger.warning("load_model_folder: face model '%s' not found; using the zero identity embedding", face)
        face = None
    audio = info.get("audio") or {}
    schedule = NoiseSchedule.from_json(json.dumps(info["schedule"])) if info.get("schedule") else NoiseSchedule()
    return SingerVideoModel(net=net, vae=vae, face_model_path=None if face is None else Path(face),
                            audio_encoder=str(audio.get("encoder", "facebook/wav2vec2-base-960h")),
                            audio_layers=str(audio.get("layers", "all")),
                            clip_frames=int(info.get("frames", 16)), motion_frames=int(info.get("motion_frames", 2)),
                            schedule=schedule, source=str(folder))


def tiny_mel_config() -> DiffusionConfig:
    """DiffusionConfig.tiny() with the audio projection of mel-80 features: 1 x 16 x 80 per frame."""
    return dataclasses.replace(DiffusionConfig.tiny(), audio_seq_len=1, audio_blocks=16, audio_channels=80)




def _write_random_stack(tmp: Path, seed: int) -> None:
    """A seeded, untrained tiny SingerNet (mel-80 audio) + tiny VAE in the trainer's export layout."""
    from .vae import tiny_vae

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = SingerNet(tiny_mel_config())
    finally:
        torch.random.set_rng_state(state)
    net.save_pretrained(tmp / "net")
    for name in os.listdir(tmp / "net"):
        os.replace(tmp / "net" / name, tmp / name)
    (tmp / "net").rmdir()
    tiny_vae(seed).save_pretrained(tmp / VAE_DIR, safe_serialization=True)
    info = {"task": "random (untrained)", "vae": VAE_DIR, "image_size": 64, "frames": 8, "motion_frames": 2,
            "face_model": None, "audio": {"encoder": MEL_ENCODER, "layers": "all", "reduce": "flatten",
                                          "source": "audio.wav", "models_dir": None, "radius": 0},
            "schedule": json.loads(NoiseSchedule().to_json())}
    (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))


def build_tiny_stack(out_dir: str | os.PathLike, *, cache_dir: str | os.PathLike, steps: int | None = None,
                     progress: Progress | None = None, small_data: bool = False, trained: bool = True,
                     seed: int = 0) -> Path:
    """Write a tiny SINGER model folder that `load_model_folder` and ComfyUI's SINGER loader read.

    out_dir: the model folder to write (replaced as a whole, atomically);
    cache_dir: where the training runs, SynthSinger data and audio features are kept (reused between calls);
    steps: optimizer steps of the `vae` and of the `singer` run (None: their `tiny` presets, CPU minutes);
    progress: (done, total) over both runs' steps, may raise to stop (out_dir is then left untouched);
    small_data: 2 SynthSinger clips of 0.4 s instead of the presets' data (seconds on CPU, for tests);
    trained: False writes a seeded untrained stack (no trainer needed; instant);
    seed: training / initialisation seed. Returns out_dir.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    with atomic_folder(out_dir) as tmp:
        if trained:
            _train_stack(tmp, cache_dir, steps, progress, small_data, seed)
        else:
            _write_random_stack(tmp, seed)
            if progress is not None:
                progress(1, 1)
    return out_dir


def _train_stack(tmp: Path, cache_dir: Path, steps: int | None, progress: Progress | None, small_data: bool,
                 seed: int) -> None:
    from ..train.config import resolve_config
    from ..train.loop import train
    from ..train.singer import TRAINING_INFO, SingerTask, tiny_vae_data
    from ..train.vae import VAETask

    singer = dict(SMALL_DATA if small_data else {}, seed=seed)
    if steps is not None:
        singer.update(steps=int(steps), checkpoint_every=max(1, int(steps)), warmup_steps=0)
    singer_config = resolve_config(SingerTask, "tiny", singer)
    # the VAE the singer task would train for itself (its synth data, the VAE preset's architecture)
    vae = dict(tiny_vae_data(singer_config), seed=seed, steps=singer_config.vae_steps)
    if steps is not None:
        vae.update(steps=int(steps), checkpoint_every=max(1, int(steps)), warmup_steps=0)
    vae_config = resolve_config(VAETask, "tiny", vae)
    total = vae_config.steps + singer_config.steps

    def stage(offset: int):
        if progress is None:
            return None
        return lambda step, _total, _scalars: progress(offset + step, total)

    runs = tmp / ".runs"
    vae_final = train(VAETask, config=vae_config, out=runs / "vae", device="cpu", cache_dir=cache_dir,
                      quiet=True, progress=stage(0))
    singer_final = train(SingerTask, config=dataclasses.replace(singer_config, vae=str(vae_final)),
                         out=runs / "singer", device="cpu", cache_dir=cache_dir, quiet=True,
                         progress=stage(vae_config.steps))
    for entry in singer_final.iterdir():
        os.replace(entry, tmp / entry.name)
    os.replace(vae_final, tmp / VAE_DIR)
    info_path = tmp / TRAINING_INFO
    info = json.loads(info_path.read_text())
    info["vae"] = VAE_DIR
    info["sampling"] = dict(TINY_SAMPLING)  # what ComfyUI's Sample SINGER Video uses for steps / cfg = 0 (auto)
    info_path.write_text(json.dumps(info, indent=2, sort_keys=True))
    shutil.rmtree(runs)


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


def render_preview(model_dir: str | os.PathLike, image, song_waveform: torch.Tensor, sample_rate: int,
                   out_path: str | os.PathLike, *, progress: Progress | None = None, steps: int = 20,
                   guidance: float = 3.5, seed: int = 0, crop_ratio: float = 0.0, fps: float = 25.0,
                   vocals: torch.Tensor | None = None, landmarks=None, face_box=None) -> Path:
    """Render a singing video with a model folder and write it as an mp4 with the song.

    model_dir: a folder `load_model_folder` reads (e.g. from build_tiny_stack); image: (H, W, 3) uint8 or float
    0..1 RGB portrait; song_waveform: (C, T) or (T,) float in [-1, 1] (C = 1 or 2); sample_rate: its Hz;
    out_path: .mp4 to write (atomically: nothing is left when stopped); progress: (done, total) over
    steps x clips, may raise to stop; steps, guidance, seed: DDIM steps, CFG scale, noise seed;
    crop_ratio: 0 = the whole image (what the tiny model is trained on), else face box x ratio; fps: frame rate;
    vocals: (C, T) or (T,) isolated vocals at sample_rate to encode instead of the song (the video still
    carries the song); landmarks: (68, 2) portrait-pixel landmarks (a SynthSinger frame's: the face box, masks
    and identity come from them and no face detector is needed); face_box: (x, y, w, h) portrait pixels
    (else from the landmarks, else detected). Returns out_path. The video has ceil(seconds x fps) frames at the portrait's size.
    """
    from ..io.video import VideoWriter

    model = load_model_folder(model_dir)
    waveform = torch.as_tensor(song_waveform, dtype=torch.float32)
    waveform = waveform[None] if waveform.dim() == 1 else waveform
    features = encode_song(model, waveform if vocals is None else vocals, sample_rate, fps)
    audio = waveform if waveform.shape[0] <= 2 else waveform.mean(0, keepdim=True)
    # clips go to the encoder as they are decoded: memory stays flat in song length
    with VideoWriter(out_path, fps, sample_rate=int(sample_rate), audio_channels=audio.shape[0], crf=23,
                     preset="veryfast", pad_odd=True) as writer:
        writer.write_audio(audio.numpy())
        model.pipeline()(image, features=features, progress=progress, steps=steps, guidance=guidance, seed=seed,
                         landmarks=landmarks, face_box=face_box, crop_ratio=crop_ratio, clip_frames=model.clip_frames,
                         motion_frames=model.motion_frames, fps=fps, device="cpu", dtype="fp32",
                         frame_sink=lambda frames: writer.write((frames.clamp(0, 1) * 255.0).round().to(torch.uint8)))
    return Path(out_path)


__all__ = ["MODEL_INFO", "SingerVideoModel", "build_tiny_stack", "encode_song", "load_model_folder",
           "read_model_info", "render_preview", "tiny_mel_config"]
