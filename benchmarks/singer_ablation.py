"""SINGER module ablation (paper Table 3: w/o MSM, w/o SFM, w/o both) at tiny scale on SynthSinger.

One SynthSinger singer (64-px frames, singing voice) and its training songs are generated into the cache, one
tiny VAE is trained on them (the ``vae`` task) and shared by every run, then four tiny SINGER stacks are
trained from scratch with the same budget (steps, batch, frames, seed) and data:

    full       MSM + SFM                         (``singer`` preset tiny)
    no-msm     audio tokens go unchanged          (tiny-no-msm, Table 3 "w/o MSM")
    no-sfm     identity instead of the SFM        (tiny-no-sfm, Table 3 "w/o SFM")
    no-both    the plain Hallo path               (tiny-no-both, Table 3 "w/o both")

Test clips are NEW songs of the same singer. The paper tests unseen people with a stack pretrained on
thousands of them; a tiny stack trained from scratch in CPU minutes on many identities never learns to copy a
new face through the reference attention (it renders a mean face, about 5 dB below repeating the portrait), so
every variant would fail identically and the table would say nothing about the modules. Per singer, the
stacks learn the face, and what is left to compare is how the song drives it -- which is what MSM and SFM
are about.

Every test clip is generated with ``SingerPipeline`` (reference = the clip's frame 0, the clip's mel-80 audio
features, the whole 64-px frame as the crop, the clip's frame-0 landmarks for the masks) and scored against
its ground-truth frames:

- PSNR / SSIM (dB / 0..1) of the generated frames (from frame 1 on: frame 0 is the given reference); the paper's FVD needs an I3D network we do not ship, so
  these frame metrics stand in for video quality;
- mouth L1 (8-bit grey levels) inside the ground-truth mouth box (the projected ground-truth landmarks
  48..67, expanded 30 %, per frame). This is a STAND-IN for LMD, not LMD: LMD needs landmarks detected on the
  generated frames and we have no landmark detector for synthetic faces;
- energy r: Pearson correlation of the mouth darkness (minus the mean luma in that box: an open mouth shows
  the dark mouth interior) with the vocal RMS per frame; a proxy of mouth-energy correlation;
- BAS (Bailando's Beat Align Score) and diversity (px) of a head-motion proxy: the per-frame centroid of
  the foreground (pixels unlike the flat background), against the song's beat frames; the ground-truth
  row also gives the BAS / diversity of the true landmarks, to show how well the proxy tracks them;
- the same proxies on the ground-truth frames, a "static reference" row (frame 0 repeated: what a model
  that ignores the audio and never moves would score) and the VAE reconstruction (the ceiling the
  shared VAE allows).

The lip-expert sync confidence of ``singer_core.eval`` needs 3DMM mouth vertices, which generated pixels
do not have, so it is not reported. With several seeds the table shows mean +- spread (population std over
seeds). Finished runs and their scores are reused from --out (folder names carry a hash of the config).

    python benchmarks/singer_ablation.py --quick                  # smoke test, a few minutes on 2 cores
    python benchmarks/singer_ablation.py --seeds 0 1              # the tiny preset's budget, two seeds
    python benchmarks/singer_ablation.py --json ablation.json --out /tmp/singer-ablation

The verdict lines compare the variants as measured and say when a gap is within the seed spread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from singer_core.train.loop import train

VARIANTS = {"full": "tiny", "no-msm": "tiny-no-msm", "no-sfm": "tiny-no-sfm", "no-both": "tiny-no-both"}
LABELS = {"full": "SINGER (MSM + SFM)", "no-msm": "SINGER w/o MSM", "no-sfm": "SINGER w/o SFM",
          "no-both": "SINGER w/o both", "static": "static reference (frame 0)", "vae": "VAE reconstruction",
          "gt": "ground truth", "gt_landmarks": "GT landmark centroid"}
# (key, header, better) of the printed columns; better: high, low, or gt (nearer the ground truth)
COLUMNS = (
    ("psnr", "PSNR dB", "high"),
    ("ssim", "SSIM", "high"),
    ("mouth_l1", "mouth L1", "low"),
    ("energy_r", "energy r", "high"),
    ("bas", "BAS", "high"),
    ("diversity", "div px", "gt"),
)
IMAGE_SIZE = 64  # the tiny presets' frame size (the tiny VAE's 4x downscale -> 16 x 16 latents)
MOUTH = slice(48, 68)
MOUTH_MARGIN = 0.3  # mouth box expansion on each side, as a share of its width / height
SCORE_VERSION = 2  # part of the cached scores' key: bump when a metric changes


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def _train(task: str, preset: str, overrides: dict, data: Path, out_root: Path, cache: Path, name: str) -> Path:
    """Train (or reuse) a run; the folder name carries a hash of its settings so stale runs are never mixed."""
    out = out_root / f"{name}-{_digest([task, preset, overrides, str(data)])}"
    final = out / "final"
    if (final / "config.json").is_file():
        return final
    began = time.perf_counter()
    result = train(task, preset=preset, config=overrides, data=data, out=out, resume=True, device="cpu",
                   cache_dir=cache, quiet=True)
    print(f"  trained {name:<18} {overrides.get('steps')} steps in {time.perf_counter() - began:6.1f} s",
          flush=True)
    return result


# ---- per-frame proxies -----------------------------------------------------------------------------
def mouth_boxes(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(T, 68, 2) pixel landmarks -> (T, 4) int boxes x0, y0, x1, y1 (exclusive) around the mouth points,
    expanded by MOUTH_MARGIN of their extent on each side and clipped to the frame."""
    points = landmarks[:, MOUTH]
    low, high = points.min(1), points.max(1)
    pad = (high - low) * MOUTH_MARGIN + 1.0
    low, high = np.floor(low - pad), np.ceil(high + pad)
    return np.clip(np.concatenate([low, high], 1), 0, size).astype(np.int64)


