"""FD2Talk frame-stage ablation (paper Table 2, "Conditions of Diffusion UNet"): two distinct cross-attention
layers (phi_1 on motion, phi_2 on the reference latent) vs one cross-attention on the concatenated conditions,
at tiny scale on SynthSinger.

One SynthSinger singer (64-px frames) and its training songs are generated into the cache; the tiny frame
autoencoder (the ``vae`` task, then ``frame-autoencoder``: E / 2d-input D, eqs. 13-15) is trained once and shared;
then the frame UNet is trained from scratch in both variants with the same budget (``frames`` task, preset tiny,
``condition`` = "dual" or "concat"), for every seed.

Test clips are NEW songs of the same singer (as benchmarks/singer_ablation.py: a tiny model trained in CPU
minutes learns one face). Each test clip is animated from its frame 0 with its ground-truth expression + pose
(the stage the table ablates; the motion stage is held fixed) and scored against its ground-truth frames from
frame 1 on: PSNR, SSIM, and mouth L1 (8-bit levels inside the projected ground-truth mouth landmarks 48..67,
expanded 30 %: a stand-in for LMD, which needs a landmark detector for generated frames that we do not ship).
Reference rows: the copy-reference baseline (frame 0 repeated: a model that ignores the motion) and the
autoencoder's reconstruction D([E(F_0), E(F_t)]) (the ceiling the shared autoencoder allows).

    python benchmarks/fd2talk_frames_ablation.py --quick             # smoke test, minutes on 2 cores
    python benchmarks/fd2talk_frames_ablation.py --seeds 0 1 2       # the tiny preset's budget, three seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

# benchmarks are scripts: their folder is on sys.path, so the SINGER ablation's data and proxies are shared
from singer_ablation import (
    IMAGE_SIZE,
    _digest,
    _mean,
    _stats,
    _train,
    clip_scores,
    heldout_songs,
    load_test_clips,
)

VARIANTS = {"dual": "two cross-attentions (phi_1, phi_2)", "concat": "concatenated conditions"}
LABELS = {**VARIANTS, "static": "copy the reference (frame 0)", "autoencoder": "autoencoder reconstruction"}
COLUMNS = (("psnr", "PSNR dB", "high"), ("ssim", "SSIM", "high"), ("mouth_l1", "mouth L1", "low"))
SCORE_VERSION = 1


def clip_motion(root: Path, clip_id: str, frames: int) -> torch.Tensor:
    """(T, 70) ground-truth [exp, angle, trans] of a clip."""
    from singer_core.data.format import read_clip

    coeffs = read_clip(root / clip_id).coeffs
    return torch.cat([coeffs["exp"][:frames], coeffs["angle"][:frames], coeffs["trans"][:frames]], 1).float()


def reference_rows(clips: list[dict], autoencoder_folder: str) -> dict[str, dict]:
    """Scores of frame 0 repeated and of the autoencoder's two-frame reconstruction."""
    from singer_core.diffusion.fd2talk_decoder import FrameAutoencoder

    model = FrameAutoencoder.from_pretrained(autoencoder_folder)
    rows = {"static": [], "autoencoder": []}
    for clip in clips:
        truth = clip["truth"]
        args = (clip["boxes"], clip["energy"], clip["beats"])
        rows["static"].append(clip_scores(np.repeat(truth[:1], len(truth), 0), truth, *args))
        with torch.no_grad():
            pixels = torch.from_numpy(truth).float().permute(0, 3, 1, 2) * 2 - 1
            recon = model(pixels[:1].expand(len(pixels), -1, -1, -1), pixels)
        rows["autoencoder"].append(clip_scores((recon / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).double().numpy(),
                                               truth, *args))
    return {name: _mean(values) for name, values in rows.items()}


def generate_scores(final: Path, clips: list[dict], test_root: Path, args, seed: int) -> dict[str, float]:
    """Animate every test clip from its frame 0 with its ground-truth motion; mean scores over clips."""
    from singer_core.diffusion.fd2talk_portrait import animate_portrait, load_frame_model

    model = load_frame_model(final)
    rows = []
    for clip in clips:
        truth = clip["truth"]
        motion = clip_motion(test_root, clip["id"], len(truth))
        frames = animate_portrait(model, torch.from_numpy(truth[0]).float(), motion, steps=args.sample_steps,
                                  seed=seed, frame_batch=25)
        frames = frames.double().numpy()
        frames[0] = truth[0]  # frame 0 is the given reference (not scored)
        rows.append(clip_scores(frames, truth, clip["boxes"], clip["energy"], clip["beats"]))
    return _mean(rows)


