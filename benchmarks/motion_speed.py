"""Motion DiT sampling speed: 50 DDIM steps for 10 s of audio (250 frames at 25 fps) with the PAPER-size
MotionModel (two 6-layer DiTs, width 256, wav2vec2-base last-layer audio: 768 per frame), random weights.

Prints the wall time of ``MotionModel.generate``, the real-time factor (audio seconds / wall seconds), the
model FLOPs (the linear layers counted with torch.utils.flop_counter.FlopCounterMode on one step of each
DiT, times the steps, plus the attention products counted analytically: on the CPU the counter does not
see the fused SDPA kernel; the analytic linear count is printed beside it as a check) and the achieved
FLOP/s as a fraction of this
machine's fp32 GEMM throughput measured in the same run -- torch.matmul of the DiT's own linear-layer
shapes (tokens = windows x 25 frames) and of a large 1024^3 product. With --profile, the torch profiler's
top operators of a shorter run show where the time goes.

    python benchmarks/motion_speed.py                       # CPU, 2 threads
    python benchmarks/motion_speed.py --threads 1 --profile
    python benchmarks/motion_speed.py --device cuda --json speed.json
    python benchmarks/motion_speed.py --quick               # smoke test (tiny model, 5 steps)

On a CPU shared with other busy processes, OpenMP's default spin-waiting makes every small operator wait
for a descheduled sibling thread (measured here: 2 threads 15x slower than 1). Start Python with
OMP_WAIT_POLICY=PASSIVE (read once at start-up; printed in the header) to compare:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/motion_speed.py --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from singer_core.audio.features import SingerAudioFeatures
from singer_core.motion.generator import MotionModel
from singer_core.motion.sampling import window_starts
from singer_core.train.motion import MotionTask

PAPER_ENCODER = "facebook/wav2vec2-base-960h"


def build_model(quick: bool, device: str) -> MotionModel:
    """The paper preset's MotionModel (random weights; wav2vec2-base last layer: 1 row x 768)."""
    preset = MotionTask.presets["paper"]
    config = preset.model_config(PAPER_ENCODER, 1, 768)
    if quick:
        import dataclasses

        config = dataclasses.replace(config, width=32, layers=2, heads=2, time_dim=32, mlp_ratio=2.0)
    torch.manual_seed(0)
    return MotionModel(config).to(device).eval()


def random_features(frames: int, fps: float, device: str) -> SingerAudioFeatures:
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(frames, 1, 768, generator=generator).to(device)
    return SingerAudioFeatures(features=values, fps=fps, encoder=PAPER_ENCODER, sample_rate=16000,
                               num_samples=int(round(frames / fps * 16000)))


def _timed(fn, repeat: int, sync) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of `repeat` calls after one warm-up call. On a shared machine the
    CPU time shows what the work costs when the process is descheduled part of the time."""
    fn()  # warm-up: allocator, thread pool, kernels
    sync()
    walls, cpus = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return walls, cpus


def analytic_flops(model: MotionModel, frames: int, steps: int) -> tuple[float, float, int]:
    """2 x multiply-adds of all DiT calls of generate(): (linear layers, attention QK^T + AV, tokens per
    call).
    The attention counts every key of the window, masked or not (SDPA computes them all)."""
    config = model.config
    window = min(config.frames, frames)
    windows = len(window_starts(frames, config.frames, 5))
    tokens = windows * window
    width, hidden = config.width, int(round(config.mlp_ratio * config.width))
    linear, attention = 0.0, 0.0
    for motion_dim in ([70] if config.joint else [64, 6]):
        per_token = (config.layers * (8 * width * width + 2 * width * hidden)  # attn q,k,v,out x 2 + MLP
                     + 2 * motion_dim * width  # input, output
                     + (config.time_dim + config.audio_dim) * width)  # tau(c)
        linear += 2.0 * per_token * tokens + 2.0 * windows * 2 * config.time_dim ** 2  # + timestep MLP
        attention += 2.0 * config.layers * 2 * 2 * window * width * tokens  # QK^T, AV of self + cross
    return linear * steps, attention * steps, tokens


def counted_flops(model: MotionModel, features: SingerAudioFeatures, steps: int) -> float:
    """FlopCounterMode over generate() with one DDIM step, times `steps` (every step makes the same calls).
    On the CPU it sees the linear layers (aten.addmm) but not the fused SDPA kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.generate(features, steps=1, seed=0)
    return float(counter.get_total_flops()) * steps


