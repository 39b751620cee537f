"""SynthSinger songs: formant-synthesised singing (or speech) over a synthetic band, with ground truth.

The voice is a band-limited harmonic series at f0 (with vibrato) whose harmonic amplitudes follow a
glottal tilt (1/k) times the vowel's formant resonances (second-order resonators at the Peterson &
Barney formants); notes have attack/release envelopes and rests. A ``speech`` style gives the contrast
case: fast syllables (4-6 per second) with short vowels, flat pitch with declination, and consonant-like
noise bursts. The optional band plays an I-V-vi-IV chord progression in the key (plucked, panned chord
voices), a bass on the chord roots and drums (kick, snare, hi-hat from noise and decaying sines) on the
beat grid. Every note is rendered from a one-period wavetable over its own samples only, so a
10-minute song takes seconds and memory about the size of its output. Deterministic under the seed.

Returns the stems, the mix and the per-sample ground-truth timelines (f0, vowel, voiced energy, beats)
that drive the synthetic face: jaw from energy, lips from vowel, brows from pitch, nods on beats.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import NamedTuple

import numpy as np
import torch

from ..io.config import JsonConfig
from ..progress import Progress

logger = logging.getLogger(__name__)

# (F1, F2, F3) in Hz and bandwidths, for a neutral adult voice (Peterson & Barney averages).
VOWELS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "a": ((730.0, 1090.0, 2440.0), (90.0, 110.0, 170.0)),
    "e": ((530.0, 1840.0, 2480.0), (70.0, 100.0, 160.0)),
    "i": ((270.0, 2290.0, 3010.0), (50.0, 100.0, 170.0)),
    "o": ((570.0, 840.0, 2410.0), (70.0, 90.0, 160.0)),
    "u": ((300.0, 870.0, 2240.0), (50.0, 80.0, 150.0)),
}
VOWEL_ORDER = tuple(VOWELS)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11, 12)  # semitones above the key root
# I-V-vi-IV, one chord per bar: semitones above the key root of root, third, fifth, octave.
PROGRESSION = ((0, 4, 7, 12), (7, 11, 14, 19), (9, 12, 16, 21), (5, 9, 12, 17))
BEATS_PER_BAR = 4
STYLES = ("singing", "speech")
_TABLE_SIZE = 4096  # samples per wavetable period (linear interpolation error < 1e-4 of full scale)


@dataclasses.dataclass(frozen=True)
class SongConfig(JsonConfig):
    """Everything that defines a synthetic song; the same config and seed give the same samples."""

    seconds: float = 4.0  # duration in seconds (0.1 .. 600)
    sample_rate: int = 16000  # output rate in Hz (8000 .. 192000)
    tempo_bpm: float = 96.0  # beats per minute of the beat grid (30 .. 300); sung notes last 1/2 .. 2 beats
    seed: int = 0  # random seed of melody, vowels, rests and noise
    style: str = "singing"  # "singing" (melody on the beat grid) or "speech" (fast syllables, flat pitch)
    key: int = 57  # MIDI note of the major key's root (A3 = 57); melody spans key .. key+12
    vibrato_hz: float = 5.5  # vibrato rate in Hz (0 .. 12); singing style only
    vibrato_cents: float = 40.0  # vibrato depth in cents, peak (0 .. 200); singing style only
    rest_probability: float = (
        0.15  # chance of a rest before a note (singing) or a pause between syllables (speech)
    )
    backing: bool = False  # add the band (chords, bass, drums) under the voice
    backing_db: float = 0.0  # RMS level of the accompaniment relative to the vocals, in dB (-60 .. 40)
    stereo: bool = False  # two channels: vocals centred, chord voices panned, bass and drums near centre
    chord_pan: float = 0.7  # pan of the outer chord voices in [0, 1] (1 = hard left/right); stereo only
    drums: bool = True  # kick on beats 1 and 3, snare on 2 and 4, hi-hat on every eighth (with backing)
    bass: bool = True  # bass on the chord root, one note per beat (with backing)
    chords: bool = True  # plucked chord voices struck on beats 1 and 3 (with backing)

    def __post_init__(self):
        checks = [
            (0.1 <= self.seconds <= 600.0, f"seconds must be in [0.1, 600], got {self.seconds}"),
            (
                isinstance(self.sample_rate, int) and 8000 <= self.sample_rate <= 192000,
                f"sample_rate must be an integer in [8000, 192000], got {self.sample_rate!r}",
            ),
            (30.0 <= self.tempo_bpm <= 300.0, f"tempo_bpm must be in [30, 300], got {self.tempo_bpm}"),
            (self.style in STYLES, f"style must be one of {STYLES}, got {self.style!r}"),
            (
                isinstance(self.key, int) and 36 <= self.key <= 84,
                f"key must be a MIDI note in [36, 84], got {self.key!r}",
            ),
            (0.0 <= self.vibrato_hz <= 12.0, f"vibrato_hz must be in [0, 12], got {self.vibrato_hz}"),
            (
                0.0 <= self.vibrato_cents <= 200.0,
                f"vibrato_cents must be in [0, 200], got {self.vibrato_cents}",
            ),
            (
                0.0 <= self.rest_probability < 1.0,
                f"rest_probability must be in [0, 1), got {self.rest_probability}",
            ),
            (-60.0 <= self.backing_db <= 40.0, f"backing_db must be in [-60, 40] dB, got {self.backing_db}"),
            (0.0 <= self.chord_pan <= 1.0, f"chord_pan must be in [0, 1], got {self.chord_pan}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SongConfig: {message}")



class Note(NamedTuple):
    """One sung note or spoken syllable (its voiced part)."""

    start_s: float  # onset in seconds
    end_s: float  # offset in seconds
    midi: float  # pitch as a (fractional, for speech) MIDI note, without vibrato
    vowel: int  # index into VOWEL_ORDER


@dataclasses.dataclass(frozen=True)
class FrameTimeline:
    """Ground truth sampled at video-frame centres t_i = (i + 0.5) / fps, i = 0 .. N-1."""

    fps: float  # frames per second
    f0: torch.Tensor  # (N,) float32 Hz, 0 where unvoiced
    vowel: torch.Tensor  # (N,) int64 index into VOWEL_ORDER, -1 in rests and consonants
    energy: torch.Tensor  # (N,) float32 voiced envelope in [0, 1]
    beat_phase: torch.Tensor  # (N,) float32 in [0, 1): fraction of the current beat elapsed
    is_beat: torch.Tensor  # (N,) bool: a beat time falls in [i / fps, (i + 1) / fps)
    is_downbeat: torch.Tensor  # (N,) bool: that beat is the first of a bar


@dataclasses.dataclass(frozen=True)
class SynthSong:
    """A synthesised song: stems, mix and per-sample ground truth. C = 2 if config.stereo else 1."""

    config: SongConfig
    sample_rate: int
    mix: torch.Tensor  # (C, T) float32, == vocals + accompaniment exactly; peak <= 0.9
    vocals: torch.Tensor  # (C, T) float32 (identical channels: the voice is centred)
    accompaniment: torch.Tensor  # (C, T) float32, == the sum of the stems (zeros without backing)
    # name -> (C, T) float32, for the enabled parts among "chords", "bass", "drums"
    stems: dict[str, torch.Tensor]
    f0: torch.Tensor  # (T,) float32 instantaneous voice f0 in Hz (vibrato included), 0 where unvoiced
    vowel: torch.Tensor  # (T,) int64 index into VOWEL_ORDER, -1 in rests and consonants
    energy: torch.Tensor  # (T,) float32 voiced note envelope in [0, 1]
    beat_times: torch.Tensor  # (B,) float64 seconds of every beat of the grid (0, 60/tempo, ...)
    downbeats: torch.Tensor  # (B,) bool, True on the first beat of each bar
    notes: tuple[Note, ...]  # every sung note / spoken syllable, in time order

    def at_fps(self, fps: float) -> FrameTimeline:
        """Sample the timelines at video-frame centres.

        Args:
            fps: video frames per second (> 0). The clip has ceil(T / sample_rate * fps) frames.

        Returns:
            A FrameTimeline of N = ceil(T * fps / sample_rate) frames.
        """
        if not fps > 0:
            raise ValueError(f"SynthSong.at_fps: fps must be positive, got {fps}")
        total = self.f0.shape[0]
        frames = math.ceil(total * fps / self.sample_rate - 1e-9)
        centres = (torch.arange(frames, dtype=torch.float64) + 0.5) / fps
        index = (centres * self.sample_rate).long().clamp(max=total - 1)
        beats = self.beat_times
        period = 60.0 / self.config.tempo_bpm
        beat_phase = torch.remainder(centres, period) / period
        frame_of_beat = torch.floor(beats * fps + 1e-9).long()
        is_beat = torch.zeros(frames, dtype=torch.bool)
        is_downbeat = torch.zeros(frames, dtype=torch.bool)
        inside = frame_of_beat < frames
        is_beat[frame_of_beat[inside]] = True
        is_downbeat[frame_of_beat[inside & self.downbeats]] = True
        return FrameTimeline(
            fps=float(fps),
            f0=self.f0[index],
            vowel=self.vowel[index],
            energy=self.energy[index],
            beat_phase=beat_phase.float().clamp(max=math.nextafter(1.0, 0.0)),
            is_beat=is_beat,
            is_downbeat=is_downbeat,
        )


@dataclasses.dataclass(frozen=True)
class SongTimeline:
    """Per-sample ground truth of a synthesised (mono, unaccompanied) song; see `sing`."""

    waveform: torch.Tensor  # (T,) float32 in [-1, 1]
    sample_rate: int  # samples per second
    f0: torch.Tensor  # (T,) Hz, 0 during rests
    vowel: torch.Tensor  # (T,) int64 index into VOWEL_ORDER, -1 during rests
    energy: torch.Tensor  # (T,) note envelope in [0, 1]


def sing(
    seconds: float = 4.0,
    *,
    sample_rate: int = 16000,
    tempo_bpm: float = 96.0,
    seed: int = 0,
    vibrato_hz: float = 5.5,
    vibrato_cents: float = 40.0,
) -> SongTimeline:
    """Synthesise a short unaccompanied mono melody (a shortcut for `synthesize_song`).

    Args:
        seconds: duration (0.1 .. 600 s).
        sample_rate: output rate in Hz.
        tempo_bpm: beats per minute; notes last half a beat to two beats.
        seed: random seed for melody, vowels and rests.
        vibrato_hz, vibrato_cents: pitch vibrato rate and depth.
    """
    song = synthesize_song(
        SongConfig(
            seconds=seconds,
            sample_rate=sample_rate,
            tempo_bpm=tempo_bpm,
            seed=seed,
            vibrato_hz=vibrato_hz,
            vibrato_cents=vibrato_cents,
        )
    )
    return SongTimeline(
        waveform=song.mix[0], sample_rate=song.sample_rate, f0=song.f0, vowel=song.vowel, energy=song.energy
    )


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan law scaled so the centre (pan 0) gives gain 1 on both channels.

    pan in [-1, 1] (-1 = hard left): (L, R) = sqrt(2) * (cos, sin)((pan + 1) * pi / 4).
    """
    angle = (pan + 1.0) * math.pi / 4.0
    return math.sqrt(2.0) * math.cos(angle), math.sqrt(2.0) * math.sin(angle)


