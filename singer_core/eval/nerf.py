"""Held-out evaluation of a trained per-subject NeRF (DAMC §3 Table 1 image metrics): render the frames of
transforms_val.json with their own audio and camera, and score PSNR, SSIM, LPIPS (with user weights) and a
mouth-region error.

LMD needs landmarks of the *rendered* frames, i.e. a 68-point detector; none ships with SINGER, so LMD is not
computed. When the subject has ground-truth landmarks (SynthSinger: the projected 3DMM landmarks), the mouth
box around landmarks 48..67 of each held-out frame gives ``mouth_psnr`` and ``mouth_l1`` (the lip region the
fine stage and DAMC's LMD / Sync focus on).

Command line: ``python -m singer_core.eval nerf --checkpoint OUT/final --data SUBJECT [--lpips-backbone F
--lpips-linear F] [--max-frames N] [--device cpu] [--json FILE|-] [--save-frames DIR]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from ..progress import Progress

logger = logging.getLogger(__name__)


def mouth_scores(pred: torch.Tensor, target: torch.Tensor, landmarks: torch.Tensor) -> tuple[float, float]:
    """(PSNR, mean L1) inside the mouth box of each frame, over all frames' boxes together.

    Args:
        pred, target: (N, H, W, 3) in 0..1; landmarks: (N, 68, 2) pixels (x, y).
    """
    from ..nerf.data import mouth_box

    errors, total = [], 0
    for k in range(pred.shape[0]):
        top, bottom, left, right = mouth_box(landmarks[k], tuple(pred.shape[1:3]))
        diff = pred[k, top:bottom, left:right].double() - target[k, top:bottom, left:right].double()
        errors.append(diff.reshape(-1, 3))
        total += diff.shape[0] * diff.shape[1]
    diff = torch.cat(errors)
    mse = float(diff.square().mean())
    return (10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf), float(diff.abs().mean())


@torch.no_grad()
def evaluate_nerf(checkpoint: str | Path, data: str | Path, *, lpips_backbone: str | None = None,
                  lpips_linear: str | None = None, lpips_net: str = "alex", max_frames: int | None = None,
                  device: str = "cpu", save_frames: str | Path | None = None,
                  progress: Progress | None = None) -> dict:
    """Render the held-out frames of a subject and score them.

    Args:
        checkpoint: NerfSubjectModel folder (nerf task out/final); data: the subject folder.
        lpips_backbone, lpips_linear: LPIPS weight files (both or neither); lpips_net: "alex" / "vgg".
        max_frames: evaluate only the first N held-out frames; device: torch device.
        save_frames: write rendered | ground-truth PNG pairs into this folder.
        progress: progress(done_frames, frames); may raise to stop.
    Returns:
        {"frames", "psnr", "ssim", "lpips" (None without weights), "mouth_psnr", "mouth_l1" (None without
        landmarks), "lmd": None, "notes"}.
    """
    from ..nerf.data import load_subject
    from ..nerf.subject import held_out_codes, load_subject_model
    from .image import psnr, ssim

    model = load_subject_model(checkpoint, device=device).eval()
    subject = load_subject(data, "val")
    c = model.config
    if (subject.width, subject.height) != (c.width, c.height):
        raise ValueError(f"evaluate_nerf: the model renders {c.width}x{c.height}, the subject '{data}' has "
                         f"{subject.width}x{subject.height} frames; evaluate on the subject it was trained on")
    if subject.content_encoder != c.content_encoder:
        raise ValueError(f"evaluate_nerf: the model was trained on '{c.content_encoder}' content features, the "
                         f"subject has '{subject.content_encoder}'")
    codes = held_out_codes(model, subject)
    count = len(subject) if max_frames is None else min(len(subject), int(max_frames))
    preds, targets = [], []
    for k in range(count):
        code = codes[int(subject.aud_ids[k])]
        preds.append(model.render_frame(code, subject.poses[k]).cpu())
        targets.append(subject.images[k].float() / 255.0)
        if progress is not None:
            progress(k + 1, count)
    pred, target = torch.stack(preds), torch.stack(targets)
    result = {"frames": count, "psnr": psnr(pred, target), "ssim": ssim(pred, target), "lpips": None,
              "mouth_psnr": None, "mouth_l1": None, "lmd": None,
              "notes": "LMD not computed: it needs a landmark detector on the rendered frames"}
    if lpips_backbone or lpips_linear:
        from ..nerf.lpips import load_lpips

        metric = load_lpips(lpips_backbone, lpips_linear, lpips_net)
        result["lpips"] = float(metric(pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2), normalize=True).mean())
    if subject.landmarks is not None:
        result["mouth_psnr"], result["mouth_l1"] = mouth_scores(pred, target, subject.landmarks[:count])
    if save_frames is not None:
        import cv2

        folder = Path(save_frames)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            pair = torch.cat([pred[k], target[k]], dim=1)
            cv2.imwrite(str(folder / f"{int(subject.img_ids[k]):06d}.png"),
                        (pair.numpy()[:, :, ::-1] * 255).round().clip(0, 255).astype("uint8"))
    return result


def format_nerf_table(result: dict) -> str:
    """A small text table of evaluate_nerf's scores."""
    def cell(value):
        return "n/a" if value is None else f"{value:.4f}"

    rows = [("frames", str(result["frames"])), ("PSNR", cell(result["psnr"])), ("SSIM", cell(result["ssim"])),
            ("LPIPS", cell(result["lpips"])), ("mouth PSNR", cell(result["mouth_psnr"])),
            ("mouth L1", cell(result["mouth_l1"])), ("LMD", "n/a (no landmark detector)")]
    return "\n".join(f"{name:<12} {value}" for name, value in rows)


