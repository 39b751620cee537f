"""The tiny SINGER stack of ``make demo``, the ComfyUI workflow and the tests: a SingerNet + VAE model folder (the
`singer` trainer's export layout, see diffusion/model_folder.py) built on the CPU in seconds to minutes, and a
singing video rendered with it as an mp4 carrying the song.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..diffusion.config import DiffusionConfig
from ..diffusion.model_folder import (
    TINY_SAMPLING,
    VAE_DIR,
    SingerTrainingInfo,
    TrainingAudio,
    encode_song,
    load_model_folder,
)
from ..diffusion.net import SingerNet
from ..io.checkpoint import atomic_folder
from ..ops.noise_schedule import NoiseSchedule
from ..progress import Progress

# SynthSinger data of build_tiny_stack(small_data=True): 2 clips of 0.4 s (10 frames), enough for 4-frame samples
SMALL_DATA = {"synth_clips": 2, "synth_seconds": 0.4}


def tiny_mel_config() -> DiffusionConfig:
    """DiffusionConfig.tiny() with the audio projection of mel-80 features: 1 x 16 x 80 per frame."""
    return dataclasses.replace(DiffusionConfig.tiny(), audio_seq_len=1, audio_blocks=16, audio_channels=80)


def _write_random_stack(tmp: Path, seed: int) -> None:
    """A seeded, untrained tiny SingerNet (mel-80 audio) + tiny VAE in the trainer's export layout."""
    from ..diffusion.vae import tiny_vae

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
    SingerTrainingInfo(task="random (untrained)", vae=VAE_DIR, image_size=64, frames=8, motion_frames=2,
                       audio=TrainingAudio(encoder=MEL_ENCODER_NAME), schedule=NoiseSchedule()).write(tmp)


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
    from ..train.loop import resolve_config, train
    from ..train.singer import SingerTask, tiny_vae_data
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
    # the VAE now sits inside the folder; the sampling is what ComfyUI's Sample SINGER Video uses for 0 (auto)
    info = SingerTrainingInfo.read(tmp)
    dataclasses.replace(info, vae=VAE_DIR, sampling=TINY_SAMPLING).write(tmp)
    shutil.rmtree(runs)


def render_singer_video(model_dir: str | os.PathLike, image, song_waveform: torch.Tensor, sample_rate: int,
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
    from ..io.video_write import VideoWriter

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
                         frame_sink=writer.write)
    return Path(out_path)


__all__ = ["SMALL_DATA", "build_tiny_stack", "render_singer_video", "tiny_mel_config"]
