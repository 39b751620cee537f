"""Audio-NeRF speed: tri-plane hash encoding (points/s) and volume rendering (rays/s, frames/s).

Measures, with the ER-NeRF-sized field (3 planes x 12 levels x 1 feature, 2^14 tables, 64-wide MLPs):
  * encoder: TriPlaneEncoder forward, and forward + backward (the table gradient of training);
  * render: render_rays without gradients (inference) and with backward (a training step's rendering),
    every sample evaluated ("dense") and with an occupancy grid skipping empty cells ("skip": a sphere of
    radius 0.6 in the [-1, 1]^3 box is occupied, about 11% of the cells, like a head);
  * frame: a full image through render() (CUDA: 512 x 512, the 30 frames/s goal);
  * backends (whenever CUDA is visible): 512 x 512 frames/s with the plain torch kernels and with the fused
    Triton kernels (ops/triton_kernels.py), same field and rays in the same run, their ratio, the largest
    pixel difference between the two images, and whether the 30 frames/s goal is met.
    CUDA rows outside that section use the default backend ("auto": Triton when it can run).

    python benchmarks/nerf.py                    # CPU, 2 threads (+ the backend section on a GPU machine)
    python benchmarks/nerf.py --quick            # tiny sizes, smoke test
    python benchmarks/nerf.py --device cuda      # adds the CPU table's measures on the GPU
    python benchmarks/nerf.py --threads 8 --json nerf.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from singer_core.nerf.field import AudioConditionedField, AudioFieldConfig
from singer_core.nerf.renderer import render, render_rays
from singer_core.ops import triton_kernels
from singer_core.ops.volume import OccupancyGrid, PinholeCamera

FPS_GOAL = 30.0  # frames/s at 512 x 512 (issue 7)


def _median_s(fn, repeat: int, sync=lambda: None) -> float:
    for _ in range(2):  # warm-up: allocator, thread pools, cached level tables
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _head_occupancy(device, resolution: int = 128) -> OccupancyGrid:
    grid = OccupancyGrid(resolution=resolution).to(device)
    centres = grid.cell_points()
    grid.occupied.copy_((centres.norm(dim=-1) < 0.6).reshape(grid.occupied.shape))
    return grid


def _rays(num: int, device, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a camera at z = 3 through the box, spread over a 40-degree field of view."""
    origins = torch.zeros(num, 3, device=device)
    origins[:, 2] = 3.0
    spread = (torch.rand(num, 2, generator=generator) * 2 - 1).to(device) * 0.36
    dirs = torch.cat([spread, -torch.ones(num, 1, device=device)], dim=1)
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def run(device: str, *, points: int, rays: int, samples: int, frame_size: int, repeat: int) -> list[dict]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    field = AudioConditionedField(AudioFieldConfig()).to(device)
    audio = torch.randn(64, generator=gen).to(device)
    rows = []

    # 1. encoder
    xyz = (torch.rand(points, 3, generator=gen) * 2 - 1).to(device)
    with torch.no_grad():
        fwd = _median_s(lambda: field.encoder(xyz), repeat, sync)

    def encode_backward():
        field.encoder(xyz).sum().backward()

    bwd = _median_s(encode_backward, repeat, sync)
    rows.append({"device": device, "what": "encoder fwd", "unit": "points/s", "n": points, "ms": 1e3 * fwd,
                 "rate": points / fwd})
    rows.append({"device": device, "what": "encoder fwd+bwd", "unit": "points/s", "n": points, "ms": 1e3 * bwd,
                 "rate": points / bwd})

    # 2. rays
    origins, dirs = _rays(rays, device, gen)
    grid = _head_occupancy(device)
    for name, occupancy in (("dense", None), ("skip", grid)):
        with torch.no_grad():
            inf = _median_s(lambda occ=occupancy: render_rays(field, origins, dirs, audio, 0, num_samples=samples,
                                                              occupancy=occ), repeat, sync)

        def train_step(occ=occupancy):
            out = render_rays(field, origins, dirs, audio, 0, num_samples=samples, occupancy=occ, perturb=True)
            out["rgb"].sum().backward()

        trn = _median_s(train_step, repeat, sync)
        rows.append({"device": device, "what": f"render {name} no-grad", "unit": "rays/s", "n": rays,
                     "ms": 1e3 * inf, "rate": rays / inf})
        rows.append({"device": device, "what": f"render {name} fwd+bwd", "unit": "rays/s", "n": rays,
                     "ms": 1e3 * trn, "rate": rays / trn})

    # 3. full frame
    pose = torch.eye(4)
    pose[2, 3] = 3.0
    focal = frame_size / (2 * 0.36)
    camera = PinholeCamera(pose, focal, focal, frame_size / 2, frame_size / 2, frame_size, frame_size)
    chunk = 65536 if device == "cuda" else 8192
    for name, occupancy in (("dense", None), ("skip", grid)):
        with torch.no_grad():
            frame = _median_s(lambda occ=occupancy: render(field, camera, audio, 0, num_samples=samples,
                                                           occupancy=occ, chunk=chunk),
                              max(1, repeat // 2), sync)
        rows.append({"device": device, "what": f"frame {frame_size}^2 {name}", "unit": "frames/s", "n": 1,
                     "ms": 1e3 * frame, "rate": 1.0 / frame})
    return rows


def compare_backends(*, frame_size: int, samples: int, repeat: int, device: str = "cuda") -> list[dict]:
    """Frames/s of a frame_size^2 render with backend "torch" vs "triton" (same field, same run); device
    "cpu" only under TRITON_INTERPRET=1 (a smoke test of this function, not a timing)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    field = AudioConditionedField(AudioFieldConfig()).to(device)
    audio = torch.randn(64, generator=gen).to(device)
    grid = _head_occupancy(device)
    pose = torch.eye(4)
    pose[2, 3] = 3.0
    focal = frame_size / (2 * 0.36)
    camera = PinholeCamera(pose, focal, focal, frame_size / 2, frame_size / 2, frame_size, frame_size)
    rows, best = [], 0.0
    print(f"\nbackends: {frame_size}x{frame_size} frame, {samples} samples/ray, median of {repeat} runs")
    for name, occupancy in (("dense", None), ("skip", grid)):
        fps, images = {}, {}
        for backend in ("torch", "triton"):
            def frame(occ=occupancy):
                return render(field, camera, audio, 0, num_samples=samples, occupancy=occ, chunk=65536)

            with triton_kernels.use_backend(backend), torch.no_grad():
                images[backend] = frame()["rgb"]
                seconds = _median_s(frame, repeat, sync)
            fps[backend] = 1.0 / seconds
            rows.append({"device": device, "what": f"frame {frame_size}^2 {name} {backend}", "unit": "frames/s",
                         "n": 1, "ms": 1e3 * seconds, "rate": fps[backend]})
        best = max(best, fps["triton"])
        diff = float((images["torch"] - images["triton"]).abs().max())
        print(f"  {name:<6} torch {fps['torch']:8.1f} frames/s   triton {fps['triton']:8.1f} frames/s   "
              f"triton/torch {fps['triton'] / fps['torch']:5.2f}x   max |torch - triton| {diff:.2e}")
    verdict = "met" if best >= FPS_GOAL else "not met"
    print(f"  goal >= {FPS_GOAL:.0f} frames/s at {frame_size}x{frame_size} (triton, best of dense/skip): "
          f"{verdict} ({best:.1f} frames/s)")
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n  {'device':<7}{'measure':<28}{'batch':>9}{'ms':>10}{'rate':>14}  unit")
    for row in rows:
        print(f"  {row['device']:<7}{row['what']:<28}{row['n']:>9}{row['ms']:>10.1f}{row['rate']:>14.1f}  {row['unit']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="also run on CUDA when 'cuda'")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--samples", type=int, default=64, help="samples per ray (default 64)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeat = args.repeat or (1 if args.quick else 5)
    if args.quick:
        sizes = dict(points=4096, rays=256, samples=min(args.samples, 16), frame_size=16)
    else:
        sizes = dict(points=262144, rays=4096, samples=args.samples, frame_size=64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); ER-NeRF-sized field; "
          f"{sizes['samples']} samples/ray; median of {repeat} runs")
    rows = run("cpu", repeat=repeat, **sizes)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device visible to torch; CPU results only", file=sys.stderr)
        else:
            print(f"CUDA: {torch.cuda.get_device_name()}")
            cuda_sizes = dict(sizes, points=sizes["points"] * 16, rays=sizes["rays"] * 16,
                              frame_size=16 if args.quick else 512)
            rows += run("cuda", repeat=repeat, **cuda_sizes)
    if not torch.cuda.is_available():
        print("GPU section skipped: no CUDA device (torch vs Triton 512x512 frames/s needs a GPU)")
    elif not triton_kernels.available():
        print("GPU section skipped: triton cannot be imported (it ships with the CUDA builds of torch)")
    else:
        rows += compare_backends(frame_size=32 if args.quick else 512, samples=sizes["samples"], repeat=repeat)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
