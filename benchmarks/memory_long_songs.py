"""Peak memory of the long-song paths (issue 16): mel-80 encoding at 16 kHz mono and 44.1 kHz stereo, and the
motion sampler, for 10- and 30-minute songs.

Each measurement runs in a fresh interpreter: it builds its inputs (the song, or the per-frame features the
sampler reads), records the resident set (VmRSS), resets the peak (``/proc/self/clear_refs`` 5), runs, and reads
the peak (VmHWM). ``growth`` = peak - RSS before; ``over output`` = growth - the size of the result (the
features, or the sampled motion), i.e. what the computation itself holds. The promise: ``over output`` stays
under 100 MB for a 30-minute song, whatever the rate and channel count. glibc's malloc is pinned to return
blocks above 128 kB (MALLOC_MMAP_THRESHOLD_), as in tests/audio/test_encoders_memory.py, so freed chunks do not linger.

    python benchmarks/memory_long_songs.py [--minutes 10 30] [--what mel-16k-mono mel-44k-stereo motion]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
WHAT = ("mel-16k-mono", "mel-44k-stereo", "motion")

SCRIPT = r"""
import gc, json, sys, time
import torch
torch.set_num_threads(1)

what, minutes = sys.argv[1], float(sys.argv[2])

def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB

generator = torch.Generator().manual_seed(1)
if what.startswith("mel"):
    from singer_core.audio.encoders import MelEncoder
    rate, channels = (16000, 1) if what == "mel-16k-mono" else (44100, 2)
    encoder = MelEncoder()
    encoder.encode(0.1 * torch.randn(channels, 2 * rate, generator=generator), rate, 25)  # warm-up
    song = torch.randn(channels, round(minutes * 60 * rate), generator=generator)
    song.mul_(0.1)
    run = lambda: encoder.encode(song, rate, 25).features
else:
    from singer_core.motion.generator import MotionModel, MotionModelConfig
    from singer_core.motion.sampling import sample
    torch.manual_seed(0)
    model = MotionModel(MotionModelConfig(width=32, layers=1, heads=2, mlp_ratio=2.0, time_dim=32,
                                          diffusion_steps=10)).eval()
    dit = model.exp_dit  # the expression DiT: 64 coefficients per frame from mel-80 vectors (1280)
    width = dit.config.audio_dim
    frames = round(minutes * 60 * 25)
    sample(dit, torch.randn(1, 100, width, generator=generator), steps=2, seed=0)  # warm-up
    audio = torch.randn(1, frames, width, generator=generator)
    run = lambda: sample(dit, audio, steps=5, seed=0)
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
start = time.perf_counter()
result = run()
seconds = time.perf_counter() - start
print(json.dumps(dict(what=what, minutes=minutes, before_kb=before, peak_kb=status("VmHWM"),
                      output_bytes=result.numel() * result.element_size(), shape=list(result.shape),
                      seconds=seconds)))
"""


def measure(what: str, minutes: float, timeout: float = 1800.0) -> dict:
    """One run in a fresh interpreter -> the report plus growth_mb, output_mb and over_output_mb."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, what, str(minutes)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"memory_long_songs: {what} {minutes} min failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["growth_mb"] = (report["peak_kb"] - report["before_kb"]) / 1024
    report["output_mb"] = report["output_bytes"] / 2 ** 20
    report["over_output_mb"] = report["growth_mb"] - report["output_mb"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0], help="song lengths")
    parser.add_argument("--what", nargs="+", choices=WHAT, default=list(WHAT), help="paths to measure")
    args = parser.parse_args(argv)
    print(f"{'what':16s} {'minutes':>7s} {'growth MB':>10s} {'output MB':>10s} {'over output':>12s} {'s':>7s}")
    for what in args.what:
        for minutes in args.minutes:
            report = measure(what, minutes)
            print(f"{what:16s} {minutes:7.0f} {report['growth_mb']:10.1f} {report['output_mb']:10.1f} "
                  f"{report['over_output_mb']:12.1f} {report['seconds']:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
