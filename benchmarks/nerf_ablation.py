"""DAMC Table 3 fusion ablation at tiny scale: one SynthSinger subject, five audio fusions of the per-subject
NeRF (DamcAudioFusion modes), the same budget, seed and sizes; held-out PSNR / SSIM and a mouth-region error.

    content   f_a from the content branch only          (Table 3 "content only")
    dynamic   f_a from the dynamic branch only          (Table 3 "dynamic only")
    concat    Merge([content, dynamic])                 (Table 3 "concat")
    cross     bidirectional cross-attention             (Table 3 "cross-attention")
    csfm      CDCA + FSR (DAMC's CSFM)                  (Table 3 "CSFM")

Without a HuBERT model and a trained Dynamic-Sync Encoder the content branch reads the mel windows and the
dynamic branch is a trainable projection of the same mel windows (the nerf task's tiny stand-ins), so the
two branches see the same signal: differences between rows come from the fusion architecture alone, not
from complementary features as in the paper. The mouth error is measured inside a box around the projected
ground-truth mouth landmarks (48..67) of each held-out frame. DAMC's LMD / Sync need a landmark detector and
SyncNet on the renders and are not computed.

    python benchmarks/nerf_ablation.py --quick             # 150 steps per mode
    python benchmarks/nerf_ablation.py --steps 1500 --out /tmp/nerf-ablation --json ablation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

MODES = ("content", "dynamic", "concat", "cross", "csfm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="150 steps per mode, a 2-second subject")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per mode")
    parser.add_argument("--seconds", type=float, default=4.0, help="subject length")
    parser.add_argument("--size", type=int, default=64, help="frame size")
    parser.add_argument("--seed", type=int, default=0, help="training seed (same for every mode)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seconds = 150, 2.0
    logging.basicConfig(level=logging.WARNING)
    from singer_core.eval.nerf import evaluate_nerf
    from singer_core.nerf.data import make_synthsinger_subject
    from singer_core.train.loop import train

    root = Path(args.out or tempfile.mkdtemp(prefix="nerf-ablation-"))
    subject = root / f"subject_s{args.seconds:g}_px{args.size}"
    if not (subject / "transforms_train.json").is_file():
        make_synthsinger_subject(subject, seconds=args.seconds, size=args.size, seed=0, overwrite=True)
    rows = []
    for mode in args.modes:
        out = root / f"{mode}_steps{args.steps}_seed{args.seed}"
        config = {"fusion_mode": mode, "steps": args.steps, "seed": args.seed, "checkpoint_every": args.steps,
                  "fine_start": int(args.steps * 0.8)}
        start = time.perf_counter()
        final = out / "final"
        if not final.is_dir():
            final = train("nerf", preset="tiny", config=config, data=subject, out=out, device=args.device,
                          quiet=True, resume=out.exists())
        seconds = time.perf_counter() - start
        scores = evaluate_nerf(final, subject, device=args.device)
        rows.append({"mode": mode, **{k: scores[k] for k in ("psnr", "ssim", "mouth_psnr", "mouth_l1")},
                     "train_s": seconds})
        print(f"{mode:<8} PSNR {scores['psnr']:.3f}  SSIM {scores['ssim']:.4f}  mouth PSNR "
              f"{scores['mouth_psnr']:.3f}  mouth L1 {scores['mouth_l1']:.4f}  ({seconds:.0f} s)", flush=True)
    print(f"\nheld-out frames of one SynthSinger subject, {args.steps} steps per mode, seed {args.seed}")
    print("| fusion | PSNR | SSIM | mouth PSNR | mouth L1 |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['psnr']:.3f} | {row['ssim']:.4f} | {row['mouth_psnr']:.3f} | "
              f"{row['mouth_l1']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
