"""SynthSinger: a synthetic singing-head dataset with known ground truth (DESIGN.md "The embedded default").

Per clip: an identity (3DMM id/tex coefficients, lighting, background colour or texture, motion style), a
formant-synthesised song (``singer_core.audio.synth``), ground-truth expression and head pose driven by the
song's timelines (``motion_from_song``: jaw from voiced energy x vowel openness, lips from the vowel, brows
from pitch, blinks, nods on beats, slow sway), rendered with the procedural morphable model at 25 fps and
written in the clip format of ``format.py``; an index.json splits identities 4:1 into train and test as in
the SINGER paper. Everything is deterministic under the seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..audio.synth import STYLES, SongConfig, SynthSong, synthesize_song
from ..io.config import JsonConfig
from ..io.lock import folder_lock
from ..progress import Progress
from .format import (
    ClipMeta,
    DatasetIndex,
    full_coeffs,
    read_index,
    scan_clips,
    write_clip,
    write_index,
)
from .motion_from_song import MotionStyle, SongMotion, motion_from_song, sample_motion_style

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # audio rate of every synthetic clip
RENDER_BATCH = 16  # frames rendered per call (bounds memory at any clip length)
STYLE_CHOICES = (*STYLES, "mixed")  # "mixed": every fifth clip is speech, the others sing
# Bumped whenever the same config renders different clips (framing, lighting, motion rules), so cached
# datasets made by an older generator are regenerated instead of silently reused. 2: centred head, mild tint.
GENERATOR_VERSION = 2
LIGHT_TINT = 0.0125  # std of an identity's warm/cool light tint (added to red, taken from blue DC terms)


@dataclasses.dataclass(frozen=True)
class SynthSingerConfig(JsonConfig):
    """Everything that defines a SynthSinger dataset; the same config gives the same clips."""

    clips: int = 10  # number of clips
    clips_per_identity: int = 1  # clips sung by each identity (identities = ceil(clips / this))
    size: int = 128  # frame width = height in pixels (even, 32 .. 1024)
    seconds: float = 2.0  # clip length in seconds (frames = ceil(seconds * fps))
    fps: float = 25.0  # video frame rate
    seed: int = 0  # master seed of identities, songs and motion
    backing: bool = False  # mix a band (chords, bass, drums) under the voice; vocals.wav keeps the voice
    style: str = "singing"  # "singing", "speech" or "mixed" (every fifth clip speech)
    textured_background: bool = False  # a smooth random colour texture instead of a flat background
    tempo_range: tuple[float, float] = (80.0, 140.0)  # song tempo is drawn uniformly from this range (bpm)
    test_fraction: float = 0.2  # share of identities in the test split (0.2 = 4:1)
    crf: int = 18  # H.264 quality of video.mp4

    def __post_init__(self):
        checks = [
            (isinstance(self.clips, int) and self.clips >= 1,
             f"clips must be an integer >= 1, got {self.clips!r}"),
            (isinstance(self.clips_per_identity, int) and self.clips_per_identity >= 1,
             f"clips_per_identity must be an integer >= 1, got {self.clips_per_identity!r}"),
            (isinstance(self.size, int) and 32 <= self.size <= 1024 and self.size % 2 == 0,
             f"size must be an even integer in [32, 1024] (H.264 needs even sizes), got {self.size!r}"),
            (0.2 <= self.seconds <= 600.0, f"seconds must be in [0.2, 600], got {self.seconds}"),
            (1.0 <= self.fps <= 120.0, f"fps must be in [1, 120], got {self.fps}"),
            (self.style in STYLE_CHOICES, f"style must be one of {STYLE_CHOICES}, got {self.style!r}"),
            (len(self.tempo_range) == 2 and 30.0 <= self.tempo_range[0] <= self.tempo_range[1] <= 300.0,
             f"tempo_range must be (low, high) within [30, 300] bpm, got {self.tempo_range!r}"),
            (0.0 <= self.test_fraction < 1.0, f"test_fraction must be in [0, 1), got {self.test_fraction}"),
            (0 <= self.crf <= 51, f"crf must be in [0, 51], got {self.crf}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SynthSingerConfig: {message}")
        object.__setattr__(self, "tempo_range", tuple(float(x) for x in self.tempo_range))

    @property
    def frames(self) -> int:
        """Frames per clip: ceil(seconds * fps)."""
        return math.ceil(self.seconds * self.fps - 1e-9)



@dataclasses.dataclass(frozen=True)
class Identity:
    """One synthetic person: face, voice range, look of the scene and motion style."""

    name: str  # e.g. "synth00003"
    id_coeffs: torch.Tensor  # (80,) float32 shape coefficients
    tex_coeffs: torch.Tensor  # (80,) float32 albedo coefficients
    gamma: torch.Tensor  # (27,) float32 spherical-harmonics lighting (around the renderer's default)
    background_rgb: tuple[float, float, float]  # flat background colour in 0..1
    background_seed: int | None  # seed of the background texture, None for a flat background
    voice_key: int  # MIDI root of the identity's songs (its voice range)
    motion: MotionStyle  # per-identity gains and offsets of the driving rules


@dataclasses.dataclass(frozen=True)
class SynthClip:
    """One generated clip in memory (before writing)."""

    meta: ClipMeta  # its metadata
    frames: torch.Tensor  # (T, H, W, 3) uint8 RGB
    song: SynthSong  # the song (mix, vocals, timelines)
    motion: SongMotion  # the driving tracks
    # exp (T, 64), angle (T, 3), trans (T, 3), id (80,), tex (80,), gamma (27,)
    coeffs: dict[str, torch.Tensor]
    landmarks: torch.Tensor  # (T, 68, 2) pixels


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *keys])


def make_identity(index: int, *, seed: int = 0, textured_background: bool = False) -> Identity:
    """Draw identity number `index` of the dataset seeded by `seed` (independent of every other index).

    Coefficients are N(0, 0.7^2) clipped to +-2 (plausible faces of the procedural model); lighting is the
    renderer's default key light with a random strength (0.6 .. 1.2), direction (+- 0.25) and a very slight
    warm/cool tint (``LIGHT_TINT``); the background is a muted random colour.
    """
    from ..face.render import default_lighting

    rng = _rng(seed, index, 0x1D)
    direction = np.array([-0.35, 0.55, 0.75]) + rng.normal(0.0, 0.25, 3)
    direction[2] = abs(direction[2]) + 0.2  # keep the key light in front of the face
    gamma = default_lighting(float(rng.uniform(0.6, 1.2)), direction=tuple(float(x) for x in direction),
                             ambient=float(rng.uniform(0.0, 0.1))).numpy().astype(np.float64)
    # a very slight warm (red up, blue down) or cool tint of the light, +-2.5 % at 2 sigma; independent noise
    # per colour channel turned skin grey or olive
    # (three draws, of which one is used, keep the identity's later draws as they were)
    tint = LIGHT_TINT * rng.normal(0.0, 1.0, 3)[0]
    gamma.reshape(3, 9)[:, 0] += tint * np.array([1.0, 0.0, -1.0])
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.85)
    background = _hsv_to_rgb(hue, saturation, value)
    return Identity(
        name=f"synth{index:05d}",
        id_coeffs=torch.from_numpy(np.clip(rng.normal(0.0, 0.7, 80), -2, 2)).float(),
        tex_coeffs=torch.from_numpy(np.clip(rng.normal(0.0, 0.7, 80), -2, 2)).float(),
        gamma=torch.from_numpy(gamma).float(),
        background_rgb=background,
        background_seed=int(rng.integers(2**31)) if textured_background else None,
        voice_key=int(rng.integers(48, 65)),
        motion=sample_motion_style(rng),
    )


def background_image(identity: Identity, size: int) -> torch.Tensor:
    """The identity's background: (3, size, size) float32 in 0..1, flat or a smooth colour texture."""
    base = torch.tensor(identity.background_rgb, dtype=torch.float32)[:, None, None]
    if identity.background_seed is None:
        return base.expand(3, size, size).clone()
    rng = np.random.default_rng(identity.background_seed)
    # smooth blotches: mostly brightness (shared by the channels), a little colour
    coarse = rng.normal(0.0, 0.12, (1, 1, 5, 5)) + rng.normal(0.0, 0.04, (1, 3, 5, 5))
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).float(), size=(size, size),
                                              mode="bicubic", align_corners=True)[0]
    stripes = 0.04 * torch.sin(torch.linspace(0, float(rng.uniform(6, 20)), size))[None, None, :]
    return (base * (1.0 + texture) + stripes).clamp(0.0, 1.0)