def _wavetable(amplitudes: np.ndarray) -> np.ndarray:
    """One period of sum_k a_k sin(2 pi k x) at _TABLE_SIZE + 1 points (last = first, for interpolation)."""
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : len(amplitudes) + 1] = -0.5j * _TABLE_SIZE * amplitudes
    table = np.fft.irfft(spectrum, n=_TABLE_SIZE)
    return np.append(table, table[0])


def _render(table: np.ndarray, inst_hz: np.ndarray, sample_rate: int) -> np.ndarray:
    """Play a wavetable at the instantaneous frequency inst_hz (n,), starting at phase 0 -> (n,) float64."""
    position = np.cumsum(inst_hz) / sample_rate
    position -= np.floor(position)
    position *= _TABLE_SIZE
    index = position.astype(np.int64)
    frac = position - index
    return table[index] * (1.0 - frac) + table[index + 1] * frac


def _envelope(
    n: int, sample_rate: int, attack: float, release: float, decay: float | None = None
) -> np.ndarray:
    """Linear attack, optional exponential decay (time constant in s), linear release -> (n,) in [0, 1]."""
    time = np.arange(n) / sample_rate
    env = np.minimum(1.0, time / attack) if attack > 0 else np.ones(n)
    env = np.minimum(env, np.maximum(0.0, (n / sample_rate - time) / release))
    if decay is not None:
        env = env * np.exp(-time / decay)
    return env


