"""Bad inputs, part 3 (issue 16): dataset WAVs (rate, channels, bit depth), the content-keyed feature cache,
channels-last audio arrays, portrait files of every mode, array diagnoses naming the mode, non-finite weights
and --resume-from STEP.

Every case asserts the problem AND the fix in the message (or, for inputs that must work, the numbers against an
independent reference: FFmpeg's decoding, torchaudio's resampling of the whole file, Pillow's conversions).
"""

from __future__ import annotations

import errno  # noqa: F401
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.toy_models import ToyTask, assert_identical, exported_weights, save_tiny_motion_model

# ---------------------------------------------------------------------------------------------------------
# dataset WAVs: the header read and checked


def _clip_folder(root: Path, clip_id: str = "c0", seconds: float = 2.0) -> Path:
    from singer_core.data.format import ClipMeta

    folder = root / clip_id
    folder.mkdir(parents=True)
    meta = ClipMeta(clip_id=clip_id, identity="a", source="real", fps=25.0, sample_rate=16000,
                    frames=round(25 * seconds), size=64, seconds=seconds, has_coeffs=False)
    (folder / "meta.json").write_text(meta.to_json())
    return folder


def _tone(rate: int, seconds: float = 2.0, channels: int = 1) -> torch.Tensor:
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 1500 * t)
    return tone.float()[None].repeat(channels, 1)


def test_clip_at_another_rate_is_resampled_with_a_warning(tmp_path, caplog):
    from singer_core.audio.encode import write_audio
    from singer_core.audio.io import resample
    from singer_core.data.format import Clip

    folder = _clip_folder(tmp_path)
    write_audio(folder / "audio.wav", _tone(22050), 22050, codec="pcm_f32le")
    with caplog.at_level(logging.WARNING):
        audio = Clip(folder).audio
    assert "Clip 'c0': 'audio.wav' is 32-bit float, 1 ch, 22050 Hz but meta.json says 16000 Hz" in caplog.text
    assert "convert the file" in caplog.text
    reference = resample(_tone(22050), 22050, 16000)  # the file's content at the clip's rate
    assert audio.shape == reference.shape == (1, 32000)
    assert float((audio - reference).abs().max()) < 1e-5
    window = Clip(folder).audio_span(12345, 640)  # a window reads the same samples as the whole file
    assert float((window - reference[:, 12345:12985]).abs().max()) < 1e-5


@pytest.mark.parametrize("codec,tolerance", [("pcm_s24le", 2 ** -22), ("pcm_s32le", 1e-7), ("pcm_f32le", 0.0)])
def test_clip_wav_bit_depths_read_like_ffmpeg(tmp_path, codec, tolerance):
    from singer_core.audio.decode import decode_audio
    from singer_core.audio.encode import write_audio
    from singer_core.data.format import Clip

    folder = _clip_folder(tmp_path)
    write_audio(folder / "audio.wav", _tone(16000, channels=2), 16000, codec=codec)
    audio = Clip(folder).audio
    assert torch.equal(audio, decode_audio(folder / "audio.wav").waveform)  # FFmpeg's decoding, exactly
    assert float((audio - _tone(16000, channels=2)).abs().max()) <= tolerance + 1e-9


def test_compressed_wav_is_refused_naming_clip_and_conversion(tmp_path):
    from singer_core.audio.io import write_wav
    from singer_core.data.format import Clip

    folder = _clip_folder(tmp_path)
    path = write_wav(folder / "audio.wav", _tone(16000), 16000)
    data = bytearray(path.read_bytes())
    data[20:22] = (0x0011).to_bytes(2, "little")  # IMA ADPCM format tag
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as caught:
        Clip(folder).audio_span(0, 100)
    assert "Clip 'c0'" in str(caught.value) and "compressed WAV (format tag 0x0011)" in str(caught.value)
    assert "ffmpeg -i IN.wav -ar 16000 -ac 1 -c:a pcm_s16le" in str(caught.value)


def test_wav_without_data_chunk_is_named_damaged(tmp_path):
    from singer_core.audio.io import write_wav
    from singer_core.data.format import Clip

    folder = _clip_folder(tmp_path)
    path = write_wav(folder / "audio.wav", _tone(16000), 16000)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="has no data chunk: the WAV file is damaged or cut short"):
        Clip(folder).read_wav("audio.wav")