def song_config(config: SynthSingerConfig, identity: Identity, clip_index: int) -> SongConfig:
    """The SongConfig of clip `clip_index` (tempo, seed and style drawn from the master seed)."""
    rng = _rng(config.seed, clip_index, 0x50)
    style = config.style if config.style != "mixed" else ("speech" if clip_index % 5 == 4 else "singing")
    return SongConfig(
        seconds=float(config.seconds),
        sample_rate=SAMPLE_RATE,
        tempo_bpm=float(rng.uniform(*config.tempo_range)),
        seed=int(rng.integers(2**31)),
        style=style,
        key=identity.voice_key,
        backing=config.backing,
        backing_db=float(rng.uniform(-8.0, -2.0)),
    )


def generate_clip(config: SynthSingerConfig, clip_index: int, *, model=None,
                  progress: Progress | None = None) -> SynthClip:
    """Generate clip `clip_index` of the dataset in memory.

    Args:
        config: the dataset's SynthSingerConfig.
        clip_index: 0 .. config.clips - 1; identity = clip_index // config.clips_per_identity.
        model: the MorphableModel to render with (default procedural_model(seed=0), the SynthSinger face).
        progress: optional callback (frames rendered, frames) after each batch; may raise to stop.

    Returns:
        A SynthClip with frames (T, H, W, 3) uint8, T = ceil(seconds * fps).
    """
    from ..face.procedural import procedural_model
    from ..face.render import render_coeffs

    if not 0 <= clip_index < config.clips:
        raise ValueError(f"generate_clip: clip_index must be in [0, {config.clips}), got {clip_index}")
    model = procedural_model(seed=0) if model is None else model
    identity_index, take = divmod(clip_index, config.clips_per_identity)
    identity = make_identity(identity_index, seed=config.seed, textured_background=config.textured_background)
    # 1. the song and the motion it drives
    song = synthesize_song(song_config(config, identity, clip_index))
    motion_seed = int(_rng(config.seed, clip_index, 0x40).integers(2**31))
    motion = motion_from_song(song, fps=config.fps, seed=motion_seed, style=identity.motion)
    frames = config.frames
    if motion.exp.shape[0] != frames:
        raise RuntimeError(f"generate_clip: motion has {motion.exp.shape[0]} frames, expected {frames}")
    # 2. render in batches (memory bounded by RENDER_BATCH frames)
    background = background_image(identity, config.size)
    video = torch.empty(frames, config.size, config.size, 3, dtype=torch.uint8)
    landmarks = torch.empty(frames, 68, 2)
    for start in range(0, frames, RENDER_BATCH):
        stop = min(frames, start + RENDER_BATCH)
        count = stop - start
        coeffs = full_coeffs({"id": identity.id_coeffs, "exp": motion.exp[start:stop],
                              "tex": identity.tex_coeffs, "angle": motion.angle[start:stop],
                              "gamma": identity.gamma, "trans": motion.trans[start:stop]}, count)
        out = render_coeffs(model, coeffs, image_size=config.size,
                            background=background.expand(count, 3, config.size, config.size))
        video[start:stop] = (out.images.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        landmarks[start:stop] = out.landmarks.float()
        if progress is not None:
            progress(stop, frames)
    # 3. metadata
    meta = ClipMeta(
        clip_id=f"{identity.name}_{take:02d}",
        identity=identity.name,
        source="synthsinger",
        fps=config.fps,
        sample_rate=SAMPLE_RATE,
        frames=frames,
        size=config.size,
        seconds=song.mix.shape[1] / SAMPLE_RATE,
        has_coeffs=True,
        extra={
            "generator": "singer_core.data.synthetic",
            "clip_index": clip_index,
            "generator_version": GENERATOR_VERSION,
            "synth_config": json.loads(config.to_json()),
            "song": json.loads(song.config.to_json()),
            "motion_style": json.loads(identity.motion.to_json()),
            "background_rgb": list(identity.background_rgb),
            "textured_background": identity.background_seed is not None,
            "beat_frames": list(motion.beat_frames),
            "blink_frames": list(motion.blink_frames),
        },
    )
    coeffs = {"exp": motion.exp, "angle": motion.angle, "trans": motion.trans, "id": identity.id_coeffs,
              "tex": identity.tex_coeffs, "gamma": identity.gamma}
    return SynthClip(meta=meta, frames=video, song=song, motion=motion, coeffs=coeffs, landmarks=landmarks)


def write_synth_clip(root: str | Path, clip: SynthClip, *, overwrite: bool = False, crf: int = 18) -> Path:
    """Write a SynthClip as root/<clip_id> (video, audio, vocals when backed, coefficients, landmarks and
    timeline.safetensors: the per-frame song ground truth and the unit tracks)."""
    song, motion = clip.song, clip.motion
    timeline = song.at_fps(motion.fps)
    tracks = {
        "f0": timeline.f0, "vowel": timeline.vowel, "energy": timeline.energy,
        "is_beat": timeline.is_beat.to(torch.uint8), "is_downbeat": timeline.is_downbeat.to(torch.uint8),
        "beat_times": song.beat_times.double(), "downbeats": song.downbeats.to(torch.uint8),
        "jaw_target": motion.jaw_target,
    }
    tracks |= {f"unit_{name}": track for name, track in motion.units.items()}
    return write_clip(
        Path(root) / clip.meta.clip_id, frames=clip.frames, fps=clip.meta.fps, audio=song.mix,
        sample_rate=song.sample_rate, meta=clip.meta, coeffs=clip.coeffs,
        landmarks={"landmarks": clip.landmarks},
        stems={"vocals": song.vocals} if song.config.backing else None,
        tensors={"timeline": tracks}, overwrite=overwrite, crf=crf,
    )


def generate_dataset(out: str | Path, config: SynthSingerConfig, *, overwrite: bool = False,
                     progress: Progress | None = None) -> DatasetIndex:
    """Generate a SynthSinger dataset into `out` and index it (4:1 train/test by identity).

    A clip folder already present from the same config is kept (an interrupted run resumes); any other
    existing clip folder is an error unless overwrite=True.

    Args:
        out: the dataset folder (created).
        config: the SynthSingerConfig.
        overwrite: regenerate clip folders that already exist.
        progress: optional callback (frames done, total frames over all clips); may raise to stop (the clip
            being made is not written; finished clips stay).

    Returns:
        The DatasetIndex written to out/index.json.
    """

    with folder_lock(out, "synth"):  # one job per dataset folder; a file / read-only / full disk is named
        return _generate_dataset(Path(out), config, overwrite, progress)


def _generate_dataset(out: Path, config: SynthSingerConfig, overwrite: bool, progress) -> DatasetIndex:
    """generate_dataset once the folder is locked."""
    from ..face.procedural import procedural_model

    model = procedural_model(seed=0)
    total, frames = config.clips * config.frames, config.frames
    for clip_index in range(config.clips):
        identity_index, take = divmod(clip_index, config.clips_per_identity)
        folder = out / f"synth{identity_index:05d}_{take:02d}"
        if folder.exists() and not overwrite and _same_clip(folder, config, clip_index):
            logger.info("generate_dataset: keeping %s (already generated with this config)", folder.name)
            if progress is not None:
                progress((clip_index + 1) * frames, total)
            continue

        def report(done, _total, base=clip_index * frames):
            if progress is not None:
                progress(base + done, total)

        clip = generate_clip(config, clip_index, model=model, progress=report)
        if folder.exists() and not overwrite:
            raise FileExistsError(f"generate_dataset: '{folder}' exists and was not made by this config; "
                                  "choose another --out or pass --overwrite")
        write_synth_clip(out, clip, overwrite=overwrite, crf=config.crf)
    wanted = {f"synth{i // config.clips_per_identity:05d}_{i % config.clips_per_identity:02d}"
              for i in range(config.clips)}
    metas = [meta for meta in scan_clips(out) if meta.clip_id in wanted]
    write_index(out, metas, test_fraction=config.test_fraction, seed=config.seed)
    return read_index(out)


def _same_clip(folder: Path, config: SynthSingerConfig, clip_index: int) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    extra = meta.get("extra", {}) if isinstance(meta, dict) else {}
    return (extra.get("synth_config") == json.loads(config.to_json()) and extra.get("clip_index") == clip_index
            and extra.get("generator_version") == GENERATOR_VERSION)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    sector = int(hue * 6.0) % 6
    frac = hue * 6.0 - math.floor(hue * 6.0)
    p, q, t = value * (1 - saturation), value * (1 - frac * saturation), value * (1 - (1 - frac) * saturation)
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sector]
    return tuple(float(x) for x in rgb)