def main(argv: list[str]) -> int:
    """`nerf`: evaluate a NerfSubjectModel on the held-out frames of its subject."""
    parser = argparse.ArgumentParser(prog="python -m singer_core.eval nerf",
                                     description="Render the held-out frames (transforms_val.json) of a subject "
                                                 "with a trained nerf model and print PSNR / SSIM / LPIPS / mouth "
                                                 "error.")
    parser.add_argument("--checkpoint", required=True, help="NerfSubjectModel folder (nerf task OUT/final)")
    parser.add_argument("--data", required=True, help="subject folder (transforms_val.json ...)")
    parser.add_argument("--lpips-backbone", default=None, help="torchvision alexnet/vgg16 weights (LPIPS)")
    parser.add_argument("--lpips-linear", default=None, help="lpips v0.1 linear heads, e.g. alex.pth (LPIPS)")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"), help="LPIPS backbone type")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N held-out frames")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--save-frames", default=None, help="write rendered|target PNG pairs into this folder")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON ('-' = stdout)")
    args = parser.parse_args(argv)
    if (args.lpips_backbone is None) != (args.lpips_linear is None):
        parser.error("give both --lpips-backbone and --lpips-linear, or neither")
    from ..io.checkpoint import atomic_write_bytes
    from ..io.cli import report_errors
    from ..io.fs import check_writable_file

    code = [0]
    with report_errors(code):
        if args.json not in (None, "-"):  # an unwritable target fails now, not after the evaluation
            check_writable_file(args.json, "eval nerf --json")
        result = evaluate_nerf(args.checkpoint, args.data, lpips_backbone=args.lpips_backbone,
                               lpips_linear=args.lpips_linear, lpips_net=args.lpips_net,
                               max_frames=args.max_frames, device=args.device, save_frames=args.save_frames)
        print(format_nerf_table(result))
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        elif args.json:
            try:
                atomic_write_bytes(args.json, text.encode(), who="eval nerf --json")
            except OSError:
                print(text)  # the result is not lost: its JSON goes to stdout
                raise
    return code[0]
