"""The SINGER clip format: atomic clip folders that read back exactly (frames within codec error, 16 kHz mono
audio, coefficients, landmarks, stems), the identity-wise 4:1 index split, and clear errors."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from singer_core.data.format import (
    ClipMeta,
    full_coeffs,
    read_clip,
    read_index,
    scan_clips,
    split_identities,
    write_clip,
    write_index,
)

FPS, RATE, SIZE = 25.0, 16000, 32


def _meta(clip_id="clip0", identity="person0", frames=10, has_coeffs=False, **extra):
    return ClipMeta(clip_id=clip_id, identity=identity, source="synthsinger" if has_coeffs else "real",
                    fps=FPS, sample_rate=RATE, frames=frames, size=SIZE, seconds=frames / FPS,
                    has_coeffs=has_coeffs, extra=extra)


def _frames(count):
    """Frame i is a flat grey of level 20 * i (so decoding can be checked frame by frame)."""
    levels = torch.arange(count, dtype=torch.uint8) * 20
    return levels[:, None, None, None].expand(count, SIZE, SIZE, 3).contiguous()


def _coeffs(count):
    return {"exp": torch.randn(count, 64), "angle": torch.randn(count, 3), "trans": torch.randn(count, 3),
            "id": torch.randn(80), "tex": torch.randn(80), "gamma": torch.randn(count, 27)}


def test_clip_round_trip(tmp_path):
    count = 10
    audio = 0.5 * torch.sin(torch.arange(count * 640) / 10.0)[None].repeat(2, 1)  # stereo at 16 kHz
    coeffs = _coeffs(count)
    marks = {"landmarks": torch.rand(count, 68, 2) * SIZE, "box": torch.rand(count, 4)}
    meta = _meta(frames=count, has_coeffs=True, note="hello")
    write_clip(tmp_path / "clip0", frames=_frames(count), fps=FPS, audio=audio, sample_rate=RATE, meta=meta,
               coeffs=coeffs, landmarks=marks, stems={"vocals": audio[:1] * 0.5},
               tensors={"timeline": {"energy": torch.arange(count * 1.0), "beat_times": torch.rand(count)}})
    names = sorted(path.name for path in (tmp_path / "clip0").iterdir())
    assert names == ["audio.wav", "coeffs.safetensors", "landmarks.safetensors", "meta.json",
                     "timeline.safetensors", "video.mp4", "vocals.wav"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    clip = read_clip(tmp_path / "clip0")
    assert clip.meta == meta and clip.meta.extra == {"note": "hello"}
    frames = clip.frames()
    assert frames.shape == (count, SIZE, SIZE, 3) and frames.dtype == torch.uint8
    levels = frames.float().mean(dim=(1, 2, 3))
    assert torch.allclose(levels, torch.arange(count) * 20.0, atol=2.5)  # H.264 at crf 18, flat frames
    part = clip.frames(3, 7)
    assert torch.equal(part, frames[3:7])  # a seeked span is the same decoded frames
    # audio.wav: 16-bit mono at 16 kHz, checked with the standard library reader
    with wave.open(str(tmp_path / "clip0" / "audio.wav")) as handle:
        assert (handle.getnchannels(), handle.getframerate(), handle.getsampwidth()) == (1, RATE, 2)
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), "<i2") / 32768.0
    mono = audio.mean(0).numpy()
    assert pcm.shape == mono.shape and np.abs(pcm - mono).max() < 2 / 32768
    assert torch.allclose(clip.audio[0], torch.from_numpy(pcm).float())
    span = clip.audio_span(1000, 50)
    assert torch.equal(span[0], clip.audio[0, 1000:1050])
    tail = clip.audio_span(count * 640 - 10, 30)
    assert torch.equal(tail[0, 10:], torch.zeros(20)), "samples past the end are zeros"
    assert torch.allclose(clip.read_wav("vocals.wav")[0], torch.from_numpy(pcm).float() * 0.5, atol=2e-4)
    for key, value in coeffs.items():
        assert torch.equal(clip.coeffs[key], value)
    assert torch.equal(clip.landmarks["landmarks"], marks["landmarks"])
    assert torch.equal(clip.tensors("coeffs", slice(2, 5))["exp"], coeffs["exp"][2:5])
    assert torch.equal(clip.tensors("coeffs", slice(2, 5))["id"], coeffs["id"])  # per-clip: whole
    timeline = clip.tensors("timeline", slice(2, 5))
    assert torch.equal(timeline["energy"], torch.tensor([2.0, 3.0, 4.0]))  # 1-D per-frame: sliced
    assert timeline["beat_times"].shape == (count,)  # a per-clip list, even when it has T entries


def test_full_coeffs_follows_the_deep3d_layout():
    coeffs = _coeffs(4)
    full = full_coeffs(coeffs)
    assert full.shape == (4, 257)
    assert torch.equal(full[:, 0:80], coeffs["id"].expand(4, 80))
    assert torch.equal(full[:, 80:144], coeffs["exp"])
    assert torch.equal(full[:, 144:224], coeffs["tex"].expand(4, 80))
    assert torch.equal(full[:, 224:227], coeffs["angle"])
    assert torch.equal(full[:, 227:254], coeffs["gamma"])
    assert torch.equal(full[:, 254:257], coeffs["trans"])


def test_write_clip_refuses_bad_input_and_leaves_nothing(tmp_path):
    good = dict(frames=_frames(4), fps=FPS, audio=torch.zeros(1, 2560), sample_rate=RATE,
                meta=_meta(frames=4))
    with pytest.raises(ValueError, match="folder name"):
        write_clip(tmp_path / "other", **good)
    with pytest.raises(ValueError, match="do not match meta"):
        write_clip(tmp_path / "clip0", **(good | {"frames": _frames(5)}))
    with pytest.raises(ValueError, match="has_coeffs"):
        write_clip(tmp_path / "clip0", **good, coeffs=_coeffs(4))
    bad = _coeffs(4) | {"exp": torch.zeros(4, 63)}
    with pytest.raises(ValueError, match="exp"):
        write_clip(tmp_path / "clip0", **(good | {"meta": _meta(frames=4, has_coeffs=True)}), coeffs=bad)
    with pytest.raises(ValueError, match="landmarks"):
        write_clip(tmp_path / "clip0", **good, landmarks={"landmarks": torch.zeros(4, 5, 2)})
    with pytest.raises(ValueError, match="per frame"):
        write_clip(tmp_path / "clip0", **good, landmarks={"box": torch.zeros(3, 4)})
    assert not list(tmp_path.iterdir())

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_clip(tmp_path / "clip0", **good, progress=stop)
    assert not list(tmp_path.iterdir()), "an interrupted write leaves no folder"
    write_clip(tmp_path / "clip0", **good)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_clip(tmp_path / "clip0", **good)
    write_clip(tmp_path / "clip0", **(good | {"meta": _meta(frames=4, note=1)}), overwrite=True)
    assert read_clip(tmp_path / "clip0").meta.extra == {"note": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["clip0"]


def test_clip_meta_json_round_trip_and_errors():
    meta = _meta(extra_key=[1, 2])
    assert ClipMeta.from_json(meta.to_json()) == meta
    data = json.loads(meta.to_json())
    with pytest.raises(ValueError, match="unknown keys"):
        ClipMeta.from_dict(data | {"colour": 1})
    with pytest.raises(ValueError, match="clip_id"):
        ClipMeta.from_dict(data | {"clip_id": "../x"})
    with pytest.raises(ValueError, match="source"):
        ClipMeta.from_dict(data | {"source": "web"})
    with pytest.raises(ValueError, match="frames"):
        ClipMeta.from_dict(data | {"frames": 0})


def test_index_splits_four_to_one_by_identity(tmp_path):
    metas = [_meta(clip_id=f"p{person}_{take}", identity=f"p{person}")
             for person in range(10) for take in range(3)]
    write_index(tmp_path, metas, seed=3)
    index = read_index(tmp_path)
    assert set(index.clips) == {m.clip_id for m in metas} and index.clips["p1_2"] == metas[5]
    owner = {m.clip_id: m.identity for m in metas}
    train_people = {owner[name] for name in index.train}
    test_people = {owner[name] for name in index.test}
    assert len(train_people) == 8 and len(test_people) == 2 and not train_people & test_people
    assert len(index.train) == 24 and len(index.test) == 6
    assert sorted(index.split("all")) == sorted(owner)
    first = (tmp_path / "index.json").read_bytes()
    write_index(tmp_path, list(reversed(metas)), seed=3)
    assert (tmp_path / "index.json").read_bytes() == first, "the index does not depend on the clip order"
    splits = {tuple(split_identities([f"p{i}" for i in range(10)], seed=seed)[1]) for seed in range(20)}
    assert len(splits) > 5, "the seed chooses which identities are held out"
    assert len(split_identities(["a", "b", "c", "d", "e"])[1]) == 1
    assert len(split_identities(["a", "b"])[1]) == 1
    assert split_identities(["solo"]) == (["solo"], [])


def test_read_index_and_read_clip_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SINGER dataset"):
        read_index(tmp_path)
    write_clip(tmp_path / "clip0", frames=_frames(3), fps=FPS, audio=torch.zeros(1, 1920), sample_rate=RATE,
               meta=_meta(frames=3))
    with pytest.raises(FileNotFoundError, match="write_index"):
        read_index(tmp_path)
    assert [m.clip_id for m in scan_clips(tmp_path)] == ["clip0"]
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a singer-clip-dataset"):
        read_index(tmp_path)
    (tmp_path / "clip0" / "video.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="video.mp4' is missing"):
        read_clip(tmp_path / "clip0")
    with pytest.raises(FileNotFoundError, match="not a clip folder"):
        read_clip(tmp_path)
