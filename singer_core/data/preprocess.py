"""Real singing videos -> the SINGER clip format, as the SINGER paper (arXiv 2412.03430, Sec. 4.1.2 and
supplementary 6.1.2) prepares its SHV dataset: 25 fps, 2-second clips, the face region cropped "with a scale
ratio of 0.8", clips of poor quality removed.

Reading of "scale ratio 0.8": the detected face box spans 0.8 of the crop's side, i.e. the square crop is the
face box (its longer side) enlarged by 1 / 0.8 = 1.25 about its centre. The paper gives no formula; this is
the reading under which a face-box detector and the 512-px training frames agree with its figures (the whole
head with a margin, shoulders cut). The crop follows the detector's idea of a face box: OpenCV's square Haar
box runs from the forehead to the chin, its centre ~15 % of the box above the centre of the 68 landmarks'
box; YuNet's box is as tall but narrower (on the test faces 42 x 56 px against Haar's 56 x 56), and as the
crop uses the longer side both give the same crop size there (YuNet's centre sits 3 px lower).

Per video, memory flat in its length (two streaming passes):
1. decode at 25 fps (FFmpeg fps-filter rule), scaled down for detection; detect faces (detector "auto":
   SCRFD, YuNet or Haar, see singer_core.face.detector_files) every `detect_every` frames and follow one face (the detection overlapping the previous one);
2. fill missed frames by interpolation and smooth the box track over `smoothing_window` frames;
3. decode again at full size, crop the square (face / 0.8) and resize to `size`, cut 2-second clips, pull
   the matching 16 kHz mono audio;
4. drop clips with the face found in too few frames, too blurry a face (variance of the Laplacian), silent
   audio, or audio that ends early; write the others atomically with write_clip; then index.json.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..face.crop import smooth_boxes, square_crop
from ..face.detect import Box, FaceDetector, box_iou
from ..io.cli import CliError, read_json_object, report_errors
from ..io.config import JsonConfig
from ..io.lock import folder_lock
from ..io.video_read import VIDEO_SUFFIXES, iter_audio_blocks, iter_video_frames, probe_video
from ..progress import Progress
from .format import AUDIO_SAMPLE_RATE, ClipMeta, scan_clips, write_clip, write_index

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".wma")

_SHARPNESS_SIZE = 256  # larger face regions are scaled down to this side before the blur measure
_REACQUIRE_SECONDS = 0.5  # a track lost this long is re-acquired on the largest face, wherever it is
_MIN_TRACK_IOU = 0.2  # a detection continues the track when it overlaps the last box this much


@dataclasses.dataclass(frozen=True)
class PreprocessConfig(JsonConfig):
    """How real videos become clips; defaults follow the SINGER paper."""

    fps: float = 25.0  # output frame rate (frames are duplicated/dropped like FFmpeg's fps filter)
    size: int = 512  # output frame side in pixels (even; SINGER trains at 512 x 512)
    crop_scale: float = 0.8  # the face box spans this share of the crop side (SINGER's "scale ratio 0.8")
    clip_seconds: float = 2.0  # clip length; clip_seconds * fps must be a whole number of frames
    sample_rate: int = 16000  # audio rate of the clips (the clip format stores 16 kHz)
    min_face_fraction: float = 0.8  # drop a clip when the face is detected in fewer of its frames than this
    min_face_size: float = 0.1  # ignore faces smaller than this share of the frame's shorter side
    blur_threshold: float = 20.0  # drop a clip when the median variance of the Laplacian of its face
    #                               region (grey, at the output size, scaled down to 256 px when larger)
    #                               is below this
    smoothing_window: int = 7  # frames in the centred moving average of the box track (odd; 1 = off)
    detector: str = "auto"  # "auto" (SCRFD > YuNet in models_dir > Haar where OpenCV has it), "scrfd", "yunet",
    #                         "haar" or the path of an SCRFD / YuNet .onnx, a cascade .xml or a res10 SSD file
    models_dir: str | None = None  # folder searched for scrfd_10g_bnkps.onnx / face_detection_yunet_*.onnx
    detect_every: int = 1  # run the detector on every k-th frame and interpolate between (1 = every frame)
    detection_max_side: int = 640  # frames are scaled to at most this side for detection
    silence_dbfs: float = -60.0  # drop a clip whose audio peak is below this (no singing at all)
    crf: int = 18  # H.264 quality of the clip videos (18: visually lossless)
    test_fraction: float = 0.2  # share of identities (source videos) in the test split (0.2 = 4:1)
    seed: int = 0  # seed of the train/test identity split

    def __post_init__(self):
        checks = [
            (self.fps > 0 and math.isfinite(self.fps), "fps must be > 0"),
            (isinstance(self.size, int) and self.size >= 16 and self.size % 2 == 0,
             "size must be an even integer >= 16"),
            (0 < self.crop_scale <= 1, "crop_scale must be in (0, 1]"),
            (self.clip_seconds > 0 and abs(self.clip_seconds * self.fps - round(self.clip_seconds * self.fps))
             < 1e-6, "clip_seconds * fps must be a whole number of frames"),
            (self.sample_rate == AUDIO_SAMPLE_RATE, f"sample_rate must be {AUDIO_SAMPLE_RATE} (the clip format's)"),
            (0 <= self.min_face_fraction <= 1, "min_face_fraction must be in [0, 1]"),
            (0 <= self.min_face_size < 1, "min_face_size must be in [0, 1)"),
            (self.blur_threshold >= 0, "blur_threshold must be >= 0 (0 keeps every clip)"),
            (isinstance(self.smoothing_window, int) and self.smoothing_window >= 1
             and self.smoothing_window % 2 == 1, "smoothing_window must be an odd integer >= 1"),
            (isinstance(self.detector, str) and bool(self.detector),
             "detector must be 'auto', 'scrfd', 'yunet', 'haar' or a file path"),
            (isinstance(self.detect_every, int) and self.detect_every >= 1, "detect_every must be an integer >= 1"),
            (isinstance(self.detection_max_side, int) and self.detection_max_side >= 64,
             "detection_max_side must be an integer >= 64"),
            (0 <= self.crf <= 51, "crf must be 0..51"),
            (0 <= self.test_fraction < 1, "test_fraction must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PreprocessConfig: {message}")

    @property
    def clip_frames(self) -> int:
        return round(self.clip_seconds * self.fps)

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)



@dataclasses.dataclass(frozen=True)
class DroppedClip:
    """A clip (or a whole video, clip_index None) that was not written, and why."""

    video: str  # source file name
    clip_index: int | None  # clip number within the video (its start is clip_index * clip_seconds)
    start_seconds: float  # where the clip starts in the video
    reason: str  # e.g. "no face (35% of frames)", "blurry (sharpness 8.2 < 20)", "silent audio"

    @property
    def category(self) -> str:
        return self.reason.split(" (")[0]


@dataclasses.dataclass(frozen=True)
class PreprocessSummary:
    """What preprocess_videos did."""

    kept: tuple[str, ...]  # clip ids written (or already present) from these videos
    dropped: tuple[DroppedClip, ...]  # clips and videos left out, with reasons
    videos: int  # videos processed
    index_path: str | None  # the written index.json (None when the folder has no clip)

    def reasons(self) -> dict[str, int]:
        """Dropped clips per reason category."""
        return dict(collections.Counter(item.category for item in self.dropped))

    def text(self) -> str:
        """A short report for the console."""
        lines = [f"{self.videos} video(s): kept {len(self.kept)} clip(s), dropped {len(self.dropped)}"]
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.reasons().items())]
        return "\n".join(lines)


def preprocess_videos(videos_dir: str | Path, out_dir: str | Path, *, config: PreprocessConfig | None = None,
                      progress: Progress | None = None, overwrite: bool = False
                      ) -> PreprocessSummary:
    """Turn every video in a folder into face-cropped 2-second clips with 16 kHz audio.

    Args:
        videos_dir: folder searched recursively for .mp4 .mov .mkv .webm .avi .m4v files (or one video file).
        out_dir: dataset folder; clips go to out_dir/<identity>-<clip number>/ and out_dir/index.json
            indexes every clip folder in out_dir (split 4:1 by identity = source video name).
        config: PreprocessConfig (defaults: SINGER's 25 fps, 512 px, crop scale 0.8, 2 s, 16 kHz).
        progress: optional callback(done, total) over decoded frames (two passes per video); it may raise to
            stop: the exception propagates and no half-written clip is left.
        overwrite: rewrite clip folders that exist (else they are kept as they are and counted as kept).

    Returns:
        PreprocessSummary (kept clip ids, dropped clips with reasons, the index path).
    """
    config = config or PreprocessConfig()
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    videos = _find_videos(videos_dir)
    detector = FaceDetector(config.detector, min_size_fraction=config.min_face_size, max_side=None,
                            models_dirs=() if config.models_dir is None else (config.models_dir,))
    with folder_lock(out_dir, "preprocess"):  # one job per dataset folder
        return _preprocess(videos, videos_dir, out_dir, config, detector, progress, overwrite)


def _preprocess(videos: list[Path], videos_dir: Path, out_dir: Path, config: PreprocessConfig, detector,
                progress, overwrite: bool) -> PreprocessSummary:
    """preprocess_videos once the folder is locked."""
    # 1. estimate the work for the progress callback
    infos, work = {}, {}
    for path in videos:
        try:
            infos[path] = probe_video(path)
        except ValueError as error:
            infos[path] = error
        seconds = 0.0 if isinstance(infos[path], ValueError) else infos[path].seconds or 0.0
        work[path] = 2 * max(1, round(seconds * config.fps))
    counter = _Progress(progress, sum(work.values()))

    # 2. each video: detect, smooth, crop, cut, write
    kept, dropped = [], []
    names = _identities(videos, videos_dir)
    for path in videos:
        info = infos[path]
        counter.begin(work[path])
        if isinstance(info, ValueError):
            dropped.append(DroppedClip(path.name, None, 0.0, f"unreadable ({info})"))
            logger.warning("preprocess: skipping '%s': %s", path.name, info)
            counter.end()
            continue
        if not info.has_audio:
            dropped.append(DroppedClip(path.name, None, 0.0, "no audio stream"))
            logger.warning("preprocess: skipping '%s': it has no audio stream", path.name)
            counter.end()
            continue
        try:
            video_kept, video_dropped = _process_video(path, info, names[path], out_dir, config, detector,
                                                       counter, overwrite)
        except _UnreadableVideo as error:  # damaged file: report it, go on with the others
            dropped.append(DroppedClip(path.name, None, 0.0, f"unreadable ({error})"))
            logger.warning("preprocess: skipping '%s' (clips written before the damage are kept): %s",
                           path.name, error)
            counter.end()
            continue
        counter.end()
        kept += video_kept
        dropped += video_dropped

    # 3. index every clip of the folder
    metas = scan_clips(out_dir)
    index = str(write_index(out_dir, metas, test_fraction=config.test_fraction, seed=config.seed)) if metas else None
    summary = PreprocessSummary(kept=tuple(kept), dropped=tuple(dropped), videos=len(videos), index_path=index)
    logger.info("preprocess: %s", summary.text().replace("\n", "; "))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m singer_core.data preprocess --videos DIR --out DIR [options]`."""
    defaults = PreprocessConfig()
    parser = argparse.ArgumentParser(
        prog="python -m singer_core.data preprocess",
        description="Cut real singing videos into face-cropped 2-second clips (25 fps, 16 kHz audio) in the "
                    "SINGER clip format, dropping clips without a face, blurry or silent ones.")
    parser.add_argument("--videos", required=True, help="folder of videos (searched recursively) or one video")
    parser.add_argument("--out", required=True, help="dataset folder to write clips and index.json into")
    parser.add_argument("--config", help="PreprocessConfig JSON file (options given here override it)")
    options = {
        "fps": (float, "output frame rate"), "size": (int, "output frame side in pixels"),
        "crop_scale": (float, "share of the crop side the face box spans (SINGER: 0.8)"),
        "clip_seconds": (float, "clip length in seconds"),
        "min_face_fraction": (float, "least share of a clip's frames with a detected face"),
        "min_face_size": (float, "smallest face, as a share of the frame's shorter side"),
        "blur_threshold": (float, "least median Laplacian variance of the face (0 keeps all)"),
        "smoothing_window": (int, "frames in the box smoothing window (odd)"),
        "detector": (str, "'auto', 'scrfd', 'yunet', 'haar' or a detector file (.onnx, .xml, .caffemodel)"),
        "models_dir": (str, "folder with scrfd_10g_bnkps.onnx (python -m singer_core.face.detector_files "
                            "--models-dir DIR fetches it) or face_detection_yunet_*.onnx"),
        "detect_every": (int, "detect on every k-th frame, interpolate between"),
        "crf": (int, "H.264 quality (0 lossless .. 51)"),
        "test_fraction": (float, "share of source videos in the test split"),
        "seed": (int, "seed of the split"),
    }
    for name, (kind, text) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                            help=f"{text} (default {getattr(defaults, name)})")
    parser.add_argument("--overwrite", action="store_true", help="rewrite clip folders that exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    code = [0]
    with report_errors(code):
        return _main(args, options, defaults)
    return code[0]


def _main(args, options: dict, defaults: PreprocessConfig) -> int:
    """main once the arguments are parsed; errors become one `error:` line in main."""
    try:
        base = defaults
        if args.config:
            text = json.dumps(read_json_object(args.config, "--config", '{"size": 256, "clip_seconds": 2.0}'))
            base = PreprocessConfig.from_json(text)
        changes = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
        config = dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as error:
        raise CliError(f"{error}; see python -m singer_core.data preprocess --help") from None
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1, unit="frame", desc="preprocess")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        summary = preprocess_videos(args.videos, args.out, config=config, progress=progress,
                                    overwrite=args.overwrite)
    finally:
        if bar is not None:
            bar.close()
    print(summary.text())
    if summary.index_path:
        print(f"index: {summary.index_path}")
    return 0


