"""SINGER inference pipeline on a tiny random SingerNet + tiny VAE (CPU): frame count of the song, seeding,
clip chaining through motion frames, progress / interruption, guidance-free single forward, sliced decoding
against diffusers' own decoder, and the ArcFace embedding through OpenCV DNN against onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from singer_core.audio.features import SingerAudioFeatures
from singer_core.audio.frames import frame_count
from singer_core.diffusion import DiffusionConfig, SingerNet
from singer_core.diffusion.face_embedding import (
    ARCFACE_TEMPLATE,
    FaceEmbedder,
    align_face,
    similarity_transform,
)
from singer_core.diffusion.masks import face_masks
from singer_core.diffusion.pipeline import PipelineOptions, SingerPipeline
from singer_core.diffusion.vae import VAE_SCALE, decode_latents, encode_images, tiny_vae

transformers = pytest.importorskip("transformers")
FAST = dict(steps=2, dtype="fp32", device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def parts():
    """Tiny SingerNet with its zero-initialised layers (zero convs, face locator out, motion out) made random,
    so every path (audio, motion frames) changes the output; tiny VAE (64 px <-> 16 x 16 latents)."""
    torch.manual_seed(0)
    net = SingerNet(DiffusionConfig.tiny()).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    return net, tiny_vae(0)


@pytest.fixture(scope="module")
def clip():
    from singer_core.data.synthetic import SynthSingerConfig, generate_clip

    return generate_clip(SynthSingerConfig(clips=1, size=64, seconds=0.8, seed=3), 0)


def _features(frames: int, seed: int = 0) -> SingerAudioFeatures:
    generator = torch.Generator().manual_seed(seed)
    return SingerAudioFeatures(torch.randn(frames, 2, 8, generator=generator), fps=25, encoder="random",
                               sample_rate=16000, num_samples=frames * 640)


def _landmark_box(landmarks: torch.Tensor) -> tuple[float, float, float, float]:
    low, high = landmarks.min(0).values, landmarks.max(0).values
    return float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])


def test_end_to_end_wav2vec2_song_frame_count_seed_and_progress(parts, clip):
    from singer_core.audio.encoders import AudioEncoder

    net, vae = parts
    torch.manual_seed(1)
    config = transformers.Wav2Vec2Config(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=16, conv_dim=(8,) * 7, num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=4, vocab_size=12)
    encoder = AudioEncoder(transformers.Wav2Vec2Model(config), kind="wav2vec2", name="tiny")
    pipe = SingerPipeline.from_parts(net, vae, audio_encoder=encoder, config=PipelineOptions(**FAST))
    song = clip.song.mix
    portrait = clip.frames[0].numpy()  # uint8 (64, 64, 3)
    box = _landmark_box(clip.landmarks[0])
    calls = []
    result = pipe(portrait, song, 16000, face_box=box, landmarks=clip.landmarks[0].numpy(),
                  progress=lambda done, total: calls.append((done, total)), crop_ratio=1.5)
    expected = frame_count(song.shape[-1], 16000, 25)
    assert expected > 16  # two clips chained
    assert result.frames.shape == (expected, 64, 64, 3) and result.frames.dtype == torch.float32
    assert 0.0 <= float(result.frames.min()) and float(result.frames.max()) <= 1.0
    assert result.fps == 25.0 and result.sample_rate == 16000 and torch.equal(result.audio, song)
    clips = -(-expected // 16)
    assert calls == [(k, 2 * clips) for k in range(1, 2 * clips + 1)]
    # pixels outside the crop square are the portrait's, exactly
    x0, y0, side = int(result.face_box.x), int(result.face_box.y), int(result.face_box.w)
    outside = np.ones((64, 64), dtype=bool)
    outside[max(0, y0):y0 + side, max(0, x0):x0 + side] = False
    if outside.any():
        reference = torch.from_numpy(portrait.astype(np.float32) / 255.0)
        assert torch.equal(result.frames[:, torch.from_numpy(outside)], reference[torch.from_numpy(outside)]
                           .expand(expected, -1, -1))
    # same seed -> same video (another seed: see the guidance test)
    again = pipe(portrait, song, 16000, face_box=box, landmarks=clip.landmarks[0].numpy(), crop_ratio=1.5)
    assert torch.equal(again.frames, result.frames)


def test_clips_are_chained_by_motion_frames(parts, clip):
    """Songs that differ only in frames 0..3 give the same audio windows for clip 2 (8-frame clips: frames 8..11
    read 6..13): its output may differ only through the motion frames carried over from clip 1."""
    net, vae = parts
    pipe = SingerPipeline.from_parts(net, vae, config=PipelineOptions(**FAST, guidance=1.0))
    first = _features(12, seed=0)
    changed = first.features.clone()
    changed[:4] = torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(9))
    second = SingerAudioFeatures(changed, fps=25, encoder="random", sample_rate=16000, num_samples=12 * 640)
    portrait = clip.frames[0].numpy()
    box = _landmark_box(clip.landmarks[0])
    for motion_frames, linked in ((2, True), (0, False)):
        a = pipe(portrait, features=first, face_box=box, motion_frames=motion_frames, clip_frames=8).frames
        b = pipe(portrait, features=second, face_box=box, motion_frames=motion_frames, clip_frames=8).frames
        assert not torch.equal(a[:8], b[:8])
        assert torch.equal(a[8:], b[8:]) != linked


def test_guidance_one_runs_one_unet_call_per_step_and_interruption_leaves_nothing(parts, clip):
    net, vae = parts
    pipe = SingerPipeline.from_parts(net, vae, config=PipelineOptions(**FAST, clip_frames=8))
    features = _features(6)
    portrait = clip.frames[0].numpy()
    box = _landmark_box(clip.landmarks[0])
    batches = []
    handle = net.denoising_unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        pipe(portrait, features=features, face_box=box, guidance=1.0, steps=3)
        assert batches == [1, 1, 1]
        batches.clear()
        pipe(portrait, features=features, face_box=box, guidance=3.5, steps=3)
        assert batches == [2, 2, 2]
    finally:
        handle.remove()

    class Stop(Exception):
        pass

    def stop_at_two(done, total):
        if done == 2:
            raise Stop

    reference = pipe(portrait, features=features, face_box=box, offload=True)
    with pytest.raises(Stop):
        pipe(portrait, features=features, face_box=box, progress=stop_at_two, offload=True)
    # no hooks, banks or hidden modules left behind: the next run equals an uninterrupted one
    assert not net.reference_unet._forward_pre_hooks and not net.reference_unet._forward_hooks
    assert torch.equal(pipe(portrait, features=features, face_box=box, offload=True).frames, reference.frames)
    assert not torch.equal(pipe(portrait, features=features, face_box=box, seed=5).frames, reference.frames)
    msm_off = pipe(portrait, features=features, face_box=box, use_msm=False)
    assert net.audioembed is not None and not torch.equal(msm_off.frames, reference.frames)


def test_sliced_decoding_equals_diffusers_decoder_and_encoding_scale():
    vae = tiny_vae(1)
    latents = torch.randn(1, 4, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = decode_latents(vae, latents, slice_frames=2)
    with torch.no_grad():
        full = vae.decode(latents[0].transpose(0, 1) / VAE_SCALE).sample
    expected = (full / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert ours.shape == (5, 64, 64, 3)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(images).latent_dist.mean
    torch.testing.assert_close(encode_images(vae, images, slice_size=2), mean * 0.18215, rtol=1e-5, atol=1e-6)


def test_feature_shape_and_missing_encoder_errors(parts, clip):
    net, vae = parts
    pipe = SingerPipeline.from_parts(net, vae, config=PipelineOptions(**FAST))
    wrong = SingerAudioFeatures(torch.randn(5, 12, 768), fps=25, encoder="x", sample_rate=16000, num_samples=3200)
    with pytest.raises(ValueError, match="AudioProj takes"):
        pipe(clip.frames[0].numpy(), features=wrong, face_box=(10, 10, 40, 40))
    with pytest.raises(ValueError, match="no audio_encoder"):
        pipe(clip.frames[0].numpy(), torch.zeros(1, 16000), 16000, face_box=(10, 10, 40, 40))


def test_face_masks_follow_hallo_rectangles():
    masks = face_masks(64, 16, (16, 16, 32, 32), lip_box=(28, 44, 8, 4), locator_size=128)
    # locator: the face box expanded 1.2 about its centre (32, 32): side 38.4 crop px -> 76.8 locator px
    locator = masks.locator_image[0, 0]
    rows = locator.any(1).nonzero().flatten()
    assert masks.locator_image.shape == (1, 3, 128, 128) and int(rows.numel()) in (76, 77, 78)
    assert torch.equal(locator.sum(), torch.tensor(float(rows.numel() ** 2)))
    # full = 1 - face, face = face - lip: the three sum to one wherever the face mask exceeds the lip mask
    inside = masks.face > 0
    torch.testing.assert_close((masks.full + masks.face + masks.lip)[inside], torch.ones(int(inside.sum())))
    assert float(masks.full.min()) >= 0 and float(masks.full.max()) <= 1
    centre = masks.lip[0, 0, 11, 8]  # lip box centre (32, 46) -> latent (8, 11.5)
    assert float(centre) == pytest.approx(float(masks.lip.max()), abs=0.2)
    assert float(masks.full[0, 0, 8, 8]) < 0.2 < 0.8 < float(masks.full[0, 0, 0, 0])


def test_similarity_alignment_recovers_a_known_transform():
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    keypoints = ARCFACE_TEMPLATE @ (scale * rotation).T + shift
    matrix = similarity_transform(keypoints, ARCFACE_TEMPLATE)
    mapped = keypoints @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-9)
    np.testing.assert_allclose(matrix[:, :2], rotation.T / scale, atol=1e-12)


def _tiny_arcface(path) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(0, 0.05, (784, 6)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["data", "w", "b"], ["c"], strides=[8, 8], kernel_shape=[8, 8]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "fc"], ["embedding"])]
    graph = helper.make_graph(nodes, "tiny_arcface",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 6])],
                              initializer=[weight, bias, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, str(path))


def test_face_embedding_opencv_equals_onnx_reference(tmp_path, clip):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    path = tmp_path / "tiny_arcface.onnx"
    _tiny_arcface(path)
    image = clip.frames[0].numpy()
    landmarks = clip.landmarks[0].numpy().astype(np.float64)
    keypoints = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48],
                          landmarks[54]])
    ours = FaceEmbedder(path).embed(image, keypoints=keypoints)
    aligned = align_face(image, keypoints)
    blob = (aligned.astype(np.float64).transpose(2, 0, 1)[None] / 127.5 - 1.0).astype(np.float32)  # RGB
    (theirs,) = ReferenceEvaluator(onnx.load(str(path))).run(None, {"data": blob})
    assert ours.shape == (6,)
    np.testing.assert_allclose(ours.numpy(), theirs[0], rtol=1e-4, atol=1e-5)
    (swapped,) = ReferenceEvaluator(onnx.load(str(path))).run(None, {"data": np.ascontiguousarray(blob[:, ::-1])})
    assert not np.allclose(swapped[0], theirs[0], atol=1e-4)  # channel order matters: RGB is what we feed


def test_missing_face_model_is_a_clear_error(parts, tmp_path):
    net, vae = parts
    with pytest.raises(FileNotFoundError, match="does not exist.*glintr100"):
        SingerPipeline.from_parts(net, vae, face_model_path=tmp_path / "glintr100.onnx")


def test_face_box_from_the_user_or_the_landmarks_needs_no_detector(parts, clip, monkeypatch):
    """The demo's path (SynthSinger landmarks) and a user's box never run a detector (OpenCV 5 has no Haar
    cascade); with neither and no detector the error names the file to fetch."""
    from singer_core.face import detect, detector_files
    from singer_core.face.detector_files import NoFaceDetectorError

    net, vae = parts
    pipe = SingerPipeline.from_parts(net, vae, config=PipelineOptions(**{**FAST, "steps": 1}, guidance=1.0,
                                                                      clip_frames=4, motion_frames=0))
    features, portrait = _features(4), clip.frames[0].numpy()
    marks = clip.landmarks[0].numpy().astype(np.float64)
    real_detect = detect.detect_faces

    def no_detector(*args, **kwargs):
        raise AssertionError("a face detector ran")

    monkeypatch.setattr(detect, "detect_faces", no_detector)
    monkeypatch.setattr(detector_files, "haar_available", lambda: False)
    # 1. landmarks: the crop square is the box of points 0-26 x crop_ratio about its centre
    result = pipe(portrait, features=features, landmarks=marks, crop_ratio=1.5)
    (x0, y0), (x1, y1) = marks[:27].min(0), marks[:27].max(0)
    side = round(1.5 * max(x1 - x0, y1 - y0))
    assert result.face_box.w == result.face_box.h == side
    assert result.face_box.x == np.floor((x0 + x1) / 2 - side / 2 + 0.5)
    assert result.face_box.y == np.floor((y0 + y1) / 2 - side / 2 + 0.5)
    # 2. the user's box wins over the landmarks
    result = pipe(portrait, features=features, face_box=(10, 12, 30, 20), landmarks=marks, crop_ratio=1.0)
    assert tuple(result.face_box[:4]) == (10.0, 7.0, 30.0, 30.0)
    with pytest.raises(ValueError, match="lies outside the 64x64 image"):
        pipe(portrait, features=features, face_box=(100, 12, 30, 20))
    # 3. neither, and no detector anywhere: the error says what to fetch
    monkeypatch.setattr(detect, "detect_faces", real_detect)
    with pytest.raises(NoFaceDetectorError, match="SingerPipeline: no face detector available.*scrfd_10g_bnkps"):
        pipe(portrait, features=features)