def run(args) -> dict:
    from singer_core.data.synthetic import SynthSingerConfig
    from singer_core.train.data_cache import synth_dataset

    out_root, cache = Path(args.out), Path(args.out) / "cache"
    # 1. data: one singer, training songs; new songs of the singer to test
    synth = SynthSingerConfig(clips=args.songs, clips_per_identity=args.songs, seconds=args.seconds,
                              size=IMAGE_SIZE, seed=0)
    root = synth_dataset(synth, cache)
    test_root = heldout_songs(args.songs, args.test_songs, args.test_seconds, cache)
    data = {"image_size": IMAGE_SIZE, "split": "all", "synth_clips": args.songs, "synth_seconds": args.seconds,
            "synth_clips_per_identity": args.songs}
    # 2. the shared autoencoder: tiny VAE, then the two-frame fine-tune of E and the 2d-input D
    vae = _train("vae", "tiny", {"image_size": IMAGE_SIZE, "steps": args.vae_steps, "seed": 0, "split": "all",
                                 "checkpoint_every": args.vae_steps, "keep_checkpoints": 1, "log_every": 50},
                 root, out_root, cache, "vae")
    autoencoder = _train("frame-autoencoder", "tiny", {**data, "vae": str(Path(vae).resolve()),
                                                       "steps": args.autoencoder_steps,
                                                       "checkpoint_every": args.autoencoder_steps,
                                                       "keep_checkpoints": 1}, root, out_root, cache, "autoencoder")
    clips = load_test_clips(test_root, "all", args.max_test)
    reference = reference_rows(clips, autoencoder)
    # 3. both variants x seeds, identical budget
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for seed in args.seeds:
        for name in VARIANTS:
            overrides = {**data, "autoencoder": str(Path(autoencoder).resolve()), "condition": name, "seed": seed,
                         "steps": args.steps, "checkpoint_every": args.steps, "keep_checkpoints": 1}
            final = _train("frames", "tiny", overrides, root, out_root, cache, f"{name}-s{seed}")
            key = [SCORE_VERSION, overrides, args.sample_steps, args.max_test, args.test_songs]
            score_file = out_root / f"scores-{name}-s{seed}-{_digest(key)}.json"
            if score_file.is_file():
                scores = json.loads(score_file.read_text())
            else:
                began = time.perf_counter()
                scores = generate_scores(final, clips, test_root, args, seed)
                score_file.write_text(json.dumps(scores))
                print(f"  animated {name:<7} seed {seed}: {len(clips)} test clips in "
                      f"{time.perf_counter() - began:5.1f} s", flush=True)
            results[name].append(scores)
    return {"variants": results, "reference": reference, "test_clips": [c["id"] for c in clips],
            "settings": vars(args) | {"out": str(args.out)}}



def print_table(result: dict) -> dict:
    seeds = len(next(iter(result["variants"].values())))
    summary = {name: {key: _stats([row.get(key, float("nan")) for row in rows]) for key, _h, _b in COLUMNS}
               for name, rows in result["variants"].items()}
    print(f"\n  FD2Talk Table 2 style, {len(result['test_clips'])} new songs, mean +- std over {seeds} seed(s)")
    print(f"  {'':38}" + "".join(f"{header:>18}" for _k, header, _b in COLUMNS))
    for name, row in summary.items():
        print(f"  {LABELS[name]:38}" + "".join(f"{row[k][0]:>10.3f} +- {row[k][1]:<5.3f}" for k, _h, _b in COLUMNS))
    for name, row in result["reference"].items():
        print(f"  {LABELS[name]:38}" + "".join(f"{row.get(k, float('nan')):>18.3f}" for k, _h, _b in COLUMNS))
    for key, header, better in COLUMNS:
        (dual, dual_sd), (concat, concat_sd) = summary["dual"][key], summary["concat"][key]
        wins = dual > concat if better == "high" else dual < concat
        within = abs(dual - concat) <= max(dual_sd, concat_sd)
        print(f"  {header}: two cross-attentions {'better' if wins else 'worse'} than concatenation "
              f"({dual:.3f} vs {concat:.3f}){' -- within the seed spread' if within else ''}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    parser.add_argument("--steps", type=int, default=600, help="frame UNet steps per variant (tiny preset: 600)")
    parser.add_argument("--songs", type=int, default=8, help="training songs of the singer (default 8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per training song")
    parser.add_argument("--test-songs", type=int, default=3, help="new songs to test (default 3)")
    parser.add_argument("--test-seconds", type=float, default=2.0, help="seconds per test song")
    parser.add_argument("--max-test", type=int, default=None, help="score at most this many test songs")
    parser.add_argument("--sample-steps", type=int, default=20, help="DDIM steps per frame (paper: 50)")
    parser.add_argument("--vae-steps", type=int, default=400, help="tiny VAE steps")
    parser.add_argument("--autoencoder-steps", type=int, default=200, help="frame autoencoder fine-tune steps")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny budgets everywhere")
    parser.add_argument("--out", default="out/fd2talk-frames-ablation", help="runs, cache and scores")
    parser.add_argument("--json", default=None, help="write the raw result here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.songs, args.seconds, args.test_songs, args.test_seconds = 30, 2, 1.0, 1, 1.0
        args.sample_steps, args.vae_steps, args.autoencoder_steps = 4, 30, 10
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result["summary"] = print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
