"""Haar DWT/IDWT speed: ours vs ptwt, pytorch_wavelets and PyWavelets, measured in the same run.

For every shape and direction it prints the median time, the effective bandwidth
(input + output bytes / time), the copy floor of the same run (``out.copy_(x)`` into a
preallocated tensor of the input's size: the fastest any single-pass transform can be) and our
ratios: speed-up over the best peer and percentage of the copy floor.

    python benchmarks/wavelet.py            # the issue's shapes, float32, all cores
    python benchmarks/wavelet.py --quick    # tiny shapes, for a smoke test
    python benchmarks/wavelet.py --json results.json

"ours (out=)" writes into preallocated buffers (how the project calls it in hot loops);
"ours (alloc)" allocates its result like the peers do. Peers use their fastest even-size
settings: ptwt/pytorch_wavelets mode="zero", PyWavelets mode="periodization" on float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from singer_core.ops import haar_kernels
from singer_core.ops.wavelet import haar_dwt2, haar_idwt2

SHAPES = [(16, 1, 768, 50), (16, 1280, 8, 8), (16, 320, 64, 64)]
QUICK_SHAPES = [(2, 1, 64, 10), (2, 16, 8, 8)]


def _median_ms(fn, repeat: int, sync=lambda: None) -> float:
    for _ in range(max(3, repeat // 5)):  # warm-up: JIT compile, thread pools, first-touch pages
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _peers(x: torch.Tensor, device: str):
    """{name: (forward_fn, inverse_fn)} for every peer that imports."""
    peers = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import ptwt

            coeffs = ptwt.wavedec2(x, "haar", level=1, mode="zero")
            peers["ptwt"] = (lambda: ptwt.wavedec2(x, "haar", level=1, mode="zero"),
                             lambda: ptwt.waverec2(coeffs, "haar"))
        except Exception as error:  # noqa: BLE001 - a peer that fails to import is reported, not fatal
            print(f"  (ptwt unavailable: {error})", file=sys.stderr)
        try:
            from pytorch_wavelets import DWTForward, DWTInverse

            forward = DWTForward(J=1, wave="haar", mode="zero").to(device)
            inverse = DWTInverse(wave="haar", mode="zero").to(device)
            low, high = forward(x)
            peers["pytorch_wavelets"] = (lambda: forward(x), lambda: inverse((low, high)))
        except Exception as error:  # noqa: BLE001
            print(f"  (pytorch_wavelets unavailable: {error})", file=sys.stderr)
        if device == "cpu":
            try:
                import pywt

                xn = x.numpy()
                coeffs_np = pywt.dwt2(xn, "haar", mode="periodization", axes=(-2, -1))
                peers["PyWavelets"] = (lambda: pywt.dwt2(xn, "haar", mode="periodization", axes=(-2, -1)),
                                       lambda: pywt.idwt2(coeffs_np, "haar", mode="periodization", axes=(-2, -1)))
            except Exception as error:  # noqa: BLE001
                print(f"  (PyWavelets unavailable: {error})", file=sys.stderr)
    return peers


def run(shapes, repeat: int, device: str = "cpu", dtype=torch.float32) -> list[dict]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for shape in shapes:
        x = torch.randn(shape, device=device, dtype=dtype)
        bands = haar_dwt2(x)
        nbytes = 2 * x.numel() * x.element_size()  # read input + write output (same size)
        floor_buffer = torch.empty_like(x)
        copy_ms = _median_ms(lambda: floor_buffer.copy_(x), repeat, sync)
        out_bands = torch.empty_like(bands)
        out_image = torch.empty_like(x)
        peers = _peers(x, device)
        for direction in ("forward", "inverse"):
            timings = {}
            if direction == "forward":
                timings["ours (out=)"] = _median_ms(lambda: haar_dwt2(x, out=out_bands), repeat, sync)
                timings["ours (alloc)"] = _median_ms(lambda: haar_dwt2(x), repeat, sync)
            else:
                timings["ours (out=)"] = _median_ms(lambda: haar_idwt2(bands, out=out_image), repeat, sync)
                timings["ours (alloc)"] = _median_ms(lambda: haar_idwt2(bands), repeat, sync)
            for name, (forward_fn, inverse_fn) in peers.items():
                fn = forward_fn if direction == "forward" else inverse_fn
                timings[name] = _median_ms(fn, max(3, repeat // 4) if name == "PyWavelets" else repeat, sync)
            peer_times = {k: v for k, v in timings.items() if not k.startswith("ours")}
            best_peer = min(peer_times, key=peer_times.get) if peer_times else None
            rows.append({
                "shape": list(shape), "direction": direction, "device": device, "dtype": str(dtype).split(".")[-1],
                "copy_floor_ms": copy_ms, "bytes": nbytes, "timings_ms": timings, "best_peer": best_peer,
                "speedup_vs_best_peer": (peer_times[best_peer] / timings["ours (out=)"]) if best_peer else None,
                "speedup_alloc_vs_best_peer": (peer_times[best_peer] / timings["ours (alloc)"]) if best_peer else None,
                "percent_of_copy_floor": 100.0 * copy_ms / timings["ours (out=)"],
            })
    return rows


def interference(repeat: int, shape=(16, 1280, 8, 8)) -> dict:
    """Time a small torch workload (a 3x3 conv and a matmul) and a Haar forward + inverse pair, each
    alone and interleaved back to back (torch, Haar, torch, ...: how a UNet with spectral blocks runs).

    Parallel numba kernels on the "omp" threading layer (what this project used before) and torch's
    own OpenMP pool each leave their threads spinning after a region; on 2 cores they take the cores
    from each other. Returns medians in milliseconds: "torch alone", "torch after haar", "haar alone",
    "haar after torch", and "cpu/wall" (process CPU time over wall time of the interleaved loop).
    """
    x = torch.randn(shape)
    bands, image = torch.empty(shape[0], shape[1], 4, shape[2] // 2, shape[3] // 2), torch.empty(shape)
    feature, weight = torch.randn(1, 32, 48, 48), torch.randn(32, 32, 3, 3)
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def work():
        torch.nn.functional.conv2d(feature, weight, padding=1)
        a @ b

    def haar():
        haar_dwt2(x, out=bands)
        haar_idwt2(bands, out=image)

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(5):  # warm-up: compile, thread pools
        haar()
        work()
    result = {"torch alone": [timed(work) for _ in range(repeat)]}
    time.sleep(0.1)
    result["haar alone"] = [timed(haar) for _ in range(repeat)]
    time.sleep(0.1)
    after_haar, after_torch = [], []
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        after_torch.append(timed(haar))
        after_haar.append(timed(work))
    cpu_over_wall = (time.process_time() - cpu) / (time.perf_counter() - wall)
    result |= {"torch after haar": after_haar, "haar after torch": after_torch}
    return {name: 1e3 * statistics.median(times) for name, times in result.items()} | {"cpu/wall": cpu_over_wall}


def print_table(rows: list[dict]) -> None:
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        gb = row["bytes"] / 1e9
        print(f"\n[{shape}] {row['direction']} ({row['device']}, {row['dtype']})")
        print(f"  {'implementation':<18}{'ms':>10}{'GB/s':>10}")
        print(f"  {'copy floor':<18}{row['copy_floor_ms']:>10.3f}{gb / (row['copy_floor_ms'] / 1e3):>10.1f}")
        for name, ms in row["timings_ms"].items():
            print(f"  {name:<18}{ms:>10.3f}{gb / (ms / 1e3):>10.1f}")
        if row["best_peer"]:
            print(f"  -> ours (out=) is {row['speedup_vs_best_peer']:.1f}x the best peer ({row['best_peer']}), "
                  f"{row['percent_of_copy_floor']:.0f}% of the copy floor; "
                  f"ours (alloc) is {row['speedup_alloc_vs_best_peer']:.1f}x the best peer")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--interference", action="store_true",
                        help="only time torch work alone and right after a Haar call (see interference())")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.interference:
        result = interference(args.repeat or 200)
        print(", ".join(f"{name}: {value:.3f}" + (" ms" if name != "cpu/wall" else "")
                        for name, value in result.items()))
        return 0
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeat = args.repeat or (3 if args.quick else 50)
    print(f"torch {torch.__version__}, {args.threads} thread(s), numba kernels: "
          f"{'yes' if haar_kernels._compiled() is not None else 'no (torch path)'}; "
          f"median of {repeat} runs")
    rows = run(shapes, repeat)
    if torch.cuda.is_available() and not args.quick:
        rows += run(shapes, repeat, device="cuda")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
