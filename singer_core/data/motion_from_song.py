"""SynthSinger motion: ground-truth 3DMM expression and head pose driven by a synthetic song's timelines.

Every quantity is computed per video frame i at its centre t_i = (i + 0.5) / fps from
``SynthSong.at_fps(fps)`` (energy e_i, vowel v_i, f0_i) and the song's exact beat times b_k.
Expression units are the entries of the 64-d expression vector named in ``EXPRESSION_UNITS``
(1.0 = the full action); angles are Deep3DFaceRecon's (pitch, yaw, roll) in radians.

| output      | driving rule                                                                              |
|-------------|-------------------------------------------------------------------------------------------|
| jaw_open    | AR(jaw_gain * e_i * OPENNESS[v_i]); OPENNESS a 1.0, o 0.8, e 0.6, u 0.4, i 0.35, rest 0;  |
|             | AR = one-pole attack/release smoother, attack tau 30 ms, release tau 35 ms, so the mouth   |
|             | is shut (< 0.05) three frames into a rest                                                 |
| lip_round   | AR(e_i * ROUNDING[v_i]); u 1.0, o 0.8, a 0.1, e 0, i 0; tau 50 ms both ways              |
| lip_spread  | AR(e_i * SPREADING[v_i]); i 1.0, e 0.7, a 0.2, o 0, u 0; tau 50 ms both ways             |
| brow_raise  | AR(clip(brow_gain * log2(f0_i / median voiced f0), -0.3, 1)) while voiced, 0 in rests;      |
|             | tau 120 ms (brow_gain 1.2 .. 2.0: about an octave above the median raises fully)           |
| blink       | cos^2 pulse, 200 ms support (about 100 ms more than half shut), peak on a frame centre;    |
|             | first at U(0.3, 2.5) s, then every U(2, 5) s (seeded per clip)                             |
| smile       | the identity's constant (0 .. 0.3)                                                         |
| other exp   | the identity's constant offsets, N(0, 0.05^2) each                                         |
| pitch       | offset + sum_k w_k * nod * exp(-(t_i - b_k)^2 / (2 sigma^2)), sigma = min(80 ms, beat/5):   |
|             | the head dips (nose down = positive pitch in Deep3DFaceRecon's convention) on every beat; |
|             | w_k = downbeat_gain (1.4 .. 1.8) on downbeats, 1 otherwise; nod 2.5 .. 4.5 degrees         |
| yaw         | offset + sway_yaw * sin(2 pi f_yaw t + phase), f_yaw in [0.08, 0.25] Hz, 2 .. 6 degrees      |
| roll        | offset + sway_roll * sin(2 pi f_roll t + phase), f_roll in [0.05, 0.2] Hz, 1 .. 3 degrees    |
| trans       | offset + x sway following the yaw sinusoid (sway_shift 0.03 .. 0.08, a few % of the face); |
|             | the offset is N(0, (0.03, 0.03, 0.15)^2) (FRAMING_TRANS = 0: the head is framed at 0)     |

Offsets (angles N(0, 3 deg), translation, smile, other expression entries) and gains are the
identity's ``MotionStyle``; ``sample_motion_style`` draws one from a seeded generator. The speech
style of SongConfig works the same way (its syllables open and close the jaw faster).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch

from ..audio.synth import VOWEL_ORDER, SynthSong
from ..face.morphable import EXPRESSION_UNITS
from ..io.config import JsonConfig

logger = logging.getLogger(__name__)

OPENNESS = {"a": 1.0, "o": 0.8, "e": 0.6, "u": 0.4, "i": 0.35}  # jaw opening per vowel
ROUNDING = {"a": 0.1, "e": 0.0, "i": 0.0, "o": 0.8, "u": 1.0}  # lip rounding per vowel
SPREADING = {"a": 0.2, "e": 0.7, "i": 1.0, "o": 0.0, "u": 0.0}  # lip spreading per vowel
EXP_DIM = 64  # width of the expression vector
JAW_ATTACK_S, JAW_RELEASE_S = 0.030, 0.035  # time constants of the jaw smoother
LIP_TAU_S = 0.050  # time constant of the lip smoothers
BROW_TAU_S = 0.120  # time constant of the brow smoother
BLINK_SUPPORT_S = 0.2  # total length of a blink pulse
BLINK_INTERVAL_S = (2.0, 5.0)  # range of the time between blinks
NOD_SIGMA_S = 0.080  # width of a nod dip (capped at a fifth of the beat period)
# mean head translation (model units): none, the procedural head at trans 0 is already framed whole (hair
# to chin, see face.procedural.HEAD_SCALE); the identities' offsets are small jitter around it
FRAMING_TRANS = (0.0, 0.0, 0.0)
TRANS_JITTER = (0.03, 0.03, 0.15)  # standard deviation of an identity's translation offset (x, y, z)


@dataclasses.dataclass(frozen=True)
class MotionStyle(JsonConfig):
    """Per-identity parameters of the driving rules (see the module table)."""

    jaw_gain: float = 0.9  # scale of jaw_open (0.75 .. 1.0)
    brow_gain: float = 1.5  # brow_raise per octave above the song's median f0
    nod_deg: float = 3.5  # head dip (nose down) on a beat, degrees
    downbeat_gain: float = 1.6  # nod multiplier on the first beat of a bar
    sway_yaw_deg: float = 4.0  # yaw sway amplitude, degrees
    sway_yaw_hz: float = 0.15  # yaw sway frequency (< 0.3 Hz)
    sway_roll_deg: float = 2.0  # roll sway amplitude, degrees
    sway_roll_hz: float = 0.1  # roll sway frequency (< 0.3 Hz)
    sway_phase: tuple[float, float] = (0.0, 1.0)  # phases (radians) of the yaw and roll sways
    sway_shift: float = 0.05  # x translation following the yaw sway (model units: decimetres)
    angle_offset_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # constant (pitch, yaw, roll), degrees
    trans_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # constant translation (model units)
    smile: float = 0.1  # constant smile unit
    exp_offset: tuple[float, ...] = ()  # 64 constant expression offsets (units entries are 0); () = none

    def __post_init__(self):
        if self.exp_offset and len(self.exp_offset) != EXP_DIM:
            raise ValueError(f"MotionStyle: exp_offset must have {EXP_DIM} entries or none, got "
                             f"{len(self.exp_offset)}")
        for name in ("sway_yaw_hz", "sway_roll_hz"):
            if not 0.0 <= getattr(self, name) < 0.3:
                raise ValueError(f"MotionStyle: {name} must be in [0, 0.3) Hz (a slow sway), got "
                                 f"{getattr(self, name)}")



@dataclasses.dataclass(frozen=True)
class SongMotion:
    """Ground-truth motion of one clip, N video frames."""

    fps: float  # frames per second
    exp: torch.Tensor  # (N, 64) float32 expression coefficients
    angle: torch.Tensor  # (N, 3) float32 (pitch, yaw, roll) radians
    trans: torch.Tensor  # (N, 3) float32 translation
    # name -> (N,) float32: the EXPRESSION_UNITS tracks and "nod" (the beat part of the pitch, radians, >= 0)
    units: dict[str, torch.Tensor]
    jaw_target: torch.Tensor  # (N,) float32 e_i * OPENNESS[v_i], before gain and smoothing
    blink_frames: tuple[int, ...]  # frames where a blink peaks
    beat_frames: tuple[int, ...]  # frame whose centre is nearest to each beat inside the clip


def sample_motion_style(rng: np.random.Generator) -> MotionStyle:
    """Draw one identity's MotionStyle from a numpy Generator (ranges in the module table)."""
    exp_offset = rng.normal(0.0, 0.05, EXP_DIM)
    exp_offset[list(EXPRESSION_UNITS.values())] = 0.0
    return MotionStyle(
        jaw_gain=float(rng.uniform(0.75, 1.0)),
        brow_gain=float(rng.uniform(1.2, 2.0)),
        nod_deg=float(rng.uniform(2.5, 4.5)),
        downbeat_gain=float(rng.uniform(1.4, 1.8)),
        sway_yaw_deg=float(rng.uniform(2.0, 6.0)),
        sway_yaw_hz=float(rng.uniform(0.08, 0.25)),
        sway_roll_deg=float(rng.uniform(1.0, 3.0)),
        sway_roll_hz=float(rng.uniform(0.05, 0.2)),
        sway_phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
        sway_shift=float(rng.uniform(0.03, 0.08)),
        angle_offset_deg=tuple(float(x) for x in rng.normal(0.0, 3.0, 3)),
        trans_offset=tuple(float(base + x) for base, x in zip(FRAMING_TRANS, rng.normal(0.0, 1.0, 3)
                                                              * np.array(TRANS_JITTER), strict=True)),
        smile=float(rng.uniform(0.0, 0.3)),
        exp_offset=tuple(float(x) for x in exp_offset),
    )


