"""The formant song synthesiser: determinism, timelines, spectral content."""

import math

import pytest
import torch

from singer_core.audio.synth import VOWEL_ORDER, sing


def test_deterministic_under_seed():
    a, b, c = sing(2.0, seed=7), sing(2.0, seed=7), sing(2.0, seed=8)
    torch.testing.assert_close(a.waveform, b.waveform)
    assert not torch.equal(a.waveform, c.waveform)


def test_timelines_are_consistent():
    song = sing(3.0, seed=1, sample_rate=16000)
    assert song.waveform.shape == song.f0.shape == song.vowel.shape == song.energy.shape == (48000,)
    voiced = song.vowel >= 0
    assert voiced.any() and (song.f0[voiced] > 0).all() and (song.f0[~voiced] == 0).all()
    assert song.vowel.max() < len(VOWEL_ORDER)
    assert float(song.waveform.abs().max()) <= 0.9 + 1e-6
    assert float(song.energy.min()) >= 0 and float(song.energy.max()) <= 1


def test_pitch_of_a_note_is_in_the_spectrum():
    """The strongest low harmonic of a held note sits at its f0 (within one FFT bin)."""
    song = sing(3.0, seed=2, vibrato_cents=0.0)
    voiced = (song.energy > 0.99).nonzero().flatten()
    start = int(voiced[0])
    f0 = float(song.f0[start])
    stop = start + 4096
    assert float(song.f0[stop - 1]) == f0, "the test needs 4096 samples of one note"
    segment = song.waveform[start:stop] * torch.hann_window(4096)
    spectrum = torch.fft.rfft(segment).abs()
    freqs = torch.fft.rfftfreq(4096, 1 / song.sample_rate)
    band = (freqs > 0.5 * f0) & (freqs < 1.5 * f0)
    peak = float(freqs[band][spectrum[band].argmax()])
    assert math.isclose(peak, f0, abs_tol=song.sample_rate / 4096 + 1)