def gemm_throughput(shapes: list[tuple[int, int, int, float]], device: str, sync,
                    repeat: int) -> tuple[float, float]:
    """(FLOP per wall second, FLOP per process CPU second) of torch.matmul over (M, K, N, weight) shapes: the
    FLOP-weighted mix of the given products, medians of `repeat` timed calls of ~0.2 GFLOP each."""
    generator = torch.Generator().manual_seed(2)
    total_flops, total_wall, total_cpu = 0.0, 0.0, 0.0
    for m, k, n, weight in shapes:
        a = torch.randn(m, k, generator=generator).to(device)
        b = torch.randn(k, n, generator=generator).to(device)
        inner = max(1, int(2e8 // (2 * m * k * n)))
        walls, cpus = _timed(lambda: [torch.matmul(a, b) for _ in range(inner)], repeat, sync)
        total_flops += weight * 2.0 * m * k * n * inner
        total_wall += weight * statistics.median(walls)
        total_cpu += weight * statistics.median(cpus)
    return total_flops / total_wall, total_flops / max(total_cpu, 1e-9)


def profile(model: MotionModel, features: SingerAudioFeatures, steps: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        model.generate(features, steps=steps, seed=0)
    print(f"\n  torch profiler, {steps} DDIM steps, top {top} operators by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def measure(model: MotionModel, features: SingerAudioFeatures, threads: int, steps: int, repeat: int,
            flops: float, tokens: int, device: str, sync) -> dict:
    """Time generate() and the GEMM references with `threads` torch threads."""
    torch.set_num_threads(threads)
    config = model.config
    with torch.no_grad():
        walls, cpus = _timed(lambda: model.generate(features, steps=steps, seed=0), repeat, sync)
    width, hidden = config.width, int(round(config.mlp_ratio * config.width))
    shapes = [(tokens, width, width, 8 * config.layers), (tokens, width, hidden, config.layers),
              (tokens, hidden, width, config.layers), (tokens, config.time_dim + config.audio_dim, width, 1)]
    gemm_wall, gemm_cpu = gemm_throughput(shapes, device, sync, max(5, repeat))
    large_wall, large_cpu = gemm_throughput([(1024, 1024, 1024, 1.0)], device, sync, max(5, repeat))
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"threads": torch.get_num_threads(), "wall": wall, "walls": walls, "cpu": cpu, "cpus": cpus,
            "achieved": flops / wall, "achieved_cpu": flops / cpu, "gemm": gemm_wall, "gemm_cpu": gemm_cpu,
            "gemm_large": large_wall, "gemm_large_cpu": large_cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch thread count(s); several give one column each (default 2)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per DiT (default 50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length in seconds (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (median; default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="also print the torch profiler's top operators")
    parser.add_argument("--quick", action="store_true", help="tiny model, 5 steps, 1 repeat (smoke test)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    steps = 5 if args.quick else args.steps
    repeat = 1 if args.quick else args.repeat
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    fps = 25.0
    frames = int(round(args.seconds * fps))
    model = build_model(args.quick, args.device)
    config = model.config
    features = random_features(frames, fps, args.device)
    params = sum(p.numel() for p in model.parameters())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, load average {load:.1f} "
          f"(other processes share the CPUs: compare wall and CPU time), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"model: {'joint' if config.joint else 'exp + pose'} DiT(s), {config.layers} layers, width "
          f"{config.width}, audio {config.audio_dim}/frame, {params / 1e6:.2f} M parameters; "
          f"{frames} frames ({args.seconds:g} s), {steps} DDIM steps per DiT")

    # 1. FLOPs: linears counted, attention analytic (the CPU counter misses the fused SDPA kernel)
    torch.set_num_threads(args.threads[0])
    flops_counted = counted_flops(model, features, steps)
    flops_linear, flops_attention, tokens = analytic_flops(model, frames, steps)
    flops = max(flops_counted, flops_linear) + flops_attention
    print(f"FLOPs: {flops_counted / 1e9:.1f} G counted by FlopCounterMode (linears; analytic "
          f"{flops_linear / 1e9:.1f} G) + {flops_attention / 1e9:.1f} G attention (analytic) = "
          f"{flops / 1e9:.1f} G in {steps * (1 if config.joint else 2)} DiT calls of {tokens} tokens")

    # 2. generate() and the GEMM references, per thread count, in the same run
    results = [measure(model, features, threads, steps, repeat, flops, tokens, args.device, sync)
               for threads in args.threads]
    rows = [
        ("torch.get_num_threads()", lambda r: f"{r['threads']}"),
        (f"generate() wall s (median of {repeat})", lambda r: f"{r['wall']:.2f}"),
        ("generate() process CPU s", lambda r: f"{r['cpu']:.2f}"),
        ("real-time factor (audio s / wall s)", lambda r: f"{args.seconds / r['wall']:.2f}x"),
        ("  same, from CPU s / threads (unshared cores)",
         lambda r: f"{args.seconds * r['threads'] / r['cpu']:.2f}x"),
        ("achieved GFLOP/s (wall)", lambda r: f"{r['achieved'] / 1e9:.1f}"),
        ("matmul of the DiT shapes GFLOP/s (wall)", lambda r: f"{r['gemm'] / 1e9:.1f}"),
        ("matmul 1024^3 GFLOP/s (wall)", lambda r: f"{r['gemm_large'] / 1e9:.1f}"),
        ("achieved / matmul DiT shapes (wall)", lambda r: f"{100 * r['achieved'] / r['gemm']:.0f} %"),
        ("achieved / matmul DiT shapes (CPU time)",
         lambda r: f"{100 * r['achieved_cpu'] / r['gemm_cpu']:.0f} %"),
        ("achieved / matmul 1024^3 (CPU time)",
         lambda r: f"{100 * r['achieved_cpu'] / r['gemm_large_cpu']:.0f} %"),
    ]
    print(f"\n  {'measure':<46}" + "".join(f"{str(r['threads']) + ' thr':>12}" for r in results))
    for label, cell in rows:
        print(f"  {label:<46}" + "".join(f"{cell(r):>12}" for r in results))
    for r in results:
        rtf_ok = args.seconds / r["wall"] >= 1.0
        eff_ok = r["achieved"] >= 0.5 * r["gemm"]
        print(f"  goals, {r['threads']} thread(s): faster than real time {'met' if rtf_ok else 'MISSED'}; "
              f">= 50 % of measured GEMM throughput {'met' if eff_ok else 'MISSED'} (wall-clock basis)")
    if args.profile:
        torch.set_num_threads(args.threads[0])
        profile(model, features, max(1, steps // 5), 15)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": args.device, "frames": frames, "steps": steps, "load": load, "flops": flops,
                       "flops_counted": flops_counted, "flops_linear": flops_linear,
                       "flops_attention": flops_attention, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
