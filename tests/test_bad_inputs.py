"""Bad inputs across the core and the command lines (issue 8 part 6): empty, corrupt, NaN, silent, 8 kHz and
192 kHz audio, a 10-minute song, grayscale / RGBA / 16x16 / 4096x4096 images, images without a face,
truncated / wrong-architecture / pickle-bearing checkpoints, paths escaping their folder, mismatched fps.

Each case either works (8 kHz, 192 kHz, 10 minutes, grayscale, RGBA, 4096 px) or fails with an error whose
message names the problem AND the fix (asserted by fragments); in both cases the output folder it was given
holds no file afterwards unless the case wrote a complete result. Set SINGER_BAD_INPUT_MESSAGES=1 and run
with -s to print every message (the table in the issue note is made that way).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from tests.cli_run import run_cli
from tests.toy_models import save_tiny_motion_model, tiny_motion_config

# ---------------------------------------------------------------------------------------------------------
# shared inputs


class CliFailed(Exception):
    """A command line returned a non-zero exit code; the message is its stderr."""


def _cli(main, argv: list[str]) -> str:
    """Run a CLI main(argv) in-process; returns stdout, raises CliFailed(stderr) on a non-zero exit."""
    code, out, err = run_cli(main, argv)
    if code:
        raise CliFailed(f"exit {code}: {err.strip()}")
    return out


def _song(seconds: float, rate: int, amplitude: float = 0.5) -> torch.Tensor:
    """(1, T) a 220 Hz tone with a slow vibrato: cheap to make at any length."""
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * 220.0 * t + 3.0 * torch.sin(2 * math.pi * 5.0 * t))).float()[None]


def _wav(path: Path, seconds: float = 1.0, rate: int = 16000, codec: str | None = None) -> Path:
    from singer_core.audio.encode import write_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_audio(path, _song(seconds, rate), rate, codec=codec)


def _features(frames: int = 10, fps: float = 25.0, encoder: str = MEL_ENCODER_NAME, rows: int = 16, width: int = 80):
    from singer_core.audio.features import SingerAudioFeatures

    data = torch.randn(frames, rows, width, generator=torch.Generator().manual_seed(0))
    return SingerAudioFeatures(data, fps=fps, encoder=encoder, sample_rate=16000,
                               num_samples=round(frames / fps * 16000), rows="steps")


def _motion(frames: int, fps: float = 25.0):
    from singer_core.face.motion_types import SingerMotion

    return SingerMotion(exp=torch.zeros(frames, 64), angle=torch.zeros(frames, 3), trans=torch.zeros(frames, 3),
                        fps=fps)


class _PickledThing:
    """A custom class: a torch file holding one of these can only be read by unpickling code."""

    def __init__(self):
        self.weight = torch.zeros(2)


def _pickle_pth(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(3)}, "extra": _PickledThing()}, path)
    return path


def _truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:max(1, int(len(data) * keep))])
    return path


@pytest.fixture(scope="module")
def face_image() -> np.ndarray:
    """(128, 128, 3) uint8: a procedural 3DMM face the Haar detector finds (rendered once per module)."""
    from singer_core.data.synthetic import make_identity
    from singer_core.face.motion_types import FaceIdentity
    from singer_core.face.procedural import procedural_model
    from singer_core.face.render import render_coeffs

    made = make_identity(0)
    identity = FaceIdentity(id=made.id_coeffs, tex=made.tex_coeffs, gamma=made.gamma,
                            background=tuple(float(c) for c in made.background_rgb))
    out = render_coeffs(procedural_model(seed=0), identity.coefficients(_motion(1)), image_size=128,
                        background=identity.background)
    return (out.images[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------------------
# the cases: run(inp, out, face) -> result; `error` None means it must work and `check(result, inp, out)` says so


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    run: Callable  # (inp: Path, out: Path, face: np.ndarray | None) -> result
    error: type[BaseException] | None = ValueError  # None: the input must be processed
    what: tuple[str, ...] = ()  # fragments of the message naming the problem
    fix: tuple[str, ...] = ()  # fragments naming the fix
    check: Callable | None = None  # (result, inp, out) for cases that work
    needs_face: bool = False
    needs_detector: bool = False  # runs a real face detector: skipped where OpenCV has no Haar cascade (OpenCV 5)
    xfail: str | None = None  # a fix that belongs to a file this suite does not own
    outputs: tuple[str, ...] = ()  # file names a working case may leave in out
    slow: bool = False  # imports transformers (seconds): @pytest.mark.slow


def _audio_cases() -> list[Case]:
    from singer_core.audio import io as audio_io
    from singer_core.audio.decode import decode_audio
    from singer_core.audio.encode import write_audio
    from singer_core.audio.encoders import MelEncoder

    def decode(path):
        return decode_audio(path)

    def empty_file(inp, out, face):
        (inp / "empty.wav").write_bytes(b"")
        return decode(inp / "empty.wav")

    def corrupt_file(inp, out, face):
        (inp / "corrupt.mp3").write_bytes(b"ID3 this is not an mp3 at all\n" * 40)
        return decode(inp / "corrupt.mp3")

    def image_as_audio(inp, out, face):
        import cv2

        cv2.imwrite(str(inp / "cover.png"), np.full((32, 32, 3), 200, np.uint8))
        shutil.move(inp / "cover.png", inp / "cover.wav")
        return decode(inp / "cover.wav")

    def truncated_wav(inp, out, face):
        return decode(_truncated(inp / "cut.wav", _wav(inp / "full.wav", 2.0)))

    def truncated_flac(inp, out, face):
        return decode(_truncated(inp / "cut.flac", _wav(inp / "full.flac", 3.0), keep=0.4))

    def nan_wav(inp, out, face):
        path = _wav(inp / "nan.wav", 1.0, codec="pcm_f32le")
        data = bytearray(path.read_bytes())
        offset = len(data) - 4 * 4000  # a sample 0.75 s in
        data[offset:offset + 4] = struct.pack("<f", float("nan"))
        path.write_bytes(bytes(data))
        return decode(path)

    def nan_tensor(inp, out, face):
        waveform = _song(0.5, 16000)[None].clone()
        waveform[0, 0, 100] = float("nan")
        return audio_io.audio_from_comfy({"waveform": waveform, "sample_rate": 16000}, "SingerAudioEncode")

    def empty_tensor(inp, out, face):
        return audio_io.audio_from_comfy({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "SingerLoadAudio")

    def int_pcm(inp, out, face):
        return MelEncoder().encode((_song(0.5, 16000) * 32767).to(torch.int16), 16000, 25)

    def silent_encode(inp, out, face):
        return MelEncoder().encode(torch.zeros(1, 16000), 16000, 25)

    def silent_peak(inp, out, face):
        return audio_io.normalize_peak(torch.zeros(1, 16000))

    def silent_loudness(inp, out, face):
        return audio_io.normalize_loudness(torch.zeros(2, 16000), 16000)

    def low_rate(inp, out, face):
        decoded = decode(_wav(inp / "phone.wav", 1.5, rate=8000))
        return MelEncoder().encode(decoded.waveform, decoded.sample_rate, 25)

    def check_low_rate(features, inp, out):
        assert features.frames == math.ceil(1.5 * 25) and features.sample_rate == 16000
        assert torch.isfinite(features.features).all()

    def high_rate(inp, out, face):
        decoded = decode(_wav(inp / "studio.wav", 1.0, rate=192000, codec="pcm_s24le"))
        assert decoded.sample_rate == 192000
        report = audio_io.check_audio(decoded.waveform, decoded.sample_rate, "test")
        return report, MelEncoder().encode(decoded.waveform, decoded.sample_rate, 25)

    def check_high_rate(result, inp, out):
        report, features = result
        assert report.sample_rate == 192000 and not report.silent
        assert features.frames == 25 and torch.isfinite(features.features).all()

    def ten_minutes(inp, out, face):
        calls = []
        song = _song(600.0, 16000)
        features = MelEncoder().encode(song, 16000, 25, progress=lambda done, total: calls.append((done, total)))
        return features, calls

    def check_ten_minutes(result, inp, out):
        features, calls = result
        assert features.frames == 600 * 25 and features.features.shape == (15000, 16, 80)
        assert len(calls) >= 20 and calls[-1][0] == calls[-1][1]  # chunked, with progress to the end

    def write_nan(inp, out, face):
        waveform = _song(0.5, 16000)
        waveform[0, 10] = float("inf")
        return write_audio(out / "song.flac", waveform, 16000)

    def write_unknown_format(inp, out, face):
        return write_audio(out / "song.xyz", _song(0.5, 16000), 16000)

    return [
        Case("audio-empty-file", empty_file, what=("'empty.wav' is empty (0 bytes)",), fix=("give a file with sound",)),
        Case("audio-corrupt-file", corrupt_file, what=("'corrupt.mp3' could not be opened as audio",),
             fix=("re-export or re-download the file",)),
        Case("audio-image-named-wav", image_as_audio, what=("contains no audio stream", "PNG image"),
             fix=("give a file with sound",)),
        Case("audio-truncated-wav", truncated_wav, what=("'cut.wav' is", "damaged", "2.00 s"),
             fix=("re-download", "duration_seconds <=", "on_damage='silence'")),
        Case("audio-truncated-flac", truncated_flac, what=("'cut.flac'", "3.00 s"), fix=("re-download",)),
        Case("audio-nan-samples-in-file", nan_wav, what=("1 NaN or infinite samples", "0.750 s"),
             fix=("re-export or re-download",)),
        Case("audio-nan-samples-in-tensor", nan_tensor, what=("SingerAudioEncode", "NaN or infinite samples"),
             fix=("re-export the file", "check the node that made this audio")),
        Case("audio-empty-tensor", empty_tensor, what=("the audio is empty (0 samples)",),
             fix=("load a file that contains sound",)),
        Case("audio-integer-pcm", int_pcm, what=("must be float audio", "torch.int16"),
             fix=("divide integer PCM by its full scale",)),
        Case("audio-silent-encode", silent_encode, what=("the audio is silent",),
             fix=("check the input file or the vocal separation", "allow_silence=True")),
        Case("audio-silent-normalize-peak", silent_peak, what=("digital silence",), fix=("check the source",)),
        Case("audio-silent-normalize-loudness", silent_loudness, what=("cannot measure loudness", "silent"),
             fix=("check the source",)),
        Case("audio-8khz", low_rate, error=None, check=check_low_rate),
        Case("audio-192khz", high_rate, error=None, check=check_high_rate),
        Case("audio-10-minute-song", ten_minutes, error=None, check=check_ten_minutes),
        Case("audio-write-nan", write_nan, what=("NaN or infinite samples",), fix=("fix the audio first",)),
        Case("audio-write-unknown-format", write_unknown_format, what=("cannot tell the format of 'song.xyz'",),
             fix=("use one of .wav, .flac",)),
    ]


def _image_cases() -> list[Case]:
    from singer_core.face.crop import square_crop
    from singer_core.face.detect import detect_faces
    from singer_core.face.detector_files import NoFaceDetectorError

    def grayscale(inp, out, face):
        return detect_faces(face.mean(axis=2).round().astype(np.uint8))

    def grayscale_converted(inp, out, face):
        gray = face.mean(axis=2).round().astype(np.uint8)
        height, width = gray.shape
        return detect_faces(np.repeat(gray.reshape(height, width, 1), 3, axis=2)), detect_faces(face)

    def rgba(inp, out, face):
        alpha = np.full(face.shape[:2] + (1,), 255, np.uint8)
        return detect_faces(np.concatenate([face, alpha], axis=2))

    def same_face(result, inp, out):
        found, reference = result
        assert len(found) == 1 and len(reference) == 1
        assert abs(found[0].x - reference[0].x) <= 3 and abs(found[0].w - reference[0].w) <= 9

    def tiny(inp, out, face):
        import cv2

        return detect_faces(cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA))

    def huge(inp, out, face):
        import cv2

        big = cv2.resize(face, (4096, 4096), interpolation=cv2.INTER_LINEAR)
        boxes = detect_faces(big)
        crop, transform = square_crop(big, boxes[0], 256)
        return boxes, crop, transform, detect_faces(face)

    def check_huge(result, inp, out):
        boxes, crop, transform, reference = result
        assert len(boxes) == 1 and abs(boxes[0].w / reference[0].w - 32.0) < 3.0  # the face, 32x larger
        assert crop.shape == (256, 256, 3) and transform.image_width == 4096

    def no_face(inp, out, face):
        noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        return detect_faces(np.full((256, 256, 3), 128, np.uint8)), detect_faces(noise)

    def check_no_face(result, inp, out):
        assert result == ([], [])

    def no_detector(inp, out, face):
        return detect_faces(face, detector="scrfd", models_dirs=(inp,))

    def float_image(inp, out, face):
        return detect_faces(face.astype(np.float32) / 255.0)

    def batch_image(inp, out, face):
        return detect_faces(np.stack([face, face]))

    def float64_crop(inp, out, face):
        return square_crop(face.astype(np.float64) / 255.0, (30, 30, 60, 60), 64)

    return [
        Case("image-grayscale", grayscale, what=("one channel (shape (128, 128)): grayscale, or the indices of a palette",),
             fix=("np.repeat(image.reshape(H, W, 1), 3, axis=2)",), needs_face=True),
        Case("image-grayscale-converted-as-told", grayscale_converted, error=None, check=same_face, needs_face=True,
             needs_detector=True),
        Case("image-rgba", rgba, what=("four channels (shape (128, 128, 4)): RGBA, or CMYK",), fix=("image[..., :3]",),
             needs_face=True),
        Case("image-16x16", tiny, what=("only 16x16 pixels", "too small"), fix=("give a larger portrait",),
             needs_face=True),
        Case("image-4096x4096", huge, error=None, check=check_huge, needs_face=True, needs_detector=True),
        Case("image-no-face", no_face, error=None, check=check_no_face, needs_detector=True),
        Case("image-no-detector-file", no_detector, error=NoFaceDetectorError,
             what=("no scrfd detector file found",),
             fix=("scrfd_10g_bnkps.onnx", "fudan-generative-ai/hallo", "face_analysis/models",
                  "python -m singer_core.face.detector_files --models-dir", "face_box"), needs_face=True),
        Case("image-float-to-detector", float_image, what=("uint8 RGB", "float32"),
             fix=("(image * 255).round().astype(np.uint8)",), needs_face=True),
        Case("image-batch-to-detector", batch_image, what=("got shape (2, 128, 128, 3)",),
             fix=("pass one image (images[0])",), needs_face=True),
        Case("image-float64-to-crop", float64_crop, what=("must be uint8 or float32, got float64",),
             fix=("image.astype(np.float32)",), needs_face=True),
    ]


def _checkpoint_cases() -> list[Case]:
    from singer_core.audio.encoder_loading import load_audio_encoder
    from singer_core.audio.features import SingerAudioFeatures
    from singer_core.face.motion_types import SingerMotion
    from singer_core.motion.generator import MotionModel

    def motion_truncated(inp, out, face):
        folder = save_tiny_motion_model(inp / "motion")
        _truncated(folder / "model.safetensors", folder / "model.safetensors", keep=0.3)
        return MotionModel.from_pretrained(folder)

    def motion_empty_weights(inp, out, face):
        folder = save_tiny_motion_model(inp / "motion")
        (folder / "model.safetensors").write_bytes(b"")
        return MotionModel.from_pretrained(folder)

    def motion_truncated_config(inp, out, face):
        folder = save_tiny_motion_model(inp / "motion")
        _truncated(folder / "config.json", folder / "config.json")
        return MotionModel.from_pretrained(folder)

    def motion_wrong_architecture(inp, out, face):
        folder = save_tiny_motion_model(inp / "motion")
        other = save_tiny_motion_model(inp / "wider", width=64)
        shutil.copy(other / "model.safetensors", folder / "model.safetensors")
        return MotionModel.from_pretrained(folder)

    def motion_wrong_model_type(inp, out, face):
        from singer_core.motion.lip_expert import LipExpert, LipExpertConfig

        folder = LipExpert(LipExpertConfig()).save_pretrained(inp / "lip-expert")
        return MotionModel.from_pretrained(folder)

    def motion_missing(inp, out, face):
        return MotionModel.from_pretrained(inp / "no-such-run" / "final")

    def encoder_pickle(inp, out, face):
        return load_audio_encoder(_pickle_pth(inp / "wav2vec2.pth"))

    def encoder_pickle_ckpt(inp, out, face):
        return load_audio_encoder(_pickle_pth(inp / "hubert.ckpt"))

    def encoder_truncated_pth(inp, out, face):
        full = inp / "full.pth"
        torch.save({"feature_extractor.conv_layers.0.conv.weight": torch.zeros(512, 1, 10)}, full)
        return load_audio_encoder(_truncated(inp / "wav2vec2.pth", full))

    def encoder_truncated_safetensors(inp, out, face):
        folder = save_tiny_motion_model(inp / "motion")
        return load_audio_encoder(_truncated(inp / "wav2vec2.safetensors", folder / "model.safetensors"))

    def encoder_wrong_architecture(inp, out, face):
        folder = save_tiny_motion_model(inp / "motion")
        shutil.copy(folder / "model.safetensors", inp / "encoder.safetensors")
        return load_audio_encoder(inp / "encoder.safetensors")

    def encoder_folder_pickle_bin(inp, out, face):
        folder = inp / "wav2vec2-base-960h"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({
            "model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2}))
        _pickle_pth(folder / "pytorch_model.bin")
        return load_audio_encoder(folder)

    def encoder_not_torch(inp, out, face):
        (inp / "encoder.bin").write_bytes(b"<html>rate limited, try again later</html>\n" * 20)
        return load_audio_encoder(inp / "encoder.bin")

    def diffusion_pickle(inp, out, face):
        from singer_core.diffusion.loading import read_state_dict

        return read_state_dict(_pickle_pth(inp / "net.pth"))

    def diffusion_truncated(inp, out, face):
        from singer_core.diffusion.loading import read_state_dict

        torch.save({"w": torch.zeros(1000)}, inp / "full.pth")
        return read_state_dict(_truncated(inp / "net.pth", inp / "full.pth"))

    def features_truncated(inp, out, face):
        path = _features().save(inp / "song.safetensors")
        return SingerAudioFeatures.load(_truncated(path, path))

    def motion_file_foreign(inp, out, face):
        return SingerMotion.load(_features().save(inp / "features.safetensors"))

    return [
        Case("checkpoint-truncated-safetensors", motion_truncated, what=("not a readable safetensors file",),
             fix=("truncated", "save or download it again")),
        Case("checkpoint-empty-safetensors", motion_empty_weights, what=("is 0 bytes",),
             fix=("save or download it again",)),
        Case("checkpoint-truncated-config", motion_truncated_config, what=("config.json' is not valid JSON",),
             fix=("copy the checkpoint folder again",)),
        Case("checkpoint-wrong-architecture", motion_wrong_architecture,
             what=("weights do not match MotionModel", "wrong shape", "file (64,) vs model (32,)"),
             fix=("load it with the matching config/checkpoint",)),
        Case("checkpoint-wrong-model-type", motion_wrong_model_type, what=("holds a 'LipExpert' model",),
             fix=("pick the matching loader or checkpoint",)),
        Case("checkpoint-missing-folder", motion_missing, error=FileNotFoundError, what=("is not a folder",),
             fix=("give the folder written by save_pretrained or by the trainer",)),
        Case("checkpoint-pickle-pth", encoder_pickle, what=("is refused", "pickled Python objects", "_PickledThing"),
             fix=(".safetensors version",)),
        Case("checkpoint-pickle-ckpt", encoder_pickle_ckpt, what=("hubert.ckpt' is refused", "code"),
             fix=(".safetensors",)),
        Case("checkpoint-truncated-pth", encoder_truncated_pth, what=("wav2vec2.pth' is truncated or damaged",),
             fix=("download or save it again",)),
        Case("checkpoint-truncated-encoder-safetensors", encoder_truncated_safetensors,
             what=("not a valid safetensors file or is truncated",), fix=("download it again",)),
        Case("checkpoint-wrong-architecture-encoder", encoder_wrong_architecture,
             what=("is not a wav2vec2/HuBERT encoder",), fix=("give a wav2vec2 or HuBERT checkpoint",)),
        Case("checkpoint-pickle-bin-in-transformers-folder", encoder_folder_pickle_bin,
             what=("pytorch_model.bin' is refused", "pickled Python objects"), fix=(".safetensors version",),
             slow=True),
        Case("checkpoint-not-a-torch-file", encoder_not_torch, what=("is not a PyTorch weights file",),
             fix=(".safetensors",)),
        Case("checkpoint-pickle-net-pth", diffusion_pickle, what=("is refused", "pickled Python objects"),
             fix=(".safetensors version",)),
        Case("checkpoint-truncated-net-pth", diffusion_truncated, what=("net.pth' is truncated or damaged",),
             fix=("download or save it again",)),
        Case("features-file-truncated", features_truncated, what=("not a valid safetensors file or is truncated",),
             fix=("save the features again",)),
        Case("motion-file-foreign", motion_file_foreign, what=("is not a SINGER motion file",),
             fix=("save one with SingerMotion.save",)),
    ]


def _path_and_fps_cases() -> list[Case]:
    from singer_core.audio.encoder_loading import load_audio_encoder
    from singer_core.data.format import ClipMeta, read_index
    from singer_core.motion.generator import MotionModel

    def index_escape(inp, out, face):
        meta = dict(clip_id="clip-0", identity="a", source="synthsinger", fps=25.0, sample_rate=16000, frames=50,
                    size=32, seconds=2.0, has_coeffs=True, extra={})
        root = inp / "dataset"
        root.mkdir()
        from singer_core.data import format as data_format

        (root / "index.json").write_text(json.dumps({
            "format": data_format.FORMAT_NAME, "version": data_format.FORMAT_VERSION, "train": ["../../home"],
            "test": [], "clips": {"../../home": meta}, "seed": 0, "test_fraction": 0.2}))
        return read_index(root)

    def clip_id_escape(inp, out, face):
        return ClipMeta(clip_id="../escape", identity="a", source="synthsinger", fps=25.0, sample_rate=16000,
                        frames=50, size=32, seconds=2.0, has_coeffs=False)

    def encoder_name_escape(inp, out, face):
        models = inp / "models" / "audio_encoders"
        models.mkdir(parents=True)
        folder = save_tiny_motion_model(inp / "motion")
        shutil.copy(folder / "model.safetensors", inp / "outside.safetensors")
        return load_audio_encoder("../../outside.safetensors", models_dir=models)

    def fps_features(inp, out, face):
        torch.manual_seed(0)
        model = MotionModel(tiny_motion_config())
        return model.generate(_features(frames=30, fps=30.0), steps=2)

    def fps_ok(inp, out, face):
        torch.manual_seed(0)
        model = MotionModel(tiny_motion_config(fps=30.0))
        return model.generate(_features(frames=30, fps=30.0), steps=2)

    def check_fps_ok(motion, inp, out):
        assert motion.frames == 30 and motion.fps == 30.0

    def encoder_mismatch(inp, out, face):
        torch.manual_seed(0)
        model = MotionModel(tiny_motion_config())
        return model.generate(_features(encoder="facebook/wav2vec2-base-960h", rows=12, width=768), steps=2)

    def audio_length(inp, out, face):
        return _motion(50, fps=25.0).check_audio_length(4 * 16000, 16000, "SingerRenderMotion")

    def audio_length_ok(inp, out, face):
        return _motion(50, fps=25.0).check_audio_length(2 * 16000 - 300, 16000, "SingerRenderMotion")

    return [
        Case("path-dataset-index-escapes-root", index_escape, what=("lists clip '../../home'",),
             fix=("no paths like '../x'", "rebuild the index")),
        Case("path-clip-id-escapes-root", clip_id_escape, what=("clip_id must be a folder name",),
             fix=("letters, digits",)),
        Case("path-encoder-name-escapes-models-dir", encoder_name_escape, what=("outside", "models_dir"),
             fix=("give a name inside it or an absolute path",)),
        Case("fps-features-30-into-model-25", fps_features, what=("at 30 fps", "trained at 25 fps"),
             fix=("encode the audio at fps=25",)),
        Case("fps-features-30-into-model-30", fps_ok, error=None, check=check_fps_ok),
        Case("fps-features-of-another-encoder", encoder_mismatch,
             what=("encoder 'facebook/wav2vec2-base-960h'", "trained on 'mel-80'"),
             fix=("encode the audio with 'mel-80'",)),
        Case("fps-render-audio-longer-than-motion", audio_length,
             what=("SingerRenderMotion", "audio is 4.00 s long but the motion is 2.00 s"),
             fix=("Connect the song the motion was made from", "re-encode that song at 25 fps")),
        Case("fps-render-audio-within-a-frame", audio_length_ok, error=None, check=lambda result, inp, out: None),
    ]


def _video_cases() -> list[Case]:
    from singer_core.io.video_read import read_video
    from singer_core.io.video_write import write_video

    def truncated_mp4(inp, out, face):
        frames = np.zeros((10, 32, 32, 3), np.uint8)
        full = write_video(inp / "full.mp4", frames, 25.0, audio=_song(0.4, 16000), sample_rate=16000)
        return read_video(_truncated(inp / "cut.mp4", full, keep=0.6))

    def audio_as_video(inp, out, face):
        return read_video(_wav(inp / "song.wav", 0.5))

    def nan_frames(inp, out, face):
        frames = np.zeros((4, 32, 32, 3), np.float32)
        frames[2, 5, 5, 0] = np.nan
        return write_video(out / "clip.mp4", frames, 25.0)

    return [
        Case("video-truncated-mp4", truncated_mp4, what=("'cut.mp4'", "damaged or truncated"),
             fix=("re-export or re-download",)),
        Case("video-audio-file-as-video", audio_as_video, what=("contains no video stream (an audio file)",),
             fix=("give a video file",)),
        Case("video-write-nan-frames", nan_frames, what=("NaN or infinite",), fix=("0..1",)),
    ]


def _cli_cases() -> list[Case]:
    from singer_core.data.__main__ import main as data_main
    from singer_core.eval.__main__ import main as eval_main
    from singer_core.train.__main__ import main as train_main

    def train_not_a_dataset(inp, out, face):
        (inp / "videos").mkdir()
        return _cli(train_main, ["motion", "--data", str(inp / "videos"), "--out", str(out / "run"), "--quiet",
                                 "--device", "cpu"])

    def train_unknown_field(inp, out, face):
        return _cli(train_main, ["motion", "--set", "widht=64", "--out", str(out / "run"), "--quiet"])

    def train_unknown_task(inp, out, face):
        return _cli(train_main, ["motoin", "--out", str(out / "run")])

    def eval_truncated_checkpoint(inp, out, face):
        folder = save_tiny_motion_model(inp / "final")
        _truncated(folder / "model.safetensors", folder / "model.safetensors")
        return _cli(eval_main, ["motion", "--checkpoint", str(folder), "--data", str(inp), "--json",
                                str(out / "result.json"), "--quiet"])

    def eval_missing_checkpoint(inp, out, face):
        return _cli(eval_main, ["motion", "--checkpoint", str(inp / "nothing"), "--data", str(inp), "--json",
                                str(out / "result.json"), "--quiet"])

    def synth_odd_size(inp, out, face):
        return _cli(data_main, ["synth", "--out", str(out / "data"), "--size", "33", "--quiet"])

    def preprocess_missing(inp, out, face):
        return _cli(data_main, ["preprocess", "--videos", str(inp / "no-videos"), "--out", str(out / "data"),
                                "--quiet"])

    def preprocess_corrupt(inp, out, face):
        (inp / "videos").mkdir()
        (inp / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 200)
        return _cli(data_main, ["preprocess", "--videos", str(inp / "videos"), "--out", str(out / "data"),
                                "--quiet"])

    def check_preprocess_corrupt(stdout, inp, out):
        assert "kept 0 clip(s), dropped 1" in stdout and "unreadable: 1" in stdout, stdout

    def preprocess_no_face(inp, out, face):
        from singer_core.data.preprocess import PreprocessConfig, preprocess_videos
        from singer_core.io.video_write import write_video

        (inp / "videos").mkdir()
        frames = np.random.default_rng(0).integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
        write_video(inp / "videos" / "singer.mp4", frames, 25.0, audio=_song(2.0, 16000), sample_rate=16000)
        return preprocess_videos(inp / "videos", out / "data", config=PreprocessConfig(size=64))

    def check_no_face(summary, inp, out):
        assert summary.kept == () and summary.index_path is None
        assert [item.category for item in summary.dropped] == ["no face"], summary.dropped

    return [
        Case("cli-train-data-not-a-dataset", train_not_a_dataset, error=CliFailed,
             what=("is not a SINGER dataset: no index.json",), fix=("python -m singer_core.data synth --out DIR",)),
        Case("cli-train-unknown-config-field", train_unknown_field, error=CliFailed, what=("unknown MotionTrainConfig fields ['widht']",),
             fix=("known fields:", "'width'")),
        Case("cli-train-unknown-task", train_unknown_task, error=CliFailed, what=("unknown training task 'motoin'",),
             fix=("tasks: ", "motion")),
        Case("cli-eval-truncated-checkpoint", eval_truncated_checkpoint, error=CliFailed,
             what=("not a readable safetensors file",), fix=("save or download it again",)),
        Case("cli-eval-missing-checkpoint", eval_missing_checkpoint, error=CliFailed, what=("is not a folder",),
             fix=("give the folder written by save_pretrained",)),
        Case("cli-synth-odd-size", synth_odd_size, error=CliFailed, what=("size must be an even integer",),
             fix=("H.264 needs even sizes",)),
        Case("cli-preprocess-missing-folder", preprocess_missing, error=CliFailed,
             what=("is neither a folder nor a file",), fix=("give the folder of videos",)),
        Case("cli-preprocess-corrupt-video", preprocess_corrupt, error=None, check=check_preprocess_corrupt,
             needs_detector=True),
        Case("cli-preprocess-video-without-face", preprocess_no_face, error=None, check=check_no_face,
             needs_detector=True),
    ]


CASES = _audio_cases() + _image_cases() + _checkpoint_cases() + _path_and_fps_cases() + _video_cases() + _cli_cases()


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir())


def _marks(case: Case) -> list:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return marks + ([pytest.mark.slow] if case.slow else [])


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=_marks(case)) for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, request):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    face = request.getfixturevalue("face_image") if case.needs_face else None
    if case.needs_detector:
        _skip_without_detector()
    if case.error is None:
        result = case.run(inp, out, face)
        case.check(result, inp, out)
    else:
        with pytest.raises(case.error) as info:
            case.run(inp, out, face)
        message = str(info.value)
        if os.environ.get("SINGER_BAD_INPUT_MESSAGES"):
            print(f"\n[{case.id}] {type(info.value).__name__}: {message}")
        for fragment in case.what + case.fix:
            assert fragment.lower() in message.lower(), f"{fragment!r} not in the message:\n{message}"
    assert set(_files(out)) <= set(case.outputs), f"files left in the output folder: {_files(out)}"


def _skip_without_detector() -> None:
    from singer_core.face.detector_files import haar_available

    if not haar_available():
        pytest.skip("needs a face detector that finds the rendered face: this OpenCV has no Haar cascade "
                    "(OpenCV 5) and the tests have no SCRFD / YuNet weights")


@pytest.mark.parametrize("rate,codec,tolerance", [(8000, None, 0.2), (44100, None, 0.02), (192000, "pcm_s24le", 0.02)])
def test_odd_sample_rates_encode_like_the_same_tone_made_at_16khz(tmp_path: Path, rate, codec, tolerance):
    """The 8 kHz / 192 kHz cases above only count frames: here a file at another rate, decoded and encoded, gives
    the mel features of the same closed-form tone (220 Hz with vibrato, far below every Nyquist) synthesised
    directly at the encoder's 16 kHz. Compared away from the clip's ends (resampler edges) on the scale's
    [-4, 4] units; 8 kHz keeps a looser bound (its upsampling filter)."""
    from singer_core.audio.decode import decode_audio
    from singer_core.audio.encoders import MelEncoder

    decoded = decode_audio(_wav(tmp_path / f"song{rate}.wav", 1.5, rate=rate, codec=codec))
    assert decoded.sample_rate == rate
    features = MelEncoder().encode(decoded.waveform, decoded.sample_rate, 25).features
    reference = MelEncoder().encode(_song(1.5, 16000), 16000, 25).features
    assert features.shape == reference.shape == (38, 16, 80)
    inner, expected = features[2:-2], reference[2:-2]
    loud = expected > -2.0  # the tone's bins; the rest sits at the floor of the scale
    assert 0.02 < loud.float().mean() < 0.2
    assert (inner - expected)[loud].abs().max() < tolerance
    assert (inner - expected).abs().mean() < tolerance / 10


def test_low_rate_audio_is_encoded_with_a_warning(caplog):
    from singer_core.audio.encoders import MelEncoder

    with caplog.at_level(logging.WARNING):
        MelEncoder().encode(_song(0.5, 8000), 8000, 25)
    assert any("8000 Hz" in record.getMessage() and "muffled" in record.getMessage() for record in caplog.records)


class _Stop(Exception):
    pass


def _stop_at(count: int):
    def progress(done, total):
        if done >= count:
            raise _Stop
    return progress


@pytest.mark.parametrize("what", ["write_audio", "write_video", "save_pretrained", "preprocess"])
def test_interrupted_writes_leave_no_partial_files(what, tmp_path: Path):
    """Cancel (a progress callback that raises) in the middle of every writer: the output folder stays empty."""
    out = tmp_path / "out"
    out.mkdir()
    if what == "preprocess":
        _skip_without_detector()
    with pytest.raises(_Stop):
        if what == "write_audio":
            from singer_core.audio.encode import write_audio

            write_audio(out / "song.flac", _song(3.0, 16000), 16000, progress=_stop_at(1))
        elif what == "write_video":
            from singer_core.io.video_write import write_video

            write_video(out / "clip.mp4", np.zeros((20, 32, 32, 3), np.uint8), 25.0, audio=_song(0.8, 16000),
                        sample_rate=16000, progress=_stop_at(5))
        elif what == "save_pretrained":
            from singer_core.motion.generator import MotionModel

            model = MotionModel(tiny_motion_config())
            original = model.state_dict

            def failing_state_dict(*args, **kwargs):
                original(*args, **kwargs)
                raise _Stop
            model.state_dict = failing_state_dict
            model.save_pretrained(out / "final")
        else:
            from singer_core.data.preprocess import PreprocessConfig, preprocess_videos
            from singer_core.io.video_write import write_video

            (tmp_path / "videos").mkdir()
            write_video(tmp_path / "videos" / "a.mp4", np.zeros((55, 64, 64, 3), np.uint8), 25.0,
                        audio=_song(2.2, 16000), sample_rate=16000)
            preprocess_videos(tmp_path / "videos", out / "data", config=PreprocessConfig(size=64),
                              progress=_stop_at(10))
    assert _files(out) == []


@pytest.mark.slow
def test_ten_minute_song_file_decodes_and_measures(tmp_path: Path):
    """The slow part of the 10-minute case: decoding a 10-minute file and measuring its loudness."""
    from singer_core.audio.decode import decode_audio
    from singer_core.audio.io import check_audio

    decoded = decode_audio(_wav(tmp_path / "long.flac", 600.0, rate=16000))
    assert decoded.waveform.shape == (1, 600 * 16000)
    report = check_audio(decoded.waveform, decoded.sample_rate, "test")
    assert not report.silent and report.loudness_lufs is not None
