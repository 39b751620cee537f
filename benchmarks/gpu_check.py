"""One GPU check for a lent CUDA machine (`make gpu-check`, <= 8 minutes on one H100-class GPU), one JSON out.

Steps (each timed; a failing step is recorded with its error and the others still run):

1. tests: the CUDA / Triton tests (tests/ops/test_triton_kernels.py, tests/face/test_render.py) with pytest;
2. singer: full-size SINGER (SD1.5 widths, 512 x 512, random weights in the official net.pth layout,
   "official-as-run" forward) at fp16, one 16-frame clip (+ 2 motion frames) with the exact-official preset
   (40 DDIM steps, cfg 3.5) and with our fast default (SamplerPlan.fast(), motion frames as latents), a
   full-size SD VAE decoding it: seconds per frame and peak VRAM per preset;
3. nerf: 512 x 512 frames/s with the torch and the fused Triton kernels (benchmarks/nerf.py compare_backends),
   which also compiles the kernels and reports the largest torch - Triton pixel difference;
4. motion: the FD2Talk motion sampler (paper preset, 10 s of audio, 50 steps) generate() time.

--dry-run runs the same steps end to end on the CPU at reduced size (tiny SINGER stack, 1-2 steps, 32-px NeRF
frames under the Triton interpreter when triton imports, the quick motion model): for CI, not for timing.

    python benchmarks/gpu_check.py --json out/gpu_check.json
    python benchmarks/gpu_check.py --dry-run --json /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]



def _step(results: dict, name: str, fn) -> None:
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn()}
    except Exception as error:  # noqa: BLE001 -- every step is reported, the check goes on
        results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                         "trace": traceback.format_exc(limit=4)}
    results[name]["seconds"] = time.perf_counter() - start
    print(f"[{name}] {'ok' if results[name]['ok'] else 'FAILED: ' + results[name]['error']} "
          f"({results[name]['seconds']:.1f} s)", flush=True)


def run_tests(dry_run: bool) -> dict:
    files = ["tests/ops/test_triton_kernels.py", "tests/face/test_render.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    if dry_run:
        command += ["--co"]  # CPU CI: collect only (the CPU run of these files is part of the normal suite)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=420)
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    if done.returncode != 0:
        raise RuntimeError(f"pytest exit {done.returncode}: {tail[0]}")
    return {"summary": tail[0], "files": files}


def run_singer(dry_run: bool, device: str) -> dict:
    from diffusers import AutoencoderKL

    from singer_core.diffusion import DiffusionConfig, SingerNet
    from singer_core.diffusion.clip_loop import SamplerPlan, iter_clips
    from singer_core.diffusion.pipeline import use_sdpa_attention
    from singer_core.diffusion.vae import decode_latents, tiny_vae

    dtype = torch.float32 if dry_run else torch.float16
    config = DiffusionConfig.tiny() if dry_run else DiffusionConfig()
    config = dataclasses.replace(config, forward_mode="official-as-run")
    torch.manual_seed(0)
    with torch.device(device):
        net = SingerNet(config).to(dtype).eval()
        vae = (tiny_vae(0) if dry_run else AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)).to(device, dtype).eval()
    use_sdpa_attention(net)
    use_sdpa_attention(vae)
    latent, frames = config.sample_size, 16
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(frames, config.audio_blocks, config.audio_channels, generator=gen)
    inputs = dict(reference_latent=torch.randn(1, 4, latent, latent, generator=gen).to(device, dtype),
                  face_embedding=torch.randn(1, config.face_embedding_dim, generator=gen).to(device, dtype),
                  audio_features=features.to(device, dtype), clip_frames=frames, motion_frames=2)
    plans = {"official": SamplerPlan.official(), "ours_default": SamplerPlan.fast()}
    if dry_run:
        plans = {name: dataclasses.replace(plan, steps=2) for name, plan in plans.items()}
    rows = {}
    for name, plan in plans.items():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.no_grad():
            for latents in iter_clips(net, plan=plan, **inputs):
                decode_latents(vae, latents)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows[name] = {"seconds_per_frame": seconds / frames, "steps": plan.steps, "plan": json.loads(plan.to_json()),
                      "peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
        print(f"  singer {name}: {rows[name]['seconds_per_frame']:.3f} s/frame", flush=True)
    return {"size": "tiny (dry run)" if dry_run else "full 512x512 fp16", "presets": rows}


def run_nerf(dry_run: bool, device: str) -> dict:
    if dry_run:  # the Triton interpreter must be on before triton is imported: a fresh process
        code = ("import json, nerf; rows = nerf.compare_backends(frame_size=16, samples=8, repeat=1, device='cpu'); "
                "print(json.dumps(rows))")
        try:
            import triton  # noqa: F401
        except ImportError:
            code = ("import json, nerf; rows = nerf.run('cpu', points=256, rays=64, samples=8, frame_size=16, "
                    "repeat=1); print(json.dumps(rows))")
        env = {**os.environ, "TRITON_INTERPRET": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=300)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "nerf check failed")
        return {"rows": json.loads(done.stdout.strip().splitlines()[-1])}
    import nerf  # a sibling script: benchmarks are run as scripts, so their folder is on sys.path

    return {"rows": nerf.compare_backends(frame_size=512, samples=64, repeat=5, device=device)}


def run_motion(dry_run: bool, device: str) -> dict:
    import motion_speed  # a sibling script (see run_nerf)

    model = motion_speed.build_model(dry_run, device)
    fps, seconds = 25.0, 2.0 if dry_run else 10.0
    features = motion_speed.random_features(int(seconds * fps), fps, device)
    steps = 2 if dry_run else 50
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        model.generate(features, steps=steps, seed=0)  # warm-up
        sync()
        start = time.perf_counter()
        model.generate(features, steps=steps, seed=0)
        sync()
    elapsed = time.perf_counter() - start
    return {"audio_seconds": seconds, "steps": steps, "generate_seconds": elapsed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, reduced sizes: runs every step end to end")
    parser.add_argument("--json", type=Path, default=Path("out/gpu_check.json"), help="where to write the results")
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run on a GPU machine or pass --dry-run", file=sys.stderr)
        return 1
    if not args.json.parent.is_dir():
        print(f"error: the folder of --json '{args.json.parent}' does not exist; create it first", file=sys.stderr)
        return 1
    results: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                     "dry_run": args.dry_run, "torch": torch.__version__}
    _step(results, "tests", lambda: run_tests(args.dry_run))
    _step(results, "singer", lambda: run_singer(args.dry_run, device))
    _step(results, "nerf", lambda: run_nerf(args.dry_run, device))
    _step(results, "motion", lambda: run_motion(args.dry_run, device))
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0 if all(results[k]["ok"] for k in ("tests", "singer", "nerf", "motion")) else 1


if __name__ == "__main__":
    sys.exit(main())