class _Voice:
    """Vowel wavetables of the singer, cached per (vowel, pitch) at the song's sample rate."""

    def __init__(self, sample_rate: int, vibrato_cents: float):
        self.sample_rate = sample_rate
        self.headroom = 2.0 ** (vibrato_cents / 1200.0) * 2.0 ** (1.0 / 12.0)  # vibrato + glide margin
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def table(self, vowel: int, midi: float) -> np.ndarray:
        key = (vowel, int(round(midi * 4)))  # quarter-semitone resolution is plenty for formant gains
        if key not in self.cache:
            f0 = midi_to_hz(key[1] / 4.0)
            count = max(1, min(80, int(0.45 * self.sample_rate / (f0 * self.headroom))))  # < 0.9 Nyquist
            freq = f0 * np.arange(1, count + 1)
            gain = 1.0 / np.arange(1, count + 1)  # glottal source (-12 dB/oct) + lip radiation (+6 dB/oct)
            for centre, bandwidth in zip(*VOWELS[VOWEL_ORDER[vowel]], strict=True):
                ratio = freq / centre
                gain = gain / np.sqrt((1.0 - ratio**2) ** 2 + (freq * bandwidth / centre**2) ** 2)
            table = _wavetable(gain)
            self.cache[key] = table / np.sqrt(np.mean(table[:-1] ** 2))  # unit RMS: vowels equally loud
        return self.cache[key]


