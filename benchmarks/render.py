"""Face renderer speed: frames per second of ``render_coeffs`` on the procedural head.

For each image size and batch it prints the median time of a full render (coefficients -> shape,
pose, normals, SH shading, rasterisation, interpolation, compositing over a background image) and
of the rasteriser alone (``rasterize`` on already projected vertices), for the CPU fast path
(numba kernels) and the plain torch path (the one CUDA uses), plus CUDA when available.

    python benchmarks/render.py               # 128^2 and 256^2, batch 1 and 8, 2 threads
    python benchmarks/render.py --quick       # tiny sizes, for a smoke test
    python benchmarks/render.py --json results.json --threads 4 --detail 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from singer_core.face.morphable import project, transform, zero_coeffs
from singer_core.face.procedural import procedural_model
from singer_core.face.render import default_lighting, rasterize, render_coeffs

CASES = [(128, 1), (128, 8), (256, 1), (256, 8)]
QUICK_CASES = [(64, 1), (64, 2)]


def _median_s(fn, repeat: int, sync=lambda: None) -> float:
    for _ in range(2):  # warm-up: numba compilation, allocator, thread pools
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _coefficients(batch: int, device) -> torch.Tensor:
    """A talking-head-like batch: random identity/texture, mouth and blink moving, small head motion."""
    generator = torch.Generator().manual_seed(0)
    coeffs = zero_coeffs(batch)
    coeffs[:, 0:80] = (torch.randn(batch, 80, generator=generator) * 0.7).clamp(-2, 2)
    coeffs[:, 144:224] = (torch.randn(batch, 80, generator=generator) * 0.7).clamp(-2, 2)
    coeffs[:, 80:86] = torch.rand(batch, 6, generator=generator) * 0.8
    coeffs[:, 224:227] = torch.randn(batch, 3, generator=generator) * 0.05
    coeffs[:, 227:254] = default_lighting()
    return coeffs.to(device)


def run(cases, repeat: int, detail: int, device: str = "cpu") -> list[dict]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = procedural_model(detail=detail).to(device)
    backends = ["numba", "torch"] if device == "cpu" else ["torch"]
    rows = []
    for size, batch in cases:
        coeffs = _coefficients(batch, device)
        background = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        shape = model.vertices(coeffs[:, :80], coeffs[:, 80:144])
        pixels, depth = project(transform(shape, coeffs[:, 224:227], coeffs[:, 254:257]), None, size)
        for backend in backends:
            with torch.no_grad():
                full = _median_s(lambda: render_coeffs(model, coeffs, image_size=size, background=background,
                                                       backend=backend), repeat, sync)
                raster = _median_s(lambda: rasterize(pixels, depth, model.triangles, size, backend=backend),
                                   repeat, sync)
            rows.append({
                "device": device, "backend": backend, "size": size, "batch": batch, "detail": detail,
                "vertices": model.num_vertices, "triangles": int(model.triangles.shape[0]),
                "render_ms": 1e3 * full, "render_fps": batch / full,
                "raster_ms": 1e3 * raster, "raster_fps": batch / raster,
            })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n  {'device':<7}{'backend':<8}{'size':>6}{'batch':>7}{'render ms':>11}{'frames/s':>10}"
          f"{'raster ms':>11}{'frames/s':>10}")
    for row in rows:
        print(f"  {row['device']:<7}{row['backend']:<8}{row['size']:>6}{row['batch']:>7}"
              f"{row['render_ms']:>11.1f}{row['render_fps']:>10.1f}{row['raster_ms']:>11.1f}"
              f"{row['raster_fps']:>10.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--detail", type=int, default=1, help="procedural mesh detail (1 or 2)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = QUICK_CASES if args.quick else CASES
    repeat = args.repeat or (2 if args.quick else 10)
    model = procedural_model(detail=args.detail)
    print(f"torch {torch.__version__}, {args.threads} thread(s); procedural head detail {args.detail}: "
          f"{model.num_vertices} vertices, {model.triangles.shape[0]} triangles; median of {repeat} runs")
    rows = run(cases, repeat, args.detail)
    if torch.cuda.is_available() and not args.quick:
        rows += run(cases, repeat, args.detail, device="cuda")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
