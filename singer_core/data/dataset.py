"""A torch Dataset of aligned training windows over the SINGER clip format (frames, the audio samples of
exactly those frames, cached audio features, 3DMM coefficients, landmarks), with the clip's first frame as
the reference image as the SINGER paper trains; works for synthetic and real (coefficient-free) clips."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch

from .format import Clip, read_index

logger = logging.getLogger(__name__)

REFERENCES = ("first", "window")


class SingerClipDataset(torch.utils.data.Dataset):
    """Windows of `window` consecutive frames from every clip of a split, in a deterministic order.

    Item i is a dict:
        frames: (window, 3, H, W) float32 in 0..1 (H = W = image_size or the clip size)
        reference: (3, H, W) float32, the clip's first frame ("first") or the window's first ("window")
        audio: (S,) float32 mono, S = round(window / fps * sample_rate) samples starting at sample
            round(start / fps * sample_rate): exactly the span of the frames (zeros past the audio's end);
            only with with_audio
        features: (window, R, D) rows of the clip's cached SingerAudioFeatures; only with features_dir
        coeffs: {name: (window, D)} for exp, angle, trans, id, tex, gamma; only for clips with coefficients
            (per-clip entries are repeated over the window)
        landmarks: (window, 68, 2) pixels in the returned image size, when the clip has landmarks
        box, ...: the other per-frame tensors of landmarks.safetensors for the same rows, as stored
            (real clips: box (window, 4), the crop in the source video, and what the preprocessor adds)
        clip_id: str; start: int, the window's first frame; fps: float; sample_rate: int

    Frames are decoded per item (memory bounded by one window); nothing is cached, so the dataset can be
    used from DataLoader worker processes.

    Args:
        root: the dataset folder (with index.json).
        split: "train", "test" or "all".
        window: frames per item (>= 1), or None for whole clips (one item per clip; variable length).
        stride: frames between window starts (default: window, i.e. non-overlapping).
        image_size: resize frames (and landmarks) to this square size; None keeps the clip size.
        with_audio: include the audio samples of each window.
        features_dir: folder with <clip_id>.safetensors SingerAudioFeatures (relative paths are under root);
            None for no features.
        reference: "first" (the clip's first frame, SINGER's training) or "window" (the window's first frame).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, window: int | None = 16,
                 stride: int | None = None, image_size: int | None = None, with_audio: bool = True,
                 features_dir: str | os.PathLike | None = None, reference: str = "first"):
        self.root = Path(root)
        index = read_index(self.root)
        clip_ids = index.split(split)
        if not clip_ids:
            raise ValueError(f"SingerClipDataset: split {split!r} of '{root}' is empty (train "
                             f"{len(index.train)}, test {len(index.test)} clips)")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"SingerClipDataset: window must be a positive integer or None, got {window!r}")
        if stride is not None and (window is None or not isinstance(stride, int) or stride < 1):
            raise ValueError(f"SingerClipDataset: stride must be a positive integer with a window, "
                             f"got {stride!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 2):
            raise ValueError(f"SingerClipDataset: image_size must be an integer >= 2, got {image_size!r}")
        if reference not in REFERENCES:
            raise ValueError(f"SingerClipDataset: reference must be one of {REFERENCES}, got {reference!r}")
        self.split, self.window, self.stride = split, window, stride or window
        self.image_size, self.with_audio, self.reference = image_size, with_audio, reference
        self.features_dir = None
        if features_dir is not None:
            features_dir = Path(features_dir)
            self.features_dir = features_dir if features_dir.is_absolute() else self.root / features_dir
            if not self.features_dir.is_dir():
                raise FileNotFoundError(f"SingerClipDataset: features_dir '{self.features_dir}' does not "
                                        "exist; encode the clips' audio first or pass features_dir=None")
        metas = [index.clips[name] for name in clip_ids]
        rates = {(meta.fps, meta.sample_rate) for meta in metas}
        if len(rates) > 1:
            raise ValueError(f"SingerClipDataset: clips of split {split!r} mix frame/sample rates "
                             f"{sorted(rates)}; preprocess them to one fps and sample rate")
        self.fps, self.sample_rate = rates.pop()

        # 1. the deterministic list of (clip, start) windows
        self.clips: list[Clip] = []
        self.items: list[tuple[int, int]] = []
        skipped = []
        for meta in metas:
            folder = self.root / meta.clip_id
            if not (folder / "meta.json").is_file():
                raise FileNotFoundError(f"SingerClipDataset: clip {meta.clip_id!r} is in index.json but "
                                        f"'{folder}' is missing; rebuild the index (write_index)")
            if window is not None and meta.frames < window:
                skipped.append(meta.clip_id)
                continue
            self.clips.append(Clip(folder, meta))
            starts = [0] if window is None else range(0, meta.frames - window + 1, self.stride)
            self.items += [(len(self.clips) - 1, start) for start in starts]
        if not self.items:
            longest = max(meta.frames for meta in metas)
            raise ValueError(f"SingerClipDataset: window={window} frames is longer than every clip of split "
                             f"{split!r} (the longest has {longest} frames); use window <= {longest}")
        if skipped:
            logger.warning("SingerClipDataset: %d clips shorter than %d frames skipped: %s", len(skipped),
                           window, ", ".join(skipped[:5]))

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"SingerClipDataset('{self.root}', split={self.split!r}, clips={len(self.clips)}, "
                f"windows={len(self)}, window={self.window}, stride={self.stride})")

    def samples_per_window(self, frames: int) -> int:
        """Audio samples spanned by `frames` frames: round(frames / fps * sample_rate)."""
        return int(round(frames * self.sample_rate / self.fps))

    def __getitem__(self, item: int) -> dict:
        if not -len(self) <= item < len(self):
            raise IndexError(f"SingerClipDataset: index {item} out of range for {len(self)} windows")
        clip_number, start = self.items[item]
        clip = self.clips[clip_number]
        meta = clip.meta
        count = meta.frames if self.window is None else self.window
        stop = start + count
        # 1. frames and reference (decoded now, nothing kept)
        frames = clip.frames(start, stop)
        if frames.shape[1:3] != (meta.size, meta.size):
            raise RuntimeError(f"SingerClipDataset: clip {meta.clip_id!r} decodes to "
                               f"{tuple(frames.shape[1:3])} pixels, meta.json says {meta.size}")
        reference = frames[0] if self.reference == "window" or start == 0 else clip.frames(0, 1)[0]
        out = {"frames": self._images(frames), "reference": self._images(reference[None])[0],
               "clip_id": meta.clip_id, "start": start, "fps": self.fps, "sample_rate": self.sample_rate}
        # 2. the audio samples of exactly these frames
        if self.with_audio:
            first = int(round(start * self.sample_rate / self.fps))
            audio = clip.audio_span(first, self.samples_per_window(count))
            out["audio"] = audio.mean(dim=0) if audio.shape[0] > 1 else audio[0]
        # 3. cached features, coefficients, landmarks for the same rows
        if self.features_dir is not None:
            out["features"] = self._features(meta.clip_id, start, stop)
        rows = slice(start, stop)
        if meta.has_coeffs:
            coeffs = clip.tensors("coeffs", rows)
            out["coeffs"] = {name: value.float().expand(count, -1) if value.ndim == 1 else value.float()
                             for name, value in sorted(coeffs.items())}
        marks = clip.tensors("landmarks", rows) if (clip.folder / "landmarks.safetensors").is_file() else {}
        for key, value in sorted(marks.items()):
            if key == "landmarks":
                scale = 1.0 if self.image_size is None else self.image_size / meta.size
                out["landmarks"] = value.float() * scale
            elif key not in out:
                out[key] = value
        return out

    def _images(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) float32 in 0..1, resized (antialiased bilinear) to
        image_size."""
        images = frames.permute(0, 3, 1, 2).float().div_(255.0)
        if self.image_size is not None and images.shape[-1] != self.image_size:
            images = torch.nn.functional.interpolate(images, size=(self.image_size, self.image_size),
                                                     mode="bilinear", antialias=True, align_corners=False)
            images = images.clamp_(0.0, 1.0)
        return images

    def _features(self, clip_id: str, start: int, stop: int) -> torch.Tensor:
        """Rows start .. stop-1 of features_dir/<clip_id>.safetensors -> (stop - start, R, D), read lazily."""
        from safetensors import safe_open

        from ..audio.features import FORMAT_NAME

        path = self.features_dir / f"{clip_id}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"SingerClipDataset: no cached features for clip {clip_id!r} at "
                                    f"'{path}'; encode every clip of the split or pass features_dir=None")
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT_NAME or "features" not in handle.keys():
                raise ValueError(f"SingerClipDataset: '{path}' is not a SingerAudioFeatures file")
            part = handle.get_slice("features")
            total = part.get_shape()[0]
            if total < stop:
                raise ValueError(f"SingerClipDataset: '{path}' has {total} frames of features but clip "
                                 f"{clip_id!r} needs frame {stop - 1}; re-encode it at {self.fps:g} fps")
            fps = json.loads(metadata.get("fields", "{}")).get("fps")
            if fps is not None and not math.isclose(float(fps), self.fps):
                raise ValueError(f"SingerClipDataset: '{path}' is at {fps} fps, the clips at {self.fps:g}")
            return part[start:stop].float()