def test_index_naming_a_deleted_clip_mentions_index_json(tmp_path):
    import shutil

    from singer_core.data.synthetic import SynthSingerConfig, generate_dataset
    from singer_core.train.data_cache import AudioSpec, cached_features

    root = tmp_path / "data"
    index = generate_dataset(root, SynthSingerConfig(clips=2, size=32, seconds=0.4, test_fraction=0.5))
    shutil.rmtree(root / index.train[0])
    with pytest.raises(FileNotFoundError) as caught:
        cached_features(root, index.train, AudioSpec(), tmp_path / "cache")
    message = str(caught.value)
    assert f"clip '{index.train[0]}' is listed in" in message and "index.json" in message
    assert "write_index(root, scan_clips(root))" in message


# ---------------------------------------------------------------------------------------------------------
# the feature cache is keyed by content


def test_feature_cache_follows_the_clip_audio(tmp_path):
    from singer_core.audio.encoders import MelEncoder
    from singer_core.audio.features import SingerAudioFeatures
    from singer_core.audio.io import write_wav
    from singer_core.data.format import Clip, write_index
    from singer_core.train.data_cache import AudioSpec, cached_features

    root = tmp_path / "data"
    folder = _clip_folder(root)
    write_wav(folder / "audio.wav", _tone(16000), 16000)
    (folder / "video.mp4").write_bytes(b"")  # read_clip checks it exists; the features never read it
    write_index(root, [Clip(folder).meta])
    first = cached_features(root, ["c0"], AudioSpec(), tmp_path / "cache")["c0"]
    again = cached_features(root, ["c0"], AudioSpec(), tmp_path / "cache")["c0"]
    assert first == again  # unchanged content: reused
    replaced = _tone(16000) * 0.2 + 0.3 * torch.sin(torch.arange(32000) / 3.0)[None]
    write_wav(folder / "audio.wav", replaced, 16000)
    os.utime(folder / "audio.wav", ns=(time.time_ns() + 10 ** 9, time.time_ns() + 10 ** 9))
    second = cached_features(root, ["c0"], AudioSpec(), tmp_path / "cache")["c0"]
    assert second != first and not first.exists()  # stale features of the old audio removed
    expected = MelEncoder().encode(Clip(folder).audio, 16000, 25, allow_silence=True).features[:50]
    assert torch.equal(SingerAudioFeatures.load(second).features, expected)
    other = cached_features(root, ["c0"], AudioSpec(layers="last"), tmp_path / "cache")["c0"]
    assert other.parent != second.parent  # another encoder configuration: another cache folder


# ---------------------------------------------------------------------------------------------------------
# channels-last audio arrays


@pytest.mark.parametrize("call", ["mel-encode", "to-mono", "comfy-audio"])
def test_channels_last_song_is_refused_with_the_transpose(call):
    from singer_core.audio.encoders import MelEncoder
    from singer_core.audio.io import audio_from_comfy, to_mono

    song = _tone(16000, channels=2).T.contiguous()  # (T, 2): soundfile's layout
    with pytest.raises(ValueError) as caught:
        if call == "mel-encode":
            MelEncoder().encode(song, 16000, 25)
        elif call == "to-mono":
            to_mono(song)
        else:
            audio_from_comfy({"waveform": song[None], "sample_rate": 16000}, "SingerAudioEncode")
    message = str(caught.value)
    assert "32000, 2)" in message and "channels-last (samples, channels)" in message
    assert ("waveform.T" in message) or ("waveform.transpose(-1, -2)" in message)


def test_channels_first_short_stereo_still_works():
    from singer_core.audio.encoders import MelEncoder

    features = MelEncoder().encode(_tone(16000, 0.5, channels=2), 16000, 25)
    assert features.frames == 13


# ---------------------------------------------------------------------------------------------------------
# portraits read from files, and array diagnoses naming the actual mode


def _portrait_rgb() -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([x * 4, y * 5, 255 - x * 2], axis=-1).astype(np.uint8)  # (48, 64, 3)


def test_cmyk_jpeg_portrait_keeps_its_colours(tmp_path):
    from PIL import Image

    from singer_core.io.image import load_image

    rgb = _portrait_rgb()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "p.jpg", quality=98)
    loaded = load_image(tmp_path / "p.jpg")
    assert loaded.shape == (48, 64, 3) and loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - rgb.astype(int)).mean() < 6  # not inverted (that would be ~128)
    raw = np.asarray(Image.open(tmp_path / "p.jpg"))[..., :3]  # the old advice: inverted colours
    assert np.abs(raw.astype(int) - rgb.astype(int)).mean() > 60