def _plan_singing(config: SongConfig, rng: np.random.Generator) -> list[tuple[Note, float]]:
    """Melody on the beat grid: (note, consonant seconds before it = 0)."""
    beat = 60.0 / config.tempo_bpm
    plan, t, degree = [], 0.0, 2
    while t < config.seconds:
        if rng.random() < config.rest_probability:
            t += beat * float(rng.choice([0.5, 1.0]))
            continue
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(MAJOR_SCALE) - 1))
        vowel = int(rng.integers(0, len(VOWEL_ORDER)))
        plan.append(
            (Note(t, min(t + length, config.seconds), float(config.key + MAJOR_SCALE[degree]), vowel), 0.0)
        )
        t += length
    return plan


def _plan_speech(config: SongConfig, rng: np.random.Generator) -> list[tuple[Note, float]]:
    """Phrases of 4-10 syllables at 4-6 per second, pitch declining over each phrase: (note, consonant s)."""
    plan, t = [], 0.0
    while t < config.seconds:
        count = int(rng.integers(4, 11))
        top = config.key + rng.uniform(0.5, 2.0)  # phrase starts a little above the key note ...
        fall = rng.uniform(1.5, 3.0)  # ... and declines by 1.5-3 semitones
        for index in range(count):
            length = rng.uniform(1.0 / 6.0, 1.0 / 4.0)
            consonant = rng.uniform(0.03, 0.06) if rng.random() < 0.75 else 0.0
            start = t + consonant
            end = min(t + length - 0.015, config.seconds)
            midi = top - fall * index / count + rng.normal(0.0, 0.35)
            if end > start:
                plan.append(
                    (Note(start, end, float(midi), int(rng.integers(0, len(VOWEL_ORDER)))), consonant)
                )
            t += length
            if rng.random() < config.rest_probability:
                t += rng.uniform(0.05, 0.15)  # word boundary
            if t >= config.seconds:
                break
        t += rng.uniform(0.25, 0.6)  # breath between phrases
    return plan


def _sing_voice(config, plan, rng, vocals, f0_line, vowel_line, energy_line, tick):
    """Render the planned notes into the mono vocal buffer and the timelines (all (T,), in place)."""
    rate, total = config.sample_rate, vocals.shape[0]
    speech = config.style == "speech"
    voice = _Voice(rate, 0.0 if speech else config.vibrato_cents)
    for note, consonant in plan:
        start, end = int(round(note.start_s * rate)), min(total, int(round(note.end_s * rate)))
        if consonant > 0:  # 1. unvoiced burst before the syllable: high-passed noise, fast decay
            c_start = max(0, start - int(round(consonant * rate)))
            noise = np.diff(rng.standard_normal(start - c_start + 1))
            vocals[c_start:start] += (
                0.25 * noise * _envelope(start - c_start, rate, 0.005, 0.01, consonant / 2)
            )
        if end <= start:
            tick()
            continue
        # 2. pitch contour: vibrato (singing) or a small fall inside the syllable (speech)
        n = end - start
        time = np.arange(start, end) / rate
        if speech:
            midi = note.midi + 0.4 - 0.8 * np.arange(n) / n
            inst = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
            env = _envelope(n, rate, 0.015, 0.03)
        else:
            vib = 2.0 ** (config.vibrato_cents / 1200.0 * np.sin(2 * math.pi * config.vibrato_hz * time))
            inst = midi_to_hz(note.midi) * vib
            env = _envelope(n, rate, 0.04, 0.08)
        # 3. harmonics shaped by the vowel's formants, plus a little breath
        wave = _render(voice.table(note.vowel, note.midi), inst, rate)
        wave += 0.005 * rng.standard_normal(n)
        vocals[start:end] += 0.3 * env * wave
        f0_line[start:end] = inst
        vowel_line[start:end] = note.vowel
        energy_line[start:end] = env
        tick()