def luma(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float 0..1 -> (T, H, W) BT.601 luma."""
    return frames @ np.array([0.299, 0.587, 0.114])


def head_track(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float 0..1 -> (T, 2) centroid (x, y) in pixels of the foreground (pixels that differ from
    the frame's border colour, the flat SynthSinger background, soft-weighted): the head-motion proxy of BAS
    and diversity."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], 1)  # (T, 4S, 3)
    background = np.median(border, axis=1)  # (T, 3)
    weight = np.clip(np.abs(frames - background[:, None, None]).sum(-1) / 0.15, 0.0, 1.0)  # (T, H, W)
    ys, xs = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    total = weight.sum((1, 2)) + 1e-9
    return np.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], 1)


def clip_scores(frames: np.ndarray, truth: np.ndarray, boxes: np.ndarray, energy: np.ndarray, beats,
                compare: bool = True) -> dict[str, float]:
    """Scores of generated frames (T, H, W, 3) against ground-truth frames (same shape, float 0..1)."""
    from singer_core.eval.image import psnr, ssim
    from singer_core.eval.motion import beat_align_score, diversity, pearson

    grey = luma(frames)
    darkness = np.array([-grey[t, y0:y1, x0:x1].mean() for t, (x0, y0, x1, y1) in enumerate(boxes)])
    track = head_track(frames)
    scores = {"energy_r": pearson(darkness, energy, "energy_r"), "diversity": diversity(track),
              "bas": beat_align_score(track, beat_frames=beats) if beats else float("nan")}
    if compare:  # frame 0 is the given reference: scored from frame 1 on
        scores["psnr"] = psnr(torch.from_numpy(frames[1:]), torch.from_numpy(truth[1:]))
        scores["ssim"] = ssim(torch.from_numpy(frames[1:]), torch.from_numpy(truth[1:]))
        error = np.abs(frames - truth).mean(-1)
        scores["mouth_l1"] = 255.0 * float(np.mean([error[t, y0:y1, x0:x1].mean()
                                                    for t, (x0, y0, x1, y1) in enumerate(boxes) if t > 0]))
    return scores


def _mean(rows: list[dict]) -> dict[str, float]:
    out = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [row[key] for row in rows if key in row and not math.isnan(row[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


# ---- the test clips ---------------------------------------------------------------------------------
def load_test_clips(root: Path, split: str, max_clips: int | None) -> list[dict]:
    """Per test clip: ground-truth frames (T, S, S, 3) float 0..1, landmarks, mouth boxes, vocal energy,
    beats and the mel-80 features (the tiny net's audio projection takes their 16 x 80 rows)."""
    import dataclasses

    from singer_core.audio.encoders import MelEncoder
    from singer_core.data.format import read_clip, read_index
    from singer_core.eval.evaluate import frame_energy

    index = read_index(root)
    encoder = MelEncoder()
    clips = []
    for clip_id in index.split(split)[:max_clips]:
        clip = read_clip(root / clip_id)
        meta = clip.meta
        if meta.size != IMAGE_SIZE or clip.landmarks is None:
            raise ValueError(f"singer_ablation: clip {clip_id} is {meta.size} px or has no landmarks; the "
                             f"benchmark generates its own {IMAGE_SIZE}-px SynthSinger data")
        features = encoder.encode(clip.audio, meta.sample_rate, meta.fps)
        frames = min(meta.frames, features.features.shape[0])
        features = dataclasses.replace(features, features=features.features[:frames])
        landmarks = clip.landmarks["landmarks"][:frames].double().numpy()
        vocals = clip.read_wav("vocals.wav") if (clip.folder / "vocals.wav").is_file() else clip.audio
        clips.append({"id": clip_id, "truth": clip.frames(0, frames).double().numpy() / 255.0,
                      "landmarks": landmarks, "boxes": mouth_boxes(landmarks, meta.size),
                      "energy": frame_energy(vocals, meta.sample_rate, meta.fps, frames),
                      "beats": meta.extra.get("beat_frames"), "features": features, "fps": meta.fps})
    if not clips:
        raise ValueError(f"singer_ablation: the '{split}' split of '{root}' is empty; use more --clips (the "
                         "folder needs clips)")
    return clips


def reference_rows(clips: list[dict], vae_folder: Path) -> dict[str, dict]:
    """Scores of the ground truth, of frame 0 repeated, and of the VAE reconstruction."""
    from singer_core.diffusion.vae import decode_latents, encode_images, load_vae

    vae = load_vae(vae_folder)
    from singer_core.eval.motion import beat_align_score, diversity

    rows = {"gt": [], "gt_landmarks": [], "static": [], "vae": []}
    for clip in clips:
        truth = clip["truth"]
        args = (clip["boxes"], clip["energy"], clip["beats"])
        rows["gt"].append(clip_scores(truth, truth, *args, compare=False))
        centroid = clip["landmarks"].mean(1)  # (T, 2): the true head position the proxy approximates
        rows["gt_landmarks"].append({"diversity": diversity(centroid), "bas": beat_align_score(
            centroid, beat_frames=clip["beats"]) if clip["beats"] else float("nan")})
        rows["static"].append(clip_scores(np.repeat(truth[:1], len(truth), 0), truth, *args))
        with torch.no_grad():
            pixels = torch.from_numpy(truth).float().permute(0, 3, 1, 2) * 2.0 - 1.0
            latents = encode_images(vae, pixels)  # (T, C, h, w)
            decoded = decode_latents(vae, latents).double().numpy()
        rows["vae"].append(clip_scores(decoded, truth, *args))
    return {name: _mean(values) for name, values in rows.items()}


def generate_scores(final: Path, clips: list[dict], args, seed: int) -> dict[str, float]:
    """Generate every test clip with a trained folder's SingerPipeline and score it."""
    from singer_core.diffusion.model_folder import SingerTrainingInfo
    from singer_core.diffusion.net import SingerNet
    from singer_core.diffusion.pipeline import PipelineOptions, SingerPipeline
    from singer_core.diffusion.vae import load_vae

    info = SingerTrainingInfo.read(final)
    net = SingerNet.from_pretrained(final)
    vae = load_vae(final / info.vae if not Path(info.vae).is_absolute() else info.vae)
    options = PipelineOptions(steps=args.sample_steps, guidance=args.guidance, seed=seed,
                              clip_frames=info.frames, motion_frames=info.motion_frames, dtype="fp32",
                              device="cpu", crop_ratio=0.0, use_msm=net.config.use_msm)
    pipeline = SingerPipeline.from_parts(net, vae, config=options, schedule=info.schedule)
    rows = []
    with torch.no_grad():
        for clip in clips:
            truth = clip["truth"]
            size = truth.shape[1]
            result = pipeline(truth[0], features=clip["features"], face_box=(0, 0, size, size),
                              landmarks=clip["landmarks"][0], fps=clip["fps"])
            frames = result.frames.double().numpy()
            rows.append(clip_scores(frames, truth, clip["boxes"], clip["energy"], clip["beats"]))
    return _mean(rows)


def heldout_songs(songs: int, test_songs: int, seconds: float, cache: Path) -> Path:
    """New songs of the training singer: clips songs .. songs + test_songs - 1 of the same SynthSinger identity
    (identity 0, seed 0), generated once into the cache as a dataset folder (all in its train split)."""
    from singer_core.data.format import read_index, scan_clips, write_index
    from singer_core.data.synthetic import SynthSingerConfig, generate_clip, write_synth_clip

    total = songs + test_songs
    config = SynthSingerConfig(clips=total, clips_per_identity=total, seconds=seconds, size=IMAGE_SIZE, seed=0)
    root = cache / f"heldout-{_digest([config.to_json(), songs])}"
    try:
        read_index(root)
        return root
    except (FileNotFoundError, ValueError):
        pass
    root.mkdir(parents=True, exist_ok=True)
    for index in range(songs, total):
        write_synth_clip(root, generate_clip(config, index), overwrite=True)
    write_index(root, scan_clips(root))
    return root


def run(args) -> dict:
    from singer_core.data.format import read_index
    from singer_core.data.synthetic import SynthSingerConfig
    from singer_core.train.data_cache import synth_dataset

    out_root, cache = Path(args.out), Path(args.out) / "cache"
    # 1. the data: one singer, `songs` training songs; new songs of the same singer to test (generated once)
    began = time.perf_counter()
    synth = SynthSingerConfig(clips=args.songs, clips_per_identity=args.songs, seconds=args.seconds,
                              size=IMAGE_SIZE, seed=0)
    root = synth_dataset(synth, cache)
    test_root = heldout_songs(args.songs, args.test_songs, args.test_seconds, cache)
    print(f"data: one SynthSinger singer at {IMAGE_SIZE} px, {len(read_index(root).split('all'))} training songs x "
          f"{synth.seconds:g} s; {args.test_songs} new songs x {args.test_seconds:g} s to test, ready in "
          f"{time.perf_counter() - began:.1f} s", flush=True)
    # 2. one tiny VAE for every run (trained on the training songs)
    vae = _train("vae", "tiny", {"image_size": IMAGE_SIZE, "steps": args.vae_steps, "seed": 0, "split": "all",
                                 "checkpoint_every": args.vae_steps, "keep_checkpoints": 1, "log_every": 50},
                 root, out_root, cache, "vae")
    clips = load_test_clips(test_root, "all", args.max_test)
    reference = reference_rows(clips, vae)
    # 3. the four variants x seeds, identical budget
    common = {"vae": str(Path(vae).resolve()), "steps": args.steps, "checkpoint_every": args.steps,
              "keep_checkpoints": 1, "log_every": 50, "split": "all"}
    for key in ("frames", "lr", "batch_size"):
        if getattr(args, key) is not None:
            common[key] = getattr(args, key)
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for seed in args.seeds:
        for name, preset in VARIANTS.items():
            overrides = {**common, "seed": seed}
            final = _train("singer", preset, overrides, root, out_root, cache, f"{name}-s{seed}")
            key = [SCORE_VERSION, overrides, preset, str(root), args.sample_steps, args.guidance, args.max_test]
            score_file = out_root / f"scores-{name}-s{seed}-{_digest(key)}.json"
            if score_file.is_file():
                scores = json.loads(score_file.read_text())
            else:
                began = time.perf_counter()
                scores = generate_scores(final, clips, args, seed)
                score_file.write_text(json.dumps(scores))
                print(f"  generated {name:<8} seed {seed}: {len(clips)} test clips in "
                      f"{time.perf_counter() - began:5.1f} s", flush=True)
            results[name].append(scores)
    return {"variants": results, "reference": reference, "test_clips": [c["id"] for c in clips],
            "settings": vars(args) | {"out": str(args.out)}}


# ---- the table and the verdicts ------------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def _cell(value: float, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_table(result: dict) -> dict[str, dict[str, tuple[float, float]]]:
    summary = {name: {key: _stats([row.get(key, float("nan")) for row in rows]) for key, _h, _b in COLUMNS}
               for name, rows in result["variants"].items()}
    seeds = len(next(iter(result["variants"].values())))
    spread = seeds > 1
    width = 16 if spread else 11
    over = f" +- std over {seeds} seeds" if spread else ""
    print(f"\n  SINGER Table 3 style, {len(result['test_clips'])} test clips, mean{over} "
          "(better: ^ higher, v lower, ~ nearer GT)")
    header = f"  {'setting':<28}" + "".join(f"{h + {'high': ' ^', 'low': ' v', 'gt': ' ~'}[b]:>{width}}"
                                            for _k, h, b in COLUMNS)
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name in ("no-msm", "no-sfm", "no-both", "full"):
        cells = []
        for key, _h, _b in COLUMNS:
            mean, std = summary[name][key]
            cells.append(_cell(mean) + (f"+-{_cell(std)}" if spread else ""))
        print(f"  {LABELS[name]:<28}" + "".join(f"{c:>{width}}" for c in cells))
    print("  " + "-" * (len(header) - 2))
    for name in ("static", "vae", "gt", "gt_landmarks"):
        row = result["reference"][name]
        print(f"  {LABELS[name]:<28}" + "".join(f"{_cell(row.get(key, float('nan'))):>{width}}"
                                                for key, _h, _b in COLUMNS))
    print("  (LMD stand-in: mouth L1 = mean |generated - true| in 8-bit levels inside the true mouth box; energy r: "
          "mouth-box darkness vs vocal RMS;\n   BAS / div: foreground-centroid head track; no landmark detector, "
          "no FVD, no lip-expert sync on pixels)")
    return summary


def print_trends(summary: dict, reference: dict, spread: bool) -> None:
    """One line per paper trend (SINGER Table 3 / §4.4): does it reproduce, beyond the seed spread?"""

    def compare(a: str, b: str, key: str, higher: bool) -> tuple[bool, str]:
        (ma, sa), (mb, sb) = summary[a][key], summary[b][key]
        if math.isnan(ma) or math.isnan(mb):
            return False, f"{key} undefined"
        wins = ma > mb if higher else ma < mb
        clear = abs(ma - mb) > sa + sb
        return wins, f"{key} {ma:.3f} vs {mb:.3f}" + ("" if clear or (sa + sb) == 0 else " (within spread)")

    others = ("no-msm", "no-sfm", "no-both")
    trends = [
        ("w/o MSM: less vivid (lower diversity and BAS than full)",
         [("full", "no-msm", "diversity", True), ("full", "no-msm", "bas", True)]),
        ("w/o SFM: unstable (higher diversity but lower BAS than full)",
         [("no-sfm", "full", "diversity", True), ("full", "no-sfm", "bas", True)]),
        ("full has the lowest LMD (stand-in: mouth L1) of the four",
         [("full", other, "mouth_l1", False) for other in others]),
        ("full has the best video quality (FVD; stand-in: PSNR, SSIM) of the four",
         [("full", other, key, True) for other in others for key in ("psnr", "ssim")]),
        ("full has the highest BAS of the four", [("full", other, "bas", True) for other in others]),
        ("both modules beat neither (w/o both worse on mouth L1, BAS, PSNR)",
         [("full", "no-both", "mouth_l1", False), ("full", "no-both", "bas", True),
          ("full", "no-both", "psnr", True)]),
    ]
    print("\n  paper trends (SINGER Table 3):" + ("" if spread else " [one seed: gaps are NOT tested against seed "
                                                   "noise; run --seeds 0 1 2]"))
    for text, checks in trends:
        outcomes = [compare(a, b, key, higher) for a, b, key, higher in checks]
        won = sum(ok for ok, _ in outcomes)
        verdict = "REPRODUCES" if won == len(outcomes) else ("PARTLY" if won else "does NOT reproduce")
        if won == len(outcomes) and any("within spread" in note for _ok, note in outcomes):
            verdict = "same direction, but within the seed spread"
        print(f"  - {text}: {verdict} ({'; '.join(note for _ok, note in outcomes)})")
    # did anything audio-driven get learned at all?
    static = reference["static"]
    best = max(summary, key=lambda name: summary[name]["psnr"][0])
    learned = summary[best]["psnr"][0] > static["psnr"] and summary[best]["mouth_l1"][0] < static["mouth_l1"]
    gt_r = reference["gt"].get("energy_r", float("nan"))
    print(f"  - sanity: best variant ({best}) PSNR {summary[best]['psnr'][0]:.2f} dB / mouth L1 "
          f"{summary[best]['mouth_l1'][0]:.2f} vs static reference {static['psnr']:.2f} dB / "
          f"{static['mouth_l1']:.2f}: " + ("beats" if learned else "does NOT beat") + " copying frame 0; "
          f"ground-truth energy r {gt_r:.3f} (what a lip-synced model would approach)")
    moving = max(summary[name]["diversity"][0] for name in summary)
    gt_div = reference["gt"].get("diversity", float("nan"))
    if moving < 0.25 * gt_div:
        print(f"  - caution: the generated heads barely move (diversity <= {moving:.3f} px vs {gt_div:.3f} px in the "
              "ground truth), so the BAS / diversity verdicts above compare jitter, not head motion")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke setting (a few minutes): 4 songs, few steps")
    parser.add_argument("--steps", type=int, default=None,
                        help="singer training steps per variant (default: the tiny preset's 800)")
    parser.add_argument("--vae-steps", type=int, default=None,
                        help="steps of the shared tiny VAE (default: the tiny preset's 800)")
    parser.add_argument("--frames", type=int, default=None, help="frames per training sample / generated clip "
                        "(default: the tiny preset's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the tiny preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the tiny preset's)")
    parser.add_argument("--songs", type=int, default=None, help="training songs of the one singer (default 24)")
    parser.add_argument("--seconds", type=float, default=None, help="training song length in seconds (default 1)")
    parser.add_argument("--test-songs", type=int, default=4, help="new songs of the singer to test (default 4)")
    parser.add_argument("--test-seconds", type=float, default=2.0, help="their length in seconds (default 2)")
    parser.add_argument("--max-test", type=int, default=None, help="score at most this many test clips")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training / sampling seeds")
    parser.add_argument("--sample-steps", type=int, default=None, help="DDIM steps when generating (default 20)")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance when generating (default 1: conditional branch only; "
                             "the paper's 3.5 amplifies the errors of an under-trained tiny net)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the tiny convolutions run several times faster on one "
                             "thread than on two on a shared 2-core machine)")
    parser.add_argument("--out", default="/tmp/singer-ablation", help="run + data cache folder")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = args.steps or (30 if quick else 800)
    args.vae_steps = args.vae_steps or (60 if quick else 800)
    args.songs = args.songs or (4 if quick else 24)
    args.seconds = args.seconds or 1.0
    args.sample_steps = args.sample_steps or (5 if quick else 20)
    if quick and args.max_test is None:
        args.max_test = 1
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("singer_core.diffusion.pipeline").setLevel(logging.ERROR)  # zero-embedding note per call
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.steps} singer steps per variant, "
          f"VAE {args.vae_steps} steps, seeds {args.seeds}, {args.sample_steps} DDIM steps, guidance "
          f"{args.guidance:g}", flush=True)
    began = time.perf_counter()
    result = run(args)
    summary = print_table(result)
    print_trends(summary, result["reference"], len(args.seeds) > 1)
    print(f"\n  total {time.perf_counter() - began:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**result, "summary": summary}, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