def test_palette_png_portrait_uses_its_palette(tmp_path):
    from PIL import Image

    from singer_core.io.image import load_image

    palette_image = Image.fromarray(_portrait_rgb()).quantize(64)
    palette_image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(load_image(tmp_path / "p.png"), np.asarray(palette_image.convert("RGB")))


def test_la_png_portrait_is_composited_over_white(tmp_path):
    from PIL import Image

    from singer_core.io.image import load_image

    gray = np.full((32, 32), 100, np.uint8)
    alpha = np.zeros((32, 32), np.uint8)
    alpha[:, 16:] = 255
    Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)]).save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    assert (loaded[:, :16] == 255).all() and (loaded[:, 16:] == 100).all()


def test_16_bit_png_portrait_is_scaled_by_65535(tmp_path):
    from PIL import Image

    from singer_core.io.image import load_image

    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    expected = np.rint(values / 65535.0 * 255.0).astype(np.uint8)
    assert np.array_equal(loaded[..., 0], expected) and np.array_equal(loaded[..., 2], expected)


def test_animated_gif_portrait_gives_its_first_frame(tmp_path):
    from PIL import Image

    from singer_core.io.image import load_image

    frames = [Image.new("RGB", (32, 32), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "p.gif", save_all=True, append_images=frames[1:], duration=100)
    loaded = load_image(tmp_path / "p.gif")
    assert loaded.shape == (32, 32, 3) and loaded[..., 0].min() > 200 and loaded[..., 1].max() < 30


def test_exif_rotated_portrait_is_turned_upright(tmp_path):
    from PIL import Image

    from singer_core.io.image import load_image

    upright = _portrait_rgb()  # 48 high, 64 wide
    stored = Image.fromarray(np.rot90(upright, k=1).copy())  # stored sideways, 64 high, as a phone does
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "p.jpg", exif=exif, quality=98)
    loaded = load_image(tmp_path / "p.jpg")
    assert loaded.shape == (48, 64, 3)
    assert np.abs(loaded.astype(int) - upright.astype(int)).mean() < 6


