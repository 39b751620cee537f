"""The small SynthSinger NeRF of ``make demo`` and the ComfyUI workflow (the nerf task's "demo" preset: a 64 px,
2 s subject trained on the CPU in about a minute), and a video of it singing a song.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import torch

from ..nerf.song_video import POSES_FILE, camera_path, load_nerf_subject, render_song
from ..progress import Progress

logger = logging.getLogger(__name__)


DEMO_PRESET = "demo"  # NerfTask preset trained by train_demo_nerf


def train_demo_nerf(out_dir: str | Path, *, cache_dir: str | Path, steps: int | None = None,
                    progress: Progress | None = None, device: str = "cpu") -> Path:
    """Train the small SynthSinger NeRF (nerf task, preset "demo": a 64 px, 2 s subject) and put the model in
    ``out_dir``, with the subject's transforms_train.json beside it (camera poses, fps).

    Args:
        out_dir: the model folder to create (replaced when it exists; written to a sibling and renamed).
        cache_dir: where the subject and the run folder go (the run: cache_dir/nerf_runs/demo-<steps>).
        steps: training steps (None: the preset's 600); fewer for tests (the occupancy / fine-stage schedule
            is scaled to them).
        progress: progress(done_steps, steps); may raise to stop (out_dir is then left as it was).
        device: torch device.
    Returns:
        out_dir.
    """
    from ..train.loop import FINAL_DIR, train
    from ..train.nerf import NerfTask, subject_dir

    config = NerfTask.presets[DEMO_PRESET]
    if steps is not None:  # the same schedule in fewer steps: occupancy pruning and the fine stage still happen
        if int(steps) < 1:
            raise ValueError(f"train_demo_nerf: steps must be >= 1, got {steps}")
        scale = int(steps) / config.steps
        config = dataclasses.replace(
            config, steps=int(steps), checkpoint_every=int(steps),
            occupancy_start=round(config.occupancy_start * scale), fine_start=round(config.fine_start * scale),
            occupancy_every=max(1, min(config.occupancy_every, round(config.occupancy_every * scale * 4))))
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    run = cache_dir / "nerf_runs" / f"demo-{config.steps}"
    if not (run / FINAL_DIR / "config.json").is_file():
        shutil.rmtree(run, ignore_errors=True)  # a run stopped half-way starts again from step 0
        callback = None if progress is None else (lambda done, total, scalars: progress(done, total))
        train("nerf", config=config, out=run, cache_dir=cache_dir, device=device, quiet=True, progress=callback)
    subject = subject_dir(config, None, cache_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run / FINAL_DIR, staging)
    shutil.copy2(subject / POSES_FILE, staging / POSES_FILE)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    logger.info("train_demo_nerf: %d steps -> '%s'", config.steps, out_dir)
    return out_dir


def render_nerf_video(model_dir: str | Path, song_waveform: torch.Tensor, sample_rate: int, out_path: str | Path, *,
                   seconds: float | None = None, camera: str = "sway", progress: Progress | None = None) -> Path:
    """Render a subject model singing a song and write it as an H.264/AAC mp4 with the song.

    Args:
        model_dir: subject model folder (load_nerf_subject).
        song_waveform: (C, T) or (T,) float in [-1, 1]; sample_rate: its Hz.
        out_path: the .mp4 to write (atomically).
        seconds: render only the first this many seconds (None: the whole song).
        camera: camera path mode (camera_path).
        progress: progress(done_frames, frames) over the rendered frames; may raise (no file is left).
    Returns:
        out_path; frames = ceil(seconds * fps) at the model's fps (25 unless its transforms say otherwise).
    """
    from ..audio.encoders import MelEncoder
    from ..audio.io import to_mono
    from ..io.video_write import write_video

    waveform = torch.as_tensor(song_waveform).float()
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[-1] == 0:
        raise ValueError(f"render_nerf_video: song_waveform must be (C, T) or (T,) with T > 0, got "
                         f"{tuple(waveform.shape)}")
    if seconds is not None:
        if seconds <= 0:
            raise ValueError(f"render_nerf_video: seconds must be > 0, got {seconds}")
        waveform = waveform[:, : max(1, int(round(seconds * sample_rate)))]
    subject = load_nerf_subject(model_dir)
    features = MelEncoder().encode(to_mono(waveform), sample_rate, subject.fps)
    poses = camera_path(subject, features.frames, camera)
    frames = render_song(subject, features, poses=poses, progress=progress)
    audio = waveform if waveform.shape[0] <= 2 else to_mono(waveform)
    return write_video(out_path, frames, subject.fps, audio=audio, sample_rate=sample_rate, pad_odd=True)


__all__ = ["DEMO_PRESET", "render_nerf_video", "train_demo_nerf"]