@pytest.mark.parametrize("kwargs", [dict(seconds=0.0), dict(seconds=1e4), dict(seconds=1.0, sample_rate=100)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        sing(**kwargs)


# ---------------------------------------------------------------------------------------------
# synthesize_song: the full SynthSinger audio (voice + band, stems, timelines)
# ---------------------------------------------------------------------------------------------

import json  # noqa: E402

import numpy as np  # noqa: E402

from singer_core.audio.synth import SongConfig, pan_gains, synthesize_song  # noqa: E402

BAND = dict(backing=True, stereo=True, seconds=6.0, tempo_bpm=120.0)


def test_song_is_deterministic_and_the_seed_matters():
    a = synthesize_song(SongConfig(seed=3, **BAND))
    b = synthesize_song(SongConfig(seed=3, **BAND))
    c = synthesize_song(SongConfig(seed=4, **BAND))
    assert torch.equal(a.mix, b.mix) and torch.equal(a.f0, b.f0) and a.notes == b.notes
    assert not torch.equal(a.mix, c.mix)


def test_stems_sum_to_the_mix_and_the_peak_is_bounded():
    song = synthesize_song(SongConfig(seed=1, backing_db=-3.0, **BAND))
    assert song.mix.shape == song.vocals.shape == song.accompaniment.shape == (2, 96000)
    assert set(song.stems) == {"chords", "bass", "drums"}
    assert torch.equal(song.mix, song.vocals + song.accompaniment)
    reference = np.sum([stem.double().numpy() for stem in song.stems.values()], axis=0)
    np.testing.assert_allclose(song.accompaniment.double().numpy(), reference, atol=1e-6)
    assert float(song.mix.abs().max()) <= 0.9
    # accompaniment level relative to the vocals, as configured (RMS over both channels)
    ratio = 20 * math.log10(
        float(song.accompaniment.double().pow(2).mean().sqrt())
        / float(song.vocals.double().pow(2).mean().sqrt())
    )
    assert abs(ratio - (-3.0)) < 0.01
    # switches: a part that is off is absent and silent in the accompaniment
    no_drums = synthesize_song(SongConfig(seed=1, drums=False, **BAND))
    assert set(no_drums.stems) == {"chords", "bass"}
    dry = synthesize_song(SongConfig(seed=1, seconds=2.0))
    assert dry.stems == {} and float(dry.accompaniment.abs().max()) == 0.0 and dry.mix.shape == (1, 32000)


def test_timeline_f0_is_the_spectral_peak_of_held_notes():
    """For every note long enough, the strongest partial near the timeline's f0 is at that f0."""
    song = synthesize_song(SongConfig(seconds=8.0, seed=5, vibrato_cents=0.0, backing=True))
    vocals, rate, checked = song.vocals[0].double().numpy(), song.sample_rate, 0
    for note in song.notes:
        start, stop = int(note.start_s * rate) + 800, int(note.end_s * rate) - 1600  # skip attack / release
        if stop - start < 4096:
            continue
        segment = vocals[start : start + 4096] * np.hanning(4096)
        spectrum = np.abs(np.fft.rfft(segment, 16384))
        freqs = np.fft.rfftfreq(16384, 1 / rate)
        f0 = float(song.f0[start + 2048])
        assert math.isclose(f0, 440 * 2 ** ((note.midi - 69) / 12), rel_tol=1e-5)
        band = (freqs > 0.7 * f0) & (freqs < 1.3 * f0)
        assert abs(freqs[band][spectrum[band].argmax()] - f0) < rate / 4096
        assert song.vowel[start + 2048] == note.vowel and song.energy[start + 2048] > 0.99
        checked += 1
    assert checked >= 3


def _onset_times(signal: np.ndarray, rate: int) -> list[float]:
    """Onsets by a log-energy envelope: 4 ms windows every 1 ms, centred difference, peaks > 6 dB / 2 ms."""
    pad = rate // 50
    x = np.concatenate([np.zeros(pad), signal, np.zeros(pad)])
    hop, half = rate // 1000, rate // 500
    centres = np.arange(pad // 2, pad + signal.shape[0], hop)
    energy = np.array([np.sum(x[c - half : c + half] ** 2) for c in centres])
    log_energy = 10 * np.log10(energy + 1e-10)
    rise = np.zeros_like(log_energy)
    rise[1:-1] = log_energy[2:] - log_energy[:-2]
    onsets = []
    for i in range(1, len(rise) - 1):
        if rise[i] > 6.0 and rise[i] >= rise[i - 1] and rise[i] > rise[i + 1]:
            t = (centres[i] - pad) / rate
            if not onsets or t - onsets[-1] > 0.02:  # one onset per attack
                onsets.append(t)
    return onsets


def test_drum_onsets_are_on_the_beat_grid():
    """Onsets found in the drum stem by an onset envelope sit on the beats (within 10 ms), none off grid."""
    song = synthesize_song(SongConfig(seconds=6.0, seed=2, backing=True, tempo_bpm=100.0, sample_rate=16000))
    onset_times = _onset_times(song.stems["drums"][0].double().numpy(), song.sample_rate)
    beats = song.beat_times.numpy()
    assert len(beats) == math.ceil(6.0 / 0.6) and np.allclose(np.diff(beats), 0.6)
    for beat in beats:
        assert min(abs(t - beat) for t in onset_times) < 0.010, (
            f"no drum onset within 10 ms of beat {beat:.3f}"
        )
    eighths = np.arange(0.0, 6.0, 0.3)
    for t in onset_times:  # and nothing off the (eighth-note) grid
        assert np.abs(eighths - t).min() < 0.010, f"onset at {t:.3f} s is off the grid"
    assert song.downbeats.tolist() == [i % 4 == 0 for i in range(len(beats))]


def _syllables_per_second(song):
    """Count syllables in the vocal audio: rises of the low-band (< 1 kHz) energy from more than 15 dB
    below the envelope's local maximum (within +-80 ms) back to within 6 dB of it (hysteresis)."""
    rate = song.sample_rate
    spec = torch.stft(song.vocals[0], 128, 16, window=torch.hann_window(128), return_complex=True).abs() ** 2
    freqs = torch.fft.rfftfreq(128, 1 / rate)
    level = (10 * torch.log10(spec[(freqs > 60) & (freqs < 1000)].sum(0) + 1e-10)).numpy()
    level = np.maximum(level, level.max() - 60)
    reach = int(0.08 * rate / 16)
    padded = np.pad(level, reach, mode="edge")
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1).max(axis=1)
    count, low = 0, True
    for value, top in zip(level, local_max, strict=True):
        if low and value > top - 6:
            count, low = count + 1, False
        elif not low and value < top - 15:
            low = True
    return count / song.config.seconds


def _pitch_range_semitones(song):
    voiced = song.f0 > 0
    semis = 12 * torch.log2(song.f0[voiced] / 440.0)
    return float(semis.quantile(0.95) - semis.quantile(0.05))


def test_speech_has_more_syllables_and_less_pitch_range_than_singing():
    singing = synthesize_song(SongConfig(seconds=10.0, seed=6, style="singing", vibrato_cents=0.0))
    speech = synthesize_song(SongConfig(seconds=10.0, seed=6, style="speech"))
    sing_rate, speech_rate = _syllables_per_second(singing), _syllables_per_second(speech)
    assert speech_rate > 1.8 * sing_rate and 3.0 <= speech_rate <= 6.5
    for song, rate in ((singing, sing_rate), (speech, speech_rate)):  # the audio agrees with the note list
        assert abs(rate - len(song.notes) / 10.0) <= 0.3 * len(song.notes) / 10.0
    assert _pitch_range_semitones(speech) < 0.6 * _pitch_range_semitones(singing)
    # consonants are unvoiced: noise with no f0 and no vowel, just before a syllable
    gaps = [(a.end_s, b.start_s) for a, b in zip(speech.notes, speech.notes[1:], strict=False)]
    assert any(float(speech.vocals[0, int(s * 16000) : int(e * 16000)].abs().max()) > 0.01 for s, e in gaps)
    assert (speech.vowel[speech.f0 == 0] == -1).all() and (speech.f0[speech.vowel >= 0] > 0).all()


def test_stereo_panning_shows_in_left_right_energy():
    song = synthesize_song(
        SongConfig(seconds=2.4, seed=1, backing=True, stereo=True, tempo_bpm=100.0, chord_pan=0.8)
    )
    torch.testing.assert_close(song.vocals[0], song.vocals[1], rtol=0, atol=0)  # voice centred
    torch.testing.assert_close(song.stems["bass"][0], song.stems["bass"][1], rtol=0, atol=0)
    drums = song.stems["drums"].double().pow(2).sum(1)
    assert abs(10 * math.log10(float(drums[0] / drums[1]))) < 1.0  # near centre
    # chord voices of bar 1 (I chord: root, third, fifth, octave) at pans -0.8, +0.8, -0.4, +0.4
    chords, rate = song.stems["chords"].double().numpy(), song.sample_rate
    segment = chords[:, : 2 * 9600] * np.hanning(2 * 9600)  # the first two strikes, both the I chord
    spectrum = np.abs(np.fft.rfft(segment, axis=1))
    freqs = np.fft.rfftfreq(segment.shape[1], 1 / rate)
    for offset, pan in zip(
        (0, 4, 7), (-0.8, 0.8, -0.4), strict=True
    ):  # (the octave is the root's 2nd partial)
        hz = 440 * 2 ** ((song.config.key - 12 + offset - 69) / 12)
        index = int(np.argmin(np.abs(freqs - hz)))
        left, right = spectrum[:, index - 1 : index + 2].max(axis=1)
        expected = pan_gains(pan)
        assert math.isclose(left / right, expected[0] / expected[1], rel_tol=0.1), (offset, left / right)


@pytest.mark.parametrize(
    "seconds,fps,rate", [(2.0, 25, 16000), (1.37, 25, 16000), (3.01, 30, 22050), (0.5, 24, 8000)]
)
def test_at_fps_frame_counts_and_values(seconds, fps, rate):
    song = synthesize_song(SongConfig(seconds=seconds, sample_rate=rate, seed=2, tempo_bpm=130.0))
    total = song.f0.shape[0]
    frames = song.at_fps(fps)
    count = math.ceil(total / rate * fps)
    assert frames.f0.shape == frames.vowel.shape == frames.energy.shape == frames.beat_phase.shape == (count,)
    for i in range(count):
        centre = min(total - 1, int((i + 0.5) / fps * rate))
        assert frames.vowel[i] == song.vowel[centre] and frames.f0[i] == song.f0[centre]
        phase = ((i + 0.5) / fps) / (60 / 130.0) % 1.0
        assert (
            abs(float(frames.beat_phase[i]) - phase) < 1e-5
            or abs(abs(float(frames.beat_phase[i]) - phase) - 1) < 1e-5
        )
    assert (
        int(frames.is_beat.sum()) == len(song.beat_times)
        and bool(frames.is_beat[0])
        and bool(frames.is_downbeat[0])
    )
    for beat in song.beat_times.tolist():
        assert frames.is_beat[int(beat * fps)]


def test_config_json_round_trip_and_errors():
    config = SongConfig(seconds=3.5, style="speech", backing=True, backing_db=-6.0, key=60)
    assert SongConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown keys.*'tempo'"):
        SongConfig.from_json(json.dumps({"seconds": 2.0, "tempo": 90}))
    for bad in (
        dict(style="rap"),
        dict(seconds=601.0),
        dict(sample_rate=44100.0),
        dict(backing_db=90.0),
        dict(rest_probability=1.0),
        dict(key=20),
    ):
        with pytest.raises(ValueError, match="SongConfig: "):
            SongConfig(**bad)
    with pytest.raises(ValueError, match="fps"):
        synthesize_song(SongConfig(seconds=0.5)).at_fps(0)


def test_progress_is_reported_and_can_stop_the_work():
    calls = []
    synthesize_song(SongConfig(seconds=4.0, seed=1, backing=True), progress=lambda d, t: calls.append((d, t)))
    assert (
        calls
        and calls[-1][0] == calls[-1][1]
        and all(a[0] < b[0] for a, b in zip(calls, calls[1:], strict=False))
    )

    def stop(done, total):
        raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        synthesize_song(SongConfig(seconds=30.0, seed=1, backing=True), progress=stop)


@pytest.mark.slow
def test_ten_minute_song_is_fast():
    import time

    start = time.perf_counter()
    song = synthesize_song(SongConfig(seconds=600.0, seed=1, backing=True, stereo=True))
    elapsed = time.perf_counter() - start
    assert song.mix.shape == (2, 9_600_000) and float(song.mix.abs().max()) <= 0.9
    assert elapsed < 30.0, f"600 s of song took {elapsed:.1f} s"
