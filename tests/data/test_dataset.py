"""SingerClipDataset: deterministic (clip, start) windows whose frames, audio samples, features,
coefficients and landmarks are the same span of the clip, checked against clips whose every frame, sample
and coefficient row encodes its own index (read back independently with the standard library)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from singer_core.audio.features import SingerAudioFeatures
from singer_core.data.dataset import SingerClipDataset
from singer_core.data.format import ClipMeta, write_clip, write_index

FPS, RATE, SIZE = 25.0, 16000, 32
LENGTHS = {"p0_0": 12, "p1_0": 20, "p2_0": 7, "p3_0": 16, "p4_0": 9}  # frames per clip


def _make_clip(root, clip_id, frames, with_coeffs):
    levels = torch.arange(frames, dtype=torch.uint8) * 12  # frame i is a flat grey of level 12 i
    images = levels[:, None, None, None].expand(frames, SIZE, SIZE, 3).contiguous()
    images[:, :4, :4] = 255  # a white corner: resizing must keep it top-left
    samples = frames * 640 - 123  # audio a little shorter than the frames (the last window is padded)
    rng = np.random.default_rng(frames)
    audio = torch.from_numpy(rng.uniform(-0.8, 0.8, (1, samples))).float()
    meta = ClipMeta(clip_id=clip_id, identity=clip_id.split("_")[0], source="synthsinger" if with_coeffs else
                    "real", fps=FPS, sample_rate=RATE, frames=frames, size=SIZE, seconds=samples / RATE,
                    has_coeffs=with_coeffs)
    row = torch.arange(frames, dtype=torch.float32)
    coeffs = None
    if with_coeffs:
        coeffs = {"exp": row[:, None].repeat(1, 64), "angle": row[:, None].repeat(1, 3),
                  "trans": -row[:, None].repeat(1, 3), "id": torch.arange(80.0), "tex": torch.ones(80),
                  "gamma": torch.zeros(27)}
    marks = {"landmarks": row[:, None, None].expand(frames, 68, 2).contiguous() + 1.0}
    if not with_coeffs:  # a real clip: the preprocessor's per-frame extras come along
        marks["box"] = row[:, None].repeat(1, 4)
        marks["detected"] = torch.arange(frames) % 2 == 0
    write_clip(root / clip_id, frames=images, fps=FPS, audio=audio, sample_rate=RATE, meta=meta,
               coeffs=coeffs, landmarks=marks)
    features = torch.arange(frames, dtype=torch.float32)[:, None, None].expand(frames, 2, 3).contiguous()
    SingerAudioFeatures(features=features, fps=FPS, encoder="test", sample_rate=RATE,
                        num_samples=samples).save(root / "features" / f"{clip_id}.safetensors")
    return meta


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    metas = [_make_clip(root, name, frames, with_coeffs=name != "p3_0") for name, frames in LENGTHS.items()]
    write_index(root, metas)
    return root


def _wav(path):
    with wave.open(str(path)) as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2") / 32768.0


def test_windows_are_deterministic_and_cover_every_clip(dataset_root):
    data = SingerClipDataset(dataset_root, "all", window=8, stride=4, features_dir="features")
    expected = [(name, start) for name in sorted(LENGTHS) for start in range(0, LENGTHS[name] - 8 + 1, 4)]
    assert [(data.clips[c].meta.clip_id, s) for c, s in data.items] == expected  # p2_0 (7 frames) skipped
    again = SingerClipDataset(dataset_root, "all", window=8, stride=4)
    assert again.items == data.items
    assert len(SingerClipDataset(dataset_root, "all", window=4)) == sum(n // 4 for n in LENGTHS.values())
    train = SingerClipDataset(dataset_root, "train", window=4)
    test = SingerClipDataset(dataset_root, "test", window=4)
    train_ids = {c.meta.identity for c in train.clips}
    assert len(train_ids) == 4 and len(test.clips) == 1 and test.clips[0].meta.identity not in train_ids


def test_items_align_frames_audio_features_coeffs_landmarks(dataset_root):
    data = SingerClipDataset(dataset_root, "all", window=8, stride=4, features_dir="features")
    for index in range(len(data)):
        item = data[index]
        name, start = item["clip_id"], item["start"]
        frames = LENGTHS[name]
        rows = torch.arange(start, start + 8, dtype=torch.float32)
        # frames: frame j of the window is clip frame start + j (grey level 12 (start + j))
        assert item["frames"].shape == (8, 3, SIZE, SIZE) and item["frames"].dtype == torch.float32
        levels = item["frames"][:, :, 8:, 8:].mean(dim=(1, 2, 3)) * 255
        assert torch.allclose(levels, rows * 12, atol=2.5), (name, start, levels)
        reference_level = item["reference"][:, 8:, 8:].mean() * 255
        assert reference_level < 2.5, "the reference is the clip's first frame (level 0)"
        # audio: exactly window / fps * rate samples from sample start / fps * rate, read independently
        pcm = _wav(dataset_root / name / "audio.wav")
        first = start * 640
        expected = np.zeros(8 * 640)
        chunk = pcm[first:first + 8 * 640]
        expected[: chunk.shape[0]] = chunk
        assert item["audio"].shape == (8 * 640,)
        assert np.array_equal(item["audio"].numpy(), expected.astype(np.float32))
        assert torch.equal(item["features"], rows[:, None, None].expand(8, 2, 3))
        assert torch.equal(item["landmarks"], rows[:, None, None].expand(8, 68, 2) + 1.0)
        if name == "p3_0":  # a real clip: no coefficients, a face box
            assert "coeffs" not in item and torch.equal(item["box"], rows[:, None].expand(8, 4))
            assert torch.equal(item["detected"], torch.arange(start, start + 8) % 2 == 0)
        else:
            coeffs = item["coeffs"]
            assert torch.equal(coeffs["exp"], rows[:, None].expand(8, 64))
            assert torch.equal(coeffs["trans"], -rows[:, None].expand(8, 3))
            assert torch.equal(coeffs["id"], torch.arange(80.0).expand(8, 80))
            assert coeffs["gamma"].shape == (8, 27)
        assert frames * 640 - 123 >= first  # every window starts inside the audio


def test_reference_window_resize_and_whole_clips(dataset_root):
    data = SingerClipDataset(dataset_root, "all", window=4, stride=4, image_size=16, reference="window",
                             with_audio=False)
    item = data[1]  # p0_0 from frame 4
    assert item["start"] == 4 and "audio" not in item
    assert item["frames"].shape == (4, 3, 16, 16) and item["reference"].shape == (3, 16, 16)
    assert torch.allclose(item["reference"], item["frames"][0])
    assert item["frames"][0, :, 0, 0].min() > 0.9, "the white corner stays top-left after resizing"
    assert torch.allclose(item["landmarks"], (torch.arange(4, 8.0)[:, None, None] + 1.0).expand(4, 68, 2) / 2)
    whole = SingerClipDataset(dataset_root, "all", window=None)
    assert len(whole) == len(LENGTHS)
    assert [whole[i]["frames"].shape[0] for i in range(len(whole))] == [LENGTHS[n] for n in sorted(LENGTHS)]
    batch = next(iter(torch.utils.data.DataLoader(SingerClipDataset(dataset_root, "train", window=4),
                                                  batch_size=3)))
    assert batch["frames"].shape == (3, 4, 3, SIZE, SIZE) and batch["audio"].shape == (3, 4 * 640)


def test_clear_errors(dataset_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SINGER dataset"):
        SingerClipDataset(tmp_path)
    with pytest.raises(ValueError, match="longer than every clip"):
        SingerClipDataset(dataset_root, "all", window=21)
    with pytest.raises(ValueError, match="split"):
        SingerClipDataset(dataset_root, "validation")
    with pytest.raises(ValueError, match="reference"):
        SingerClipDataset(dataset_root, reference="random")
    with pytest.raises(FileNotFoundError, match="features_dir"):
        SingerClipDataset(dataset_root, features_dir="no_such_folder")
    with pytest.raises(IndexError):
        SingerClipDataset(dataset_root, "all", window=4)[10_000]


def test_missing_files_are_named(tmp_path):
    write_index(tmp_path, [_make_clip(tmp_path, "p0_0", 6, with_coeffs=True),
                           _make_clip(tmp_path, "p1_0", 6, with_coeffs=True)])
    (tmp_path / "p0_0" / "video.mp4").unlink()
    data = SingerClipDataset(tmp_path, "all", window=4)
    with pytest.raises(FileNotFoundError, match="p0_0.*video.mp4' is missing"):
        data[0]
    with pytest.raises(FileNotFoundError, match="no cached features for clip 'p1_0'"):
        (tmp_path / "features" / "p1_0.safetensors").unlink()
        SingerClipDataset(tmp_path, "all", window=4, features_dir=tmp_path / "features")[1]
    import shutil

    shutil.rmtree(tmp_path / "p1_0")
    with pytest.raises(FileNotFoundError, match="'p1_0' is in index.json"):
        SingerClipDataset(tmp_path, "all", window=4)
