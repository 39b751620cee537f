"""singer_core.io.video_read against independent references: FFmpeg's own fps filter (through a PyAV filter
graph) and the closed form of its rounding rule, analytic frame contents, rotation matrices written into the
file header, box means for downscaling, and click positions at known sample times."""

from __future__ import annotations

import math
import struct

import av
import numpy as np
import pytest

from singer_core.io.video_read import iter_audio_blocks, iter_video_frames, probe_video, read_video
from singer_core.io.video_write import write_video
from tests.media_patterns import coded_frame, decode_index, smooth_frames


@pytest.fixture(scope="module")
def coded_30fps(tmp_path_factory):
    """6 s at 30 fps, frame k spelling k, a key frame every 12 frames (so seeks land inside the file)."""
    path = tmp_path_factory.mktemp("video") / "coded.mp4"
    write_video(path, np.stack([coded_frame(k) for k in range(180)]), 30, keyframe_interval=12)
    return path


def _ffmpeg_fps_filter(path, rate: str) -> list[int]:
    """Frame indices FFmpeg's fps filter picks (the reference our resampling must match)."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        source, fps, sink = graph.add_buffer(template=stream), graph.add("fps", rate), graph.add("buffersink")
        source.link_to(fps)
        fps.link_to(sink)
        graph.configure()

        def drain():
            while True:
                try:
                    frame = graph.pull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                out.append(decode_index(frame.to_ndarray(format="rgb24")))

        for frame in container.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    return out


def test_fps_resampling_matches_ffmpeg_fps_filter_and_closed_form(coded_30fps):
    native = [decode_index(frame.image) for frame in iter_video_frames(coded_30fps)]
    assert native == list(range(180))
    # 30 -> 25 fps: slot round(k * 25 / 30) with halves up; slot n shows the latest k with slot <= n, i.e.
    # k = ceil((6 n + 3) / 5) - 1, and the output ends at round(6.0 s * 25) = 150 frames
    frames = list(iter_video_frames(coded_30fps, fps=25))
    picked = [decode_index(frame.image) for frame in frames]
    closed_form = [math.ceil((6 * n + 3) / 5) - 1 for n in range(150)]
    assert picked == closed_form
    assert picked == _ffmpeg_fps_filter(coded_30fps, "25")
    assert [frame.index for frame in frames] == list(range(150))
    assert frames[7].time == pytest.approx(7 / 25)
    # up-sampling 30 -> 45 fps duplicates frames: 270 of them, again as FFmpeg does
    picked = [decode_index(frame.image) for frame in iter_video_frames(coded_30fps, fps=45)]
    assert len(picked) == 270 and picked == _ffmpeg_fps_filter(coded_30fps, "45")


@pytest.mark.parametrize("count, suffix", [(5, ".mp4"), (15, ".mp4"), (75, ".mp4"), (75, ".mkv"), (45, ".mov")])
def test_fps_resampling_ends_like_ffmpeg(tmp_path, count, suffix):
    frames = np.stack([coded_frame(k) for k in range(count)])
    path = write_video(tmp_path / f"short{suffix}", frames, 30, keyframe_interval=10)
    picked = [decode_index(frame.image) for frame in iter_video_frames(path, fps=25)]
    assert picked == _ffmpeg_fps_filter(path, "25")  # 4, 13, 63 frames: 2.5 s at 25 fps rounds up
    assert len(picked) == math.floor(count * 25 / 30 + 0.5)
    # seeking (Matroska keeps millisecond timestamps) gives the same frames as decoding from the start
    if count >= 45:
        seeked = [decode_index(frame.image) for frame in iter_video_frames(path, fps=25, start_seconds=0.84)]
        assert seeked == picked[21:]


@pytest.mark.parametrize("start, duration", [(1.0, 2.0), (2.37, None), (0.5, 0.3), (5.9, None)])
def test_seek_with_start_and_duration(coded_30fps, start, duration):
    full = [math.ceil((6 * n + 3) / 5) - 1 for n in range(150)]
    frames = list(iter_video_frames(coded_30fps, fps=25, start_seconds=start, duration_seconds=duration))
    first = math.ceil(start * 25 - 1e-9)
    count = 150 - first if duration is None else round(duration * 25)
    assert [decode_index(frame.image) for frame in frames] == full[first:first + count]
    assert frames[0].time == pytest.approx(first / 25) and frames[0].index == 0
    native = list(iter_video_frames(coded_30fps, start_seconds=start, duration_seconds=duration))
    first = math.ceil(start * 30 - 1e-9)
    count = 180 - first if duration is None else math.ceil((start + duration) * 30 - 1e-9) - first
    assert [decode_index(frame.image) for frame in native] == list(range(first, first + count))


def _fixed(value: float) -> int:
    return int(value * 65536)


@pytest.mark.parametrize("name, matrix", [
    # ISO BMFF tkhd matrix (a, b, u, c, d, v, x, y, w): a source pixel (p, q) is displayed at
    # (a p + c q + x, b p + d q + y); frames are 32 x 16, so x / y shift by the width or height
    ("clockwise", (0, _fixed(1), 0, _fixed(-1), 0, 0, _fixed(16), 0, 1 << 30)),
    ("anticlockwise", (0, _fixed(-1), 0, _fixed(1), 0, 0, 0, _fixed(32), 1 << 30)),
    ("half turn", (_fixed(-1), 0, 0, 0, _fixed(-1), 0, _fixed(32), _fixed(16), 1 << 30)),
])
def test_rotation_stored_by_phones_is_applied(tmp_path, name, matrix):
    frames = np.zeros((2, 16, 32, 3), np.uint8)
    frames[:, :, :8] = 250  # white band on the left
    frames[:, :4, 8:] = 120  # grey strip along the top
    path = write_video(tmp_path / "upright.mp4", frames, 25, crf=0)
    data = bytearray(path.read_bytes())
    tkhd = data.find(b"tkhd")
    assert data[tkhd + 4] == 0  # version 0: the matrix sits 40 bytes after the box type
    data[tkhd + 44:tkhd + 80] = struct.pack(">9i", *matrix)
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    a, b, _, c, d, _, x, y, _ = (v / 65536 for v in matrix)
    image = read_video(rotated).frames[0].numpy()[..., 0].astype(int)
    info = probe_video(rotated)
    assert (info.width, info.height) == (image.shape[1], image.shape[0])
    # where the matrix sends the centres of the white band and of the grey strip
    for (p, q), level in (((3.5, 10.0), 250), ((20.0, 1.5), 120)):
        column, row = a * (p + 0.5) + c * (q + 0.5) + x, b * (p + 0.5) + d * (q + 0.5) + y
        assert abs(image[int(row), int(column)] - level) <= 4, (name, row, column)


def test_max_size_scales_down_keeping_aspect(tmp_path):
    """64 x 48 grey frames of one-pixel stripes at max_size 32: halved (aspect kept), and the area filter gives
    the 2 x 2 box mean of the full-size decoded frame (float64 here), not one of the stripes as a nearest or
    point sampler would."""
    stripes = np.full((2, 48, 64, 3), 60, np.uint8)
    stripes[:, :, 1::2] = 200
    stripes[:, 24:] = 255 - stripes[:, 24:]  # the lower half inverted: 2 x 2 means stay 130, the halves differ
    path = write_video(tmp_path / "stripes.mp4", stripes, 25, crf=0)
    for full, small in zip(iter_video_frames(path), iter_video_frames(path, max_size=32), strict=True):
        assert small.image.shape == (24, 32, 3) and small.index == full.index
        box_mean = full.image.astype(np.float64).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(full.image.astype(np.float64)[:, 1:] - full.image[:, :-1]).mean() > 100  # stripes survive
        assert np.abs(small.image - box_mean).max() <= 3, full.index


def test_streaming_memory_is_flat_in_video_length(tmp_path):
    import tracemalloc

    frames = np.repeat(smooth_frames(1, 64, 64), 600, axis=0)  # 24 s at 25 fps, 7 MB of RGB
    audio = np.zeros((1, 24 * 16000), np.float32)
    path = write_video(tmp_path / "long.mp4", frames, 25, audio=audio, sample_rate=16000, preset="ultrafast")
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_video_frames(path, fps=30))
        samples = sum(block.shape[1] for block in iter_audio_blocks(path, sample_rate=8000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 720 and samples == 24 * 8000
    assert peak < 1_000_000, peak  # a few frames and audio blocks, not the 8.8 MB of frames


def test_audio_blocks_are_aligned_and_resampled(tmp_path):
    rate = 44100
    audio = np.zeros((2, 2 * rate), np.float32)
    clicks = (0.5, 1.0, 1.5)
    for at in clicks:
        start = int(at * rate)
        audio[0, start:start + 64] = 0.8 * np.hanning(64)
        audio[1, start:start + 64] = 0.4 * np.hanning(64)
    path = write_video(tmp_path / "c.mp4", np.zeros((50, 16, 16, 3), np.uint8), 25, audio=audio,
                       sample_rate=rate)
    for out_rate in (16000, 44100):
        for start_seconds in (0.0, 0.3, 1.2345):
            blocks = list(iter_audio_blocks(path, sample_rate=out_rate, mono=True, start_seconds=start_seconds))
            assert all(block.dtype == np.float32 and block.shape[0] == 1 for block in blocks)
            samples = np.concatenate(blocks, axis=1)[0]
            assert samples.shape[0] == pytest.approx((2.0 - start_seconds) * out_rate, abs=1)
            for at in clicks:
                centre = (at - start_seconds + 32 / rate) * out_rate  # the Hann bump's peak
                if centre < 0:
                    continue
                window = int(0.01 * out_rate)
                low = max(0, int(centre) - window)
                peak = low + np.argmax(np.abs(samples[low:int(centre) + window]))
                assert abs(peak - centre) <= 2, (out_rate, start_seconds, at, peak - centre)
                # mono is the mean of the channels: (0.8 + 0.4) / 2 at the peak
                assert samples[peak] == pytest.approx(0.6, abs=0.08)
    limited = np.concatenate(list(iter_audio_blocks(path, sample_rate=16000, duration_seconds=0.5)), axis=1)
    assert limited.shape == (2, 8000)


def test_errors_name_the_problem(tmp_path, coded_30fps):
    with pytest.raises(ValueError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="is a folder"):
        read_video(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match="not a video, or it is damaged"):
        read_video(tmp_path / "notes.mp4")
    with av.open(str(tmp_path / "tone.wav"), "w") as container:  # an audio-only file
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(ValueError, match="no video stream"):
        read_video(tmp_path / "tone.wav")
    with av.open(str(tmp_path / "zero.mkv"), "w") as container:  # a video stream without frames, and sound
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        sound = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*sound.encode(frame), *sound.encode(None), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(ValueError, match="no frame that decodes"):
        read_video(tmp_path / "zero.mkv")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(coded_30fps.read_bytes()[:4000])
    with pytest.raises(ValueError, match="damaged or truncated"):
        read_video(truncated)
    with pytest.raises(ValueError, match="past the end"):
        list(iter_video_frames(coded_30fps, start_seconds=60.0))
    with pytest.raises(ValueError, match="no audio stream"):
        list(iter_audio_blocks(coded_30fps))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "empty.mp4", "notes.mp4", "tone.wav",
                                                          "zero.mkv"]