def test_face_detector_reads_an_exif_rotated_portrait_file(tmp_path):
    """The issue's case: a phone portrait stored sideways with an EXIF orientation; the face must be found."""
    if not _haar_available():
        pytest.skip("this OpenCV build has no Haar cascades (CascadeClassifier)")
    from PIL import Image

    from singer_core.data.synthetic import make_identity
    from singer_core.face.detect import detect_faces
    from singer_core.face.motion_types import FaceIdentity, SingerMotion
    from singer_core.face.procedural import procedural_model
    from singer_core.face.render import render_coeffs

    made = make_identity(0)
    identity = FaceIdentity(id=made.id_coeffs, tex=made.tex_coeffs, gamma=made.gamma,
                            background=tuple(float(c) for c in made.background_rgb))
    still = SingerMotion(exp=torch.zeros(1, 64), angle=torch.zeros(1, 3), trans=torch.zeros(1, 3), fps=25.0)
    out = render_coeffs(procedural_model(seed=0), identity.coefficients(still), image_size=128,
                        background=identity.background)
    face = (out.images[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert detect_faces(face)  # upright: found
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the pixels are stored turned left
    Image.fromarray(np.rot90(face, k=1).copy()).save(tmp_path / "face.jpg", exif=exif, quality=97)
    assert detect_faces(str(tmp_path / "face.jpg"))


@pytest.mark.parametrize("array,what,fix", [
    (np.zeros((64, 64, 3), np.uint16) + 4000, "a 16-bit image (uint16", "/ 65535 * 255"),
    (np.zeros((64, 64, 4), np.uint8), "RGBA, or CMYK (a print JPEG)", "load_image"),
    (np.zeros((64, 64), np.uint8), "grayscale, or the indices of a palette image", "load_image"),
    (np.zeros((64, 64, 2), np.uint8), "gray + alpha (LA", "load_image"),
], ids=["16-bit", "four-channels", "one-channel", "gray-alpha"])
def test_portrait_array_diagnoses_name_the_mode(array, what, fix):
    from singer_core.io.image import describe_array_mode

    message = describe_array_mode(array)
    if _haar_available():  # the detector refuses the array with that diagnosis
        from singer_core.face.detect import detect_faces

        with pytest.raises(ValueError) as caught:
            detect_faces(array)
        message = str(caught.value)
    assert what in message and fix in message
    assert "(image * 255)" not in message  # never the float fix for integer images


def _haar_available() -> bool:
    import cv2

    return hasattr(cv2, "CascadeClassifier")


# ---------------------------------------------------------------------------------------------------------
# weights: non-finite tensors refused at load; --resume-from STEP


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_refused_at_load(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    from singer_core.motion.generator import MotionModel

    folder = save_tiny_motion_model(tmp_path / "model")
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(key for key, value in state.items() if value.is_floating_point())[3]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = bad
    save_file(state, str(folder / "model.safetensors"), metadata={"model_type": "MotionModel"})
    with pytest.raises(ValueError) as caught:
        MotionModel.from_pretrained(folder)
    message = str(caught.value)
    assert str(folder / "model.safetensors") in message and f"tensor '{name}'" in message
    assert ("1 NaN" if math.isnan(bad) else "1 infinite") in message and "--resume-from STEP" in message


def test_resume_skips_a_checkpoint_holding_nan_and_stays_exact(tmp_path, caplog):
    from singer_core.io.checkpoint import load_tensors, save_tensors
    from singer_core.train.loop import train

    out = tmp_path / "run"
    train(ToyTask, out=out, max_steps=4, device="cpu", cache_dir=tmp_path, quiet=True)
    path = out / "checkpoints" / "step-0000004" / "state.safetensors"
    tensors = load_tensors(path)
    tensors["model.net.net.0.weight"] = torch.full_like(tensors["model.net.net.0.weight"], float("nan"))
    save_tensors(path, tensors, metadata={"format": "singer-train-checkpoint"})
    with caplog.at_level(logging.WARNING):
        resumed = train(ToyTask, out=out, resume=True, device="cpu", cache_dir=tmp_path, quiet=True)
    assert "step-0000004" in caplog.text and "NaN" in caplog.text
    straight = train(ToyTask, out=tmp_path / "ref", device="cpu", cache_dir=tmp_path, quiet=True)
    assert_identical(exported_weights(straight), exported_weights(resumed))


def test_resume_from_step_is_exact_and_sets_newer_checkpoints_aside(tmp_path):
    from singer_core.train.checkpoints import list_checkpoints
    from singer_core.train.loop import train

    out = tmp_path / "run"
    train(ToyTask, out=out, max_steps=6, device="cpu", cache_dir=tmp_path, quiet=True)
    resumed = train(ToyTask, out=out, resume_from=2, device="cpu", cache_dir=tmp_path, quiet=True)
    straight = train(ToyTask, out=tmp_path / "ref", device="cpu", cache_dir=tmp_path, quiet=True)
    assert_identical(exported_weights(straight), exported_weights(resumed))
    assert sorted(p.name for p in (out / "checkpoints").glob("abandoned-step-*")) == [
        "abandoned-step-0000004", "abandoned-step-0000006"]
    assert [step for step, _ in list_checkpoints(out)] == [2, 4, 6]


def test_resume_from_a_missing_step_lists_the_saved_ones(tmp_path):
    from singer_core.train.loop import train

    out = tmp_path / "run"
    train(ToyTask, out=out, max_steps=4, device="cpu", cache_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError) as caught:
        train(ToyTask, out=out, resume_from=3, device="cpu", cache_dir=tmp_path, quiet=True)
    assert "no checkpoint of step 3" in str(caught.value) and "saved steps: [2, 4]" in str(caught.value)
    assert "--resume-from" in str(caught.value)


def test_file_system_messages_classify_errno(tmp_path):
    from singer_core.io.fs import describe_os_error

    cases = {errno.EROFS: "read-only", errno.EACCES: "read-only", errno.ENOSPC: "the disk is full",
             errno.ENOTDIR: "a part of that path is a file", errno.EISDIR: "it is a folder, not a file"}
    for code, words in cases.items():
        message = describe_os_error(OSError(code, os.strerror(code)), tmp_path / "x")
        assert words in message and str(tmp_path / "x") in message, message