def _play_band(config, rng, stems, beat_times, tick):
    """Render chords, bass and drums on the beat grid into the (C, T) stem buffers (in place)."""
    rate = config.sample_rate
    total = next(iter(stems.values())).shape[1] if stems else 0
    stereo = config.stereo
    beat = 60.0 / config.tempo_bpm

    def add(name, start, wave, pan):
        stop = min(total, start + wave.shape[0])
        if stop <= start:
            return
        buffer = stems[name]
        if stereo:
            left, right = pan_gains(pan)
            buffer[0, start:stop] += left * wave[: stop - start]
            buffer[1, start:stop] += right * wave[: stop - start]
        else:
            buffer[0, start:stop] += wave[: stop - start]

    if not stems:
        return
    # chord timbre: a bright 1/k^1.3 spectrum (no formants), up to 24 harmonics below 0.9 Nyquist
    plucks: dict[int, np.ndarray] = {}
    warm = _wavetable(np.array([1.0, 0.45, 0.2, 0.1, 0.05]))
    width = config.chord_pan
    chord_pans = (-width, width, -width / 2.0, width / 2.0)
    for index, start_s in enumerate(beat_times):
        bar, position = divmod(index, BEATS_PER_BAR)
        chord = PROGRESSION[bar % len(PROGRESSION)]
        start = int(round(start_s * rate))
        if "chords" in stems and position % 2 == 0:  # 1. chords: struck on beats 1 and 3, two beats long
            n = int(round(2 * beat * rate))
            env = _envelope(n, rate, 0.003, 0.03, decay=0.6)
            for offset, pan in zip(chord, chord_pans, strict=True):
                hz = midi_to_hz(config.key - 12 + offset)
                count = max(1, min(24, int(0.45 * rate / hz)))
                if count not in plucks:
                    plucks[count] = _wavetable(1.0 / np.arange(1, count + 1) ** 1.3)
                add("chords", start, 0.22 * env * _render(plucks[count], np.full(n, hz), rate), pan)
        if "bass" in stems:  # 2. bass: the chord root two octaves down, every beat
            n = int(round(beat * rate))
            env = 0.5 + 0.5 * _envelope(n, rate, 0.008, 0.04, decay=0.15)
            env *= _envelope(n, rate, 0.008, 0.04)
            add(
                "bass",
                start,
                0.5 * env * _render(warm, np.full(n, midi_to_hz(config.key - 24 + chord[0])), rate),
                0.0,
            )
        if "drums" in stems:  # 3. drums: kick on 1 and 3, snare on 2 and 4, hi-hat on every eighth
            if position % 2 == 0:
                n = int(0.35 * rate)
                time = np.arange(n) / rate
                sweep = 50.0 + 100.0 * np.exp(-time / 0.03)
                phase = 2 * math.pi * np.cumsum(sweep) / rate
                click = np.diff(rng.standard_normal(n + 1)) * np.exp(-time / 0.002)
                add("drums", start, 0.9 * np.sin(phase) * np.exp(-time / 0.12) + 0.3 * click, 0.0)
            else:
                n = int(0.25 * rate)
                time = np.arange(n) / rate
                noise = np.diff(rng.standard_normal(n + 1))
                body = np.sin(2 * math.pi * 190.0 * time) * np.exp(-time / 0.05)
                add("drums", start, 0.35 * noise * np.exp(-time / 0.07) + 0.5 * body, 0.1)
            for half in (0, 1):
                n = int(0.06 * rate)
                hat = np.diff(rng.standard_normal(n + 2), 2) * np.exp(-np.arange(n) / rate / 0.015)
                add(
                    "drums",
                    int(round((start_s + half * beat / 2) * rate)),
                    (0.12 if half else 0.18) * hat,
                    -0.2,
                )
        tick()