def attack_release(target: np.ndarray, fps: float, attack_s: float, release_s: float) -> np.ndarray:
    """One-pole smoother with separate rise and fall time constants, starting from 0.

    y_i = y_{i-1} + k (x_i - y_{i-1}), k = 1 - exp(-1 / (fps * tau)), tau = attack_s when x_i > y_{i-1},
    else release_s.

    Args:
        target: (N,) float64 input track x.
        fps: frames per second of the track.
        attack_s, release_s: time constants in seconds (> 0).

    Returns:
        (N,) float64 smoothed track y.
    """
    rise, fall = 1.0 - math.exp(-1.0 / (fps * attack_s)), 1.0 - math.exp(-1.0 / (fps * release_s))
    out = np.empty_like(target, dtype=np.float64)
    level = 0.0
    for i, value in enumerate(target):
        level += (rise if value > level else fall) * (value - level)
        out[i] = level
    return out


def blink_track(frames: int, fps: float, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Blinks: cos^2 pulses of BLINK_SUPPORT_S peaking on frame centres, U(2, 5) s apart.

    Returns:
        (N,) float64 in [0, 1] and the frames where each blink peaks.
    """
    track, peaks = np.zeros(frames), []
    centres = (np.arange(frames) + 0.5) / fps
    time = float(rng.uniform(0.3, 2.5))
    while True:
        peak = int(math.floor(time * fps))
        if peak >= frames:
            break
        peaks.append(peak)
        offset = centres - centres[peak]
        inside = np.abs(offset) < BLINK_SUPPORT_S / 2
        track[inside] = np.maximum(track[inside], np.cos(math.pi * offset[inside] / BLINK_SUPPORT_S) ** 2)
        time += float(rng.uniform(*BLINK_INTERVAL_S))
    return track, peaks


def motion_from_song(song: SynthSong, *, fps: float = 25.0, seed: int = 0,
                     style: MotionStyle | None = None) -> SongMotion:
    """Drive 3DMM expression and head pose from a synthetic song (rules in the module table).

    Args:
        song: the SynthSong (its timelines, beat times and downbeats are used).
        fps: video frame rate; the motion has N = ceil(seconds * fps) frames.
        seed: seed of the per-clip randomness (blink times).
        style: the identity's MotionStyle (default MotionStyle()).

    Returns:
        SongMotion with exp (N, 64), angle (N, 3), trans (N, 3) and the unit tracks.
    """
    style = style or MotionStyle()
    timeline = song.at_fps(fps)
    frames = timeline.f0.shape[0]
    centres = (np.arange(frames) + 0.5) / fps
    vowel = timeline.vowel.numpy()
    voiced = vowel >= 0
    energy = timeline.energy.numpy().astype(np.float64) * voiced

    def per_vowel(table: dict[str, float]) -> np.ndarray:
        lookup = np.array([table[name] for name in VOWEL_ORDER] + [0.0])  # index -1 -> rest -> 0
        return lookup[vowel]

    # 1. mouth: jaw from voiced energy x openness, lips from the vowel class
    jaw_target = energy * per_vowel(OPENNESS)
    jaw = attack_release(style.jaw_gain * jaw_target, fps, JAW_ATTACK_S, JAW_RELEASE_S)
    lip_round = attack_release(energy * per_vowel(ROUNDING), fps, LIP_TAU_S, LIP_TAU_S)
    lip_spread = attack_release(energy * per_vowel(SPREADING), fps, LIP_TAU_S, LIP_TAU_S)

    # 2. brows from pitch height relative to the song's median voiced f0
    f0 = timeline.f0.numpy().astype(np.float64)
    pitched = voiced & (f0 > 0)
    brow_target = np.zeros(frames)
    if pitched.any():
        height = np.log2(f0[pitched] / float(np.median(f0[pitched])))
        brow_target[pitched] = np.clip(style.brow_gain * height, -0.3, 1.0)
    brow = attack_release(brow_target, fps, BROW_TAU_S, BROW_TAU_S)

    # 3. blinks (random per clip)
    blink, blink_frames = blink_track(frames, fps, np.random.default_rng([int(seed), 0xB1])) if frames else (
        np.zeros(0), [])

    # 4. head: nods on beats (deeper on downbeats), slow yaw/roll sway, constant offsets
    beat_times = song.beat_times.numpy().astype(np.float64)
    downbeats = song.downbeats.numpy()
    period = 60.0 / song.config.tempo_bpm
    sigma = min(NOD_SIGMA_S, period / 5.0)
    nod = np.zeros(frames)
    for time, down in zip(beat_times, downbeats, strict=True):
        weight = style.downbeat_gain if down else 1.0
        nod += weight * np.exp(-0.5 * ((centres - time) / sigma) ** 2)
    nod *= math.radians(style.nod_deg)  # positive pitch turns the nose down
    yaw_wave = np.sin(2 * math.pi * style.sway_yaw_hz * centres + style.sway_phase[0])
    roll_wave = np.sin(2 * math.pi * style.sway_roll_hz * centres + style.sway_phase[1])
    offset = np.radians(np.array(style.angle_offset_deg))
    angle = np.stack([offset[0] + nod,
                      offset[1] + math.radians(style.sway_yaw_deg) * yaw_wave,
                      offset[2] + math.radians(style.sway_roll_deg) * roll_wave], axis=1)
    trans = np.tile(np.array(style.trans_offset, dtype=np.float64), (frames, 1))
    trans[:, 0] += style.sway_shift * yaw_wave

    # 5. the expression vector
    exp = np.tile(np.array(style.exp_offset or [0.0] * EXP_DIM, dtype=np.float64), (frames, 1))
    tracks = {"jaw_open": jaw, "lip_round": lip_round, "lip_spread": lip_spread,
              "smile": np.full(frames, style.smile), "brow_raise": brow, "blink": blink}
    for name, track in tracks.items():
        exp[:, EXPRESSION_UNITS[name]] = track
    units = {name: torch.from_numpy(track).float() for name, track in tracks.items()}
    units["nod"] = torch.from_numpy(nod).float()
    beat_frames = tuple(int(np.argmin(np.abs(centres - time))) for time in beat_times
                        if 0.0 <= time < frames / fps)
    return SongMotion(
        fps=float(fps),
        exp=torch.from_numpy(exp).float(),
        angle=torch.from_numpy(angle).float(),
        trans=torch.from_numpy(trans).float(),
        units=units,
        jaw_target=torch.from_numpy(jaw_target).float(),
        blink_frames=tuple(blink_frames),
        beat_frames=beat_frames,
    )
