"""Vocal isolation quality and speed of the embedded DSP separator on SynthSinger mixtures.

Mixtures come from `synthesize_song` (voice + band, known stems) at vocal-to-backing ratios of
0, -6 and -12 dB, stereo and mono, a few seeds. For every condition it prints the SDR and SI-SDR of
the mixture and of the estimate against the true vocals, the improvement (SDRi, SI-SDRi; mean over
seeds) and the processing time (wall clock and CPU) per second of audio. A "solo" row checks that
an unaccompanied voice is not made much worse (its mixture SDR is infinite: only the estimate's SDR
is shown).

    python benchmarks/separation.py            # 15 s songs, 3 seeds, 44.1 kHz
    python benchmarks/separation.py --quick    # 4 s songs, 1 seed (smoke test)
    python benchmarks/separation.py --json results.json

SDR here is the plain signal-to-distortion ratio 10 log10(|s|^2 / |s - s_hat|^2) over all channels
(no BSS-eval filter); SI-SDR rescales the target optimally first (Le Roux et al. 2019).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

from singer_core.audio.separation import DspSeparationConfig, separate_vocals_dsp
from singer_core.audio.synth import SongConfig, synthesize_song

RATIOS_DB = (0.0, -6.0, -12.0)  # vocal-to-backing ratio; backing_db = -ratio


def sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """10 log10(|s|^2 / |s - s_hat|^2) over all samples and channels, in float64."""
    reference, estimate = reference.double().flatten(), estimate.double().flatten()
    error = float((reference - estimate).pow(2).sum())
    return math.inf if error == 0 else 10 * math.log10(float(reference.pow(2).sum()) / error)


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Scale-invariant SDR: the target is the projection of the estimate on the reference."""
    reference, estimate = reference.double().flatten(), estimate.double().flatten()
    target = float(estimate @ reference) / float(reference @ reference) * reference
    error = float((estimate - target).pow(2).sum())
    return math.inf if error == 0 else 10 * math.log10(float(target.pow(2).sum()) / error)


def run(seconds: float, seeds: list[int], sample_rate: int, config: DspSeparationConfig) -> list[dict]:
    rows = []
    warm = synthesize_song(SongConfig(seconds=1.0, sample_rate=sample_rate, stereo=True, backing=True))
    separate_vocals_dsp(warm.mix, sample_rate, config=config)  # compile the numba kernel outside the timings
    conditions = [(stereo, ratio) for stereo in (True, False) for ratio in RATIOS_DB] + [
        (True, None),
        (False, None),
    ]
    for stereo, ratio in conditions:
        per_seed = []
        for seed in seeds:
            song = synthesize_song(
                SongConfig(
                    seconds=seconds,
                    sample_rate=sample_rate,
                    seed=seed,
                    stereo=stereo,
                    backing=ratio is not None,
                    backing_db=-(ratio or 0.0),
                )
            )
            start, cpu_start = time.perf_counter(), time.process_time()
            estimate = separate_vocals_dsp(song.mix, sample_rate, config=config).vocals
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            per_seed.append(
                {
                    "seed": seed,
                    "sdr_mix": sdr(song.vocals, song.mix),
                    "sdr_est": sdr(song.vocals, estimate),
                    "si_sdr_mix": si_sdr(song.vocals, song.mix),
                    "si_sdr_est": si_sdr(song.vocals, estimate),
                    "seconds_per_audio_second": elapsed / seconds,
                    "cpu_seconds_per_audio_second": cpu / seconds,
                }
            )
        row = {
            "channels": "stereo" if stereo else "mono",
            "vocal_to_backing_db": ratio,
            "seconds": seconds,
            "sample_rate": sample_rate,
            "seeds": per_seed,
        }
        for key in (
            "sdr_mix",
            "sdr_est",
            "si_sdr_mix",
            "si_sdr_est",
            "seconds_per_audio_second",
            "cpu_seconds_per_audio_second",
        ):
            row[key] = statistics.mean(item[key] for item in per_seed)
        row["sdri"] = row["sdr_est"] - row["sdr_mix"] if ratio is not None else None
        row["si_sdri"] = row["si_sdr_est"] - row["si_sdr_mix"] if ratio is not None else None
        if ratio is None:  # a solo voice: the mixture is the target (infinite SDR); keep the JSON strict
            row["sdr_mix"] = row["si_sdr_mix"] = None
            for item in per_seed:
                item["sdr_mix"] = item["si_sdr_mix"] = None
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    columns = [
        ("SDR mix", 9),
        ("SDR est", 9),
        ("SDRi", 7),
        ("SI-SDR mix", 12),
        ("SI-SDR est", 12),
        ("SI-SDRi", 9),
        ("s / s audio", 13),
        ("cpu s / s", 11),
    ]
    print(f"\n{'condition':<16}" + "".join(f"{name:>{width}}" for name, width in columns))
    for row in rows:
        ratio = row["vocal_to_backing_db"]
        label = f"{row['channels']} " + ("solo" if ratio is None else f"{ratio:+.0f} dB")
        values = [row[key] for key in ("sdr_mix", "sdr_est", "sdri", "si_sdr_mix", "si_sdr_est", "si_sdri")]
        cells = [
            ("inf" if key in (0, 3) else "") if value is None else f"{value:.2f}"
            for key, value in enumerate(values)
        ]
        cells += [f"{row['seconds_per_audio_second']:.4f}", f"{row['cpu_seconds_per_audio_second']:.4f}"]
        print(
            f"{label:<16}"
            + "".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True))
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 s songs and one seed (smoke test)")
    parser.add_argument("--seconds", type=float, default=None, help="song length (default 15, quick 4)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, quick 1)")
    parser.add_argument("--sample-rate", type=int, default=44100, help="mixture sample rate in Hz")
    parser.add_argument("--config", default=None, help="DspSeparationConfig as JSON (default: the defaults)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    config = DspSeparationConfig.from_json(args.config) if args.config else DspSeparationConfig()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); {seconds:g} s songs at {args.sample_rate} Hz, "
        f"seeds {seeds}; config {config.to_json()}"
    )
    rows = run(seconds, seeds, args.sample_rate, config)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": json.loads(config.to_json()), "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
