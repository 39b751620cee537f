"""Fold rate of sampled motion before / after the data-range prior, with the jaw-vowel correlation kept.

A motion model (the ``motion`` task's ``demo`` preset, the one ``make demo`` and the motion workflow use) samples
the motion of unseen SynthSinger songs (seeds the training set never used), with ``data_prior`` off (the
sampler as it was) and on (the x0 estimate clipped at every DDIM step to each coefficient's training range,
widened by ``--margin`` of its width). Per song:

- mesh folds: frames whose expression folds the lower face of the procedural mesh -- some clearly front-facing
  triangle of the neutral face (normal z > 0.5) nearest to a jaw-line or mouth landmark (0-16, 48-67) turns
  over in the frontal projection (signed area changes sign). The eyes are left out: a blink closes the lids
  over each other, and the ground truth does that;
- out of range: frames with a coefficient outside the training range widened by 10 % of its width (and by
  0.1 standard deviations for coefficients that never move in training);
- jaw r: Pearson correlation of the sampled jaw opening with the ground-truth jaw of the song (driven by the
  sung vowels' energy), as tests/train/test_motion_quality.py.

The ground-truth motion of the same songs is scored too (its fold rate is what the face model shows when
singing correctly).

    python benchmarks/motion_prior.py                       # 20 unseen songs, a few CPU minutes
    python benchmarks/motion_prior.py --model runs/motion/final --songs 5
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


def frontal_triangles(face) -> tuple[torch.Tensor, torch.Tensor]:
    """(triangles (K, 3), neutral signed areas (K,)) of the clearly front-facing lower-face triangles of the mean
    face: normal z > 0.5, nearest (in x, y) to a jaw-line (0-16) or mouth (48-67) landmark."""
    verts = face.mean_shape.double()
    tri = face.triangles
    a, b, c = verts[tri[:, 0]], verts[tri[:, 1]], verts[tri[:, 2]]
    normal = torch.linalg.cross(b - a, c - a)
    facing = normal[:, 2] / normal.norm(dim=1).clamp_min(1e-12) > 0.5
    nearest = torch.cdist(((a + b + c) / 3)[:, :2], verts[face.landmarks68][:, :2]).argmin(1)
    lower = (nearest <= 16) | (nearest >= 48)
    keep = facing & lower
    return tri[keep], signed_areas(verts[None], tri[keep])[0]


def signed_areas(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) vertices -> (B, K) signed areas of the triangles in the frontal (x, y) projection."""
    a, b, c = (vertices[:, triangles[:, k], :2] for k in range(3))
    return 0.5 * ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))


def folded_frames(face, exp: torch.Tensor, triangles: torch.Tensor, neutral: torch.Tensor) -> np.ndarray:
    """(T,) bool: frames whose expression turns some front-facing triangle over."""
    out = []
    identity = torch.zeros(1, 80, dtype=torch.float64)
    for chunk in exp.double().split(16):
        verts = face.vertices(identity.expand(len(chunk), -1), chunk)
        flipped = (signed_areas(verts, triangles) * neutral.sign()) <= 0
        out.append(flipped.any(1).numpy())
    return np.concatenate(out)


def out_of_range(model, exp: torch.Tensor, pose: torch.Tensor) -> np.ndarray:
    """(T,) bool: frames with a coefficient outside the training range widened by 10 % (0.1 std at least)."""
    low = torch.cat([model.exp_low, model.pose_low]).double()
    high = torch.cat([model.exp_high, model.pose_high]).double()
    z = torch.cat(model.normalize(exp.to(model.exp_mean), pose.to(model.pose_mean)), 1).double()
    pad = (0.1 * (high - low)).clamp(min=0.1)
    return ((z < low - pad) | (z > high + pad)).any(1).numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a motion model folder (default: train the demo preset)")
    parser.add_argument("--songs", type=int, default=20, help="unseen songs (default 20)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per song")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (paper: 50)")
    parser.add_argument("--margin", type=float, default=0.05, help="prior margin (share of each range's width)")
    parser.add_argument("--out", default="out/motion-prior", help="training run and cache")
    parser.add_argument("--json", default=None, help="write the per-song numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    from singer_core.audio.encoders import MelEncoder
    from singer_core.audio.io import to_mono
    from singer_core.audio.synth import SongConfig, synthesize_song
    from singer_core.data.motion_from_song import motion_from_song
    from singer_core.face.morphable import EXPRESSION_UNITS
    from singer_core.face.procedural import procedural_model
    from singer_core.motion.generator import MotionModel
    from singer_core.train.loop import train

    folder = args.model
    if folder is None:
        began = time.perf_counter()
        folder = train("motion", preset="demo", out=Path(args.out) / "motion-demo", cache_dir=Path(args.out) / "cache",
                       device="cpu", quiet=True, resume=True)
        print(f"trained the demo motion model in {time.perf_counter() - began:.0f} s", flush=True)
    model = MotionModel.from_pretrained(folder)
    if model.data_range() is None:
        print(f"error: '{folder}' was saved without the training range; retrain it", file=sys.stderr)
        return 1
    face = procedural_model(seed=0)
    triangles, neutral = frontal_triangles(face)
    jaw = EXPRESSION_UNITS["jaw_open"]
    rows = {"before": [], "after": [], "ground truth": []}
    for number in range(args.songs):
        seed = 5000 + number  # the training set uses seed 0's songs
        song = synthesize_song(SongConfig(seconds=args.seconds, seed=seed, backing=True, stereo=True))
        features = MelEncoder().encode(to_mono(song.mix), song.sample_rate, 25)
        truth = motion_from_song(song, fps=25.0, seed=seed)
        motions = {"before": model.generate(features, steps=args.steps, seed=number, data_prior=False),
                   "after": model.generate(features, steps=args.steps, seed=number, prior_margin=args.margin),
                   "ground truth": truth}
        for name, motion in motions.items():
            frames = min(len(motion.exp), len(truth.exp))
            pose = torch.cat([motion.angle, motion.trans], 1)[:frames]
            r = float(np.corrcoef(motion.exp[:frames, jaw].numpy(), truth.exp[:frames, jaw].numpy())[0, 1])
            rows[name].append({"folds": float(folded_frames(face, motion.exp[:frames], triangles, neutral).mean()),
                               "out_of_range": float(out_of_range(model, motion.exp[:frames], pose).mean()),
                               "jaw_r": r})
        print(f"  song {number + 1}/{args.songs}: folds before {rows['before'][-1]['folds']:.3f}, after "
              f"{rows['after'][-1]['folds']:.3f}; jaw r {rows['before'][-1]['jaw_r']:.3f} -> "
              f"{rows['after'][-1]['jaw_r']:.3f}", flush=True)
    print(f"\n  {args.songs} unseen songs x {args.seconds:g} s, {args.steps} DDIM steps, margin {args.margin:g}")
    print(f"  {'':14}{'mesh-fold frames':>18}{'songs w/ folds':>16}{'out-of-range':>14}{'jaw r (mean, min)':>20}")
    for name, values in rows.items():
        folds = np.array([v["folds"] for v in values])
        ranges = np.array([v["out_of_range"] for v in values])
        jaw_r = np.array([v["jaw_r"] for v in values])
        print(f"  {name:14}{folds.mean():>17.2%} {int((folds > 0).sum()):>10}/{len(folds):<5}{ranges.mean():>13.2%}"
              f"{jaw_r.mean():>13.3f}, {jaw_r.min():.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