# --------------------------------------------------------------------------------------------------------
# one video


class _Progress:
    """Counts decoded frames over all videos; each video's share is its estimate (2 passes x frames), topped
    up when the video ends early or is skipped, so the count ends at the total."""

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done, self.video_end = callback, max(1, total), 0, 0

    def begin(self, expected: int) -> None:
        self.video_end = self.done + expected

    def step(self, count: int = 1) -> None:
        self.done += count
        if self.done > self.video_end:  # the estimate was short: grow the total with it
            self.total += self.done - self.video_end
            self.video_end = self.done
        if self.callback is not None:
            self.callback(self.done, self.total)

    def end(self) -> None:
        if self.done < self.video_end:
            self.step(self.video_end - self.done)


def _process_video(path: Path, info, identity: str, out_dir: Path, config: PreprocessConfig,
                   detector: FaceDetector, counter: _Progress, overwrite: bool):
    import cv2

    # 1. detection pass at reduced size
    boxes, detected, ran = _track_faces(path, info, config, detector, counter)
    frames_total = boxes.shape[0]
    clip_frames, clip_samples = config.clip_frames, config.clip_samples
    clips = frames_total // clip_frames
    kept, dropped = [], []
    tail = frames_total - clips * clip_frames
    if tail:
        dropped.append(DroppedClip(path.name, clips, clips * config.clip_seconds,
                                   f"short tail ({tail / config.fps:.2f} s < {config.clip_seconds:g} s)"))
    if clips == 0:
        return kept, dropped
    if not detected.any():
        for clip in range(clips):
            dropped.append(DroppedClip(path.name, clip, clip * config.clip_seconds, "no face (0% of frames)"))
        return kept, dropped

    # 2. smooth the track, turn face boxes into crop squares (face box side / crop_scale)
    smoothed = smooth_boxes(boxes, config.smoothing_window)
    centres = smoothed[:, :2] + smoothed[:, 2:] / 2
    sides = smoothed[:, 2:].max(axis=1) / config.crop_scale
    squares = np.concatenate([centres - sides[:, None] / 2, sides[:, None], sides[:, None]], axis=1)

    # 3. crop pass at full size, clip by clip, with the matching audio
    audio = _AudioCursor(_guarded(iter_audio_blocks(path, sample_rate=config.sample_rate, mono=True)))
    buffer = np.empty((clip_frames, config.size, config.size, 3), np.uint8)
    sharpness = np.empty(clip_frames)
    windows = np.empty((clip_frames, 4), np.float32)
    inner = _face_region(config)
    for frame in _guarded(iter_video_frames(path, fps=config.fps, duration_seconds=clips * config.clip_seconds)):
        counter.step()
        clip, row = divmod(frame.index, clip_frames)
        clip_id = f"{identity}-{clip:04d}"
        folder = out_dir / clip_id
        if folder.exists() and not overwrite:
            if row == clip_frames - 1:
                audio.take(clip_samples)
                kept.append(clip_id)
            continue
        crop, transform = square_crop(frame.image, squares[frame.index], config.size)
        buffer[row] = crop
        windows[row] = transform.xyxy()
        gray = cv2.cvtColor(crop[inner, inner], cv2.COLOR_RGB2GRAY)
        if gray.shape[0] > _SHARPNESS_SIZE:
            gray = cv2.resize(gray, (_SHARPNESS_SIZE, _SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
        sharpness[row] = float(cv2.Laplacian(gray, cv2.CV_64F).var())
        if row < clip_frames - 1:
            continue
        # a full clip: judge it, then write it atomically
        sound = audio.take(clip_samples)
        span = slice(clip * clip_frames, (clip + 1) * clip_frames)
        reason = _judge(config, ran[span], detected[span], float(np.median(sharpness)), sound, clip_samples)
        start = clip * config.clip_seconds
        if reason is not None:
            dropped.append(DroppedClip(path.name, clip, start, reason))
            continue
        meta = ClipMeta(clip_id=clip_id, identity=identity, source="real", fps=config.fps,
                        sample_rate=config.sample_rate, frames=clip_frames, size=config.size,
                        seconds=clip_samples / config.sample_rate, has_coeffs=False,
                        extra={"video": path.name, "start_seconds": start,
                               "face_fraction": round(_face_fraction(ran[span], detected[span]), 4),
                               "sharpness": round(float(np.median(sharpness)), 2), "detector": config.detector,
                               "crop_scale": config.crop_scale, "source_size": [info.width, info.height]})
        face_in_crop = _face_boxes_in_crop(smoothed[span], windows, config.size)
        write_clip(folder, frames=torch.from_numpy(buffer.copy()), fps=config.fps,
                   audio=torch.from_numpy(sound[None].copy()), sample_rate=config.sample_rate, meta=meta,
                   coeffs=None, overwrite=overwrite, crf=config.crf,
                   landmarks={"box": torch.from_numpy(windows.copy()),
                              "face_box": torch.from_numpy(face_in_crop),
                              "detected": torch.from_numpy(detected[span].copy())})
        kept.append(clip_id)
    return kept, dropped


def _track_faces(path: Path, info, config: PreprocessConfig, detector: FaceDetector, counter: _Progress):
    """Pass 1: per output frame the followed face box (x, y, w, h) in source pixels or NaN, whether it was
    detected, and whether the detector ran there (every detect_every-th frame, and always the last one, so
    the track's end is detected rather than held)."""
    boxes, detected, ran = [], [], []
    previous, previous_index = None, -math.inf
    reacquire = max(1, round(_REACQUIRE_SECONDS * config.fps))

    def detect(frame) -> None:
        nonlocal previous, previous_index
        scale = info.width / frame.image.shape[1]
        faces = [Box(b.x * scale, b.y * scale, b.w * scale, b.h * scale, b.score) for b in detector(frame.image)]
        box = _follow(faces, previous, frame.index - previous_index > reacquire)
        if box is not None:
            previous, previous_index = box, frame.index
            boxes[frame.index], detected[frame.index] = box[:4], True
        ran[frame.index] = True

    last = None
    for frame in _guarded(iter_video_frames(path, fps=config.fps, max_size=config.detection_max_side)):
        counter.step()
        boxes.append((np.nan,) * 4)
        detected.append(False)
        ran.append(False)
        if frame.index % config.detect_every == 0:
            detect(frame)
        last = frame
    if last is not None and not ran[-1]:
        detect(last)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(detected), np.asarray(ran)


def _follow(faces: list[Box], previous: Box | None, lost: bool) -> Box | None:
    """The detection that continues the track (most overlap with the last box), the largest face when there
    is no track yet or it was lost long enough, else None (a face elsewhere is not followed)."""
    if not faces:
        return None
    if previous is None or lost:
        return faces[0]
    best = max(faces, key=lambda face: box_iou(face, previous))
    return best if box_iou(best, previous) >= _MIN_TRACK_IOU else None


def _judge(config: PreprocessConfig, ran: np.ndarray, detected: np.ndarray, sharpness: float,
           sound: np.ndarray, clip_samples: int) -> str | None:
    """The reason to drop a clip, or None to keep it."""
    fraction = _face_fraction(ran, detected)
    if fraction < config.min_face_fraction:
        return f"no face ({100 * fraction:.0f}% of frames < {100 * config.min_face_fraction:.0f}%)"
    if sound.shape[0] < clip_samples:
        return f"audio ends ({sound.shape[0] / config.sample_rate:.2f} s of {config.clip_seconds:g} s)"
    peak = float(np.abs(sound).max())
    if peak <= 0 or 20 * math.log10(peak) < config.silence_dbfs:
        return f"silent audio (peak below {config.silence_dbfs:g} dBFS)"
    if sharpness < config.blur_threshold:
        return f"blurry (sharpness {sharpness:.1f} < {config.blur_threshold:g})"
    return None


def _face_fraction(ran: np.ndarray, detected: np.ndarray) -> float:
    return float(detected[ran].mean()) if ran.any() else 0.0


def _face_region(config: PreprocessConfig) -> slice:
    """Rows/columns of the crop the face box covers (the central crop_scale share)."""
    margin = round(config.size * (1 - config.crop_scale) / 2)
    return slice(margin, config.size - margin)


def _face_boxes_in_crop(boxes: np.ndarray, windows: np.ndarray, size: int) -> np.ndarray:
    """(T, 4) face boxes (x, y, w, h, source pixels) -> (T, 4) x0, y0, x1, y1 in clip pixels."""
    scale = size / (windows[:, 2] - windows[:, 0]).astype(np.float64)
    x0 = (boxes[:, 0] - windows[:, 0]) * scale
    y0 = (boxes[:, 1] - windows[:, 1]) * scale
    return np.stack([x0, y0, x0 + boxes[:, 2] * scale, y0 + boxes[:, 3] * scale], 1).astype(np.float32)


class _UnreadableVideo(Exception):
    """A video that fails to decode part-way (reported as dropped; the other videos go on)."""


def _guarded(items: Iterator):
    """Re-raise the decoders' ValueError (damaged file) as _UnreadableVideo, so that errors of our own
    (e.g. in write_clip) still stop the run."""
    try:
        yield from items
    except ValueError as error:
        raise _UnreadableVideo(str(error)) from error


class _AudioCursor:
    """Consecutive spans of a block iterator: take(n) returns the next n samples (fewer at the end)."""

    def __init__(self, blocks: Iterator[np.ndarray]):
        self.blocks, self.pending, self.offset = blocks, np.zeros(0, np.float32), 0

    def take(self, count: int) -> np.ndarray:
        out, filled = np.empty(count, np.float32), 0
        while filled < count:
            if self.offset >= self.pending.shape[0]:
                block = next(self.blocks, None)
                if block is None:
                    break
                self.pending, self.offset = block[0], 0
                continue
            step = min(count - filled, self.pending.shape[0] - self.offset)
            out[filled:filled + step] = self.pending[self.offset:self.offset + step]
            filled += step
            self.offset += step
        return out[:filled]


def _find_videos(videos_dir: Path) -> list[Path]:
    if videos_dir.is_file():
        if videos_dir.suffix.lower() not in VIDEO_SUFFIXES:
            kind = ("an audio file" if videos_dir.suffix.lower() in AUDIO_SUFFIXES else
                    f"not a video ({videos_dir.suffix or 'no extension'})")
            raise ValueError(f"preprocess: '{videos_dir}' is {kind}; preprocess cuts videos of a singing face "
                             f"({', '.join(VIDEO_SUFFIXES)}) with sound: give such a video or a folder of them")
        return [videos_dir]
    if not videos_dir.is_dir():
        raise ValueError(f"preprocess: '{videos_dir}' is neither a folder nor a file; give the folder of videos")
    videos = sorted(path for path in videos_dir.rglob("*") if path.is_file()
                    and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith("."))
    if not videos:
        raise ValueError(f"preprocess: no videos ({', '.join(VIDEO_SUFFIXES)}) in '{videos_dir}'")
    return videos


def _identities(videos: list[Path], root: Path) -> dict[Path, str]:
    """Identity per video: its name without extension (folders joined by '_' when names repeat), restricted
    to the characters clip ids allow."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "video"

    stems = collections.Counter(clean(path.stem) for path in videos)
    names = {}
    for path in videos:
        name = clean(path.stem)
        if stems[name] > 1 and root.is_dir():
            name = clean("_".join(path.relative_to(root).with_suffix("").parts))
        names[path] = name
    return names