def synthesize_song(
    config: SongConfig | None = None, *, progress: Progress | None = None
) -> SynthSong:
    """Synthesise a song (voice, optional band) with its ground-truth timelines.

    Args:
        config: the song's SongConfig (default: SongConfig()).
        progress: optional callback (done, total) called as notes and beats are rendered; it may
            raise to stop (the exception propagates, nothing is returned).

    Returns:
        A SynthSong with mix, vocals, accompaniment and stems of shape (C, T), C = 2 if stereo else 1,
        T = round(seconds * sample_rate), and the per-sample timelines f0, vowel, energy of shape (T,).
    """
    config = config or SongConfig()
    rate = config.sample_rate
    total = int(round(config.seconds * rate))
    channels = 2 if config.stereo else 1
    rng = np.random.default_rng(config.seed)
    beat = 60.0 / config.tempo_bpm
    beat_times = np.arange(int(math.ceil(config.seconds / beat - 1e-9))) * beat
    downbeats = np.arange(beat_times.shape[0]) % BEATS_PER_BAR == 0

    # 1. plan the voice (notes or syllables) first, so the melody does not depend on the backing switches
    plan = _plan_singing(config, rng) if config.style == "singing" else _plan_speech(config, rng)
    names = [name for name in ("chords", "bass", "drums") if config.backing and getattr(config, name)]
    steps, done = len(plan) + (beat_times.shape[0] if names else 0), 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None and (done % 64 == 0 or done == steps):
            progress(done, steps)

    # 2. voice and timelines (float32 buffers: the output is the only full-length memory)
    voice = np.zeros(total, dtype=np.float32)
    f0_line = np.zeros(total, dtype=np.float32)
    vowel_line = np.full(total, -1, dtype=np.int64)
    energy_line = np.zeros(total, dtype=np.float32)
    _sing_voice(config, plan, rng, voice, f0_line, vowel_line, energy_line, tick)

    # 3. band, scaled so RMS(accompaniment) / RMS(vocals) = backing_db (reductions block by block)
    stems = {name: np.zeros((channels, total), dtype=np.float32) for name in names}
    _play_band(config, rng, stems, beat_times, tick)
    blocks = [slice(start, min(total, start + (1 << 20))) for start in range(0, total, 1 << 20)]

    def band_blocks():  # the summed stems, one block at a time (no full-length temporary)
        return (sum(stem[:, block] for stem in stems.values()) for block in blocks) if stems else iter(())

    vocal_power = sum(float(np.square(voice[block], dtype=np.float64).sum()) for block in blocks) * channels
    band_power = sum(float(np.square(part, dtype=np.float64).sum()) for part in band_blocks())
    band_gain = (
        math.sqrt(vocal_power / band_power) * 10.0 ** (config.backing_db / 20.0)
        if vocal_power > 0 and band_power > 0
        else 1.0
    )

    # 4. one common scale for every part so that the mix peaks at 0.9 and mix == vocals + accompaniment
    if stems:
        peak = max(
            float(np.abs(voice[block] + band_gain * part).max())
            for block, part in zip(blocks, band_blocks(), strict=True)
        )
    else:
        peak = float(np.abs(voice).max()) if total else 0.0
    scale = 0.9 * (1.0 - 1e-6) / peak if peak > 0 else 1.0
    vocals = torch.from_numpy(voice).mul_(scale)[None].expand(channels, total).contiguous()
    stem_tensors = {name: torch.from_numpy(stems[name]).mul_(scale * band_gain) for name in names}
    accompaniment = torch.zeros(channels, total)
    for stem in stem_tensors.values():
        accompaniment += stem
    mix = vocals + accompaniment
    logger.debug(
        "synthesize_song: %.1f s, %d notes, stems %s, peak scale %.3g",
        config.seconds,
        len(plan),
        names,
        scale,
    )
    return SynthSong(
        config=config,
        sample_rate=rate,
        mix=mix,
        vocals=vocals,
        accompaniment=accompaniment,
        stems=stem_tensors,
        f0=torch.from_numpy(f0_line),
        vowel=torch.from_numpy(vowel_line),
        energy=torch.from_numpy(energy_line),
        beat_times=torch.from_numpy(beat_times),
        downbeats=torch.from_numpy(downbeats),
        notes=tuple(note for note, _ in plan),
    )
