"""Audio encoders: loading tiny random wav2vec2/HuBERT models the ways users do (transformers folder,
single prefixed .safetensors, hub id in models_dir / the HF cache), Hallo's computation re-done
with the transformers model's own submodules, chunking, dtypes, errors, the SINGER_AUDIO_FEATURES
file, and the Wav2Lip mel front end against a float64 numpy reference."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from singer_core.audio.encoder_loading import (
    download_audio_encoder,
    infer_encoder_config,
    load_audio_encoder,
)
from singer_core.audio.encoders import KNOWN_AUDIO_ENCODERS, AudioEncoder, MelEncoder
from singer_core.audio.features import SingerAudioFeatures
from singer_core.audio.frames import frame_windows
from singer_core.audio.io import resample

transformers = pytest.importorskip("transformers")

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    vocab_size=12,
)


def _wav2vec2(seed=0):
    torch.manual_seed(seed)
    return transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**TINY)).eval()


def _hubert(seed=1):
    torch.manual_seed(seed)
    config = transformers.HubertConfig(
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, **TINY
    )
    return transformers.HubertModel(config).eval()


def _song(seconds, seed=0, sample_rate=16000):
    """Noise with a slow envelope (a stand-in for singing that is cheap to make)."""
    generator = torch.Generator().manual_seed(seed)
    n = round(seconds * sample_rate)
    t = torch.arange(n) / sample_rate
    return 0.3 * torch.randn(n, generator=generator) * (0.6 + 0.4 * torch.sin(2 * math.pi * 1.3 * t))


def _published_file(state, prefix):
    """State dict as published checkpoints key it: prefixed, weight norm as weight_g / weight_v."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        renamed[key if key.startswith(("lm_head.", prefix)) else prefix + key] = value.contiguous()
    return renamed


@pytest.fixture(scope="module")
def wav2vec2_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("wav2vec2")
    model = _wav2vec2()
    folder = root / "wav2vec2-tiny"
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    single = root / "wav2vec2_tiny.safetensors"
    save_file(_published_file(model.state_dict(), "wav2vec2."), str(single))
    return model.wav2vec2, folder, single


@pytest.fixture(scope="module")
def hubert_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubert")
    model = _hubert()
    folder = root / "hubert-tiny"
    model.save_pretrained(folder)
    single = root / "hubert_tiny.safetensors"
    save_file(_published_file(model.state_dict(), "hubert."), str(single))
    return model, folder, single


@pytest.fixture(scope="module")
def encoder(wav2vec2_sources):
    return load_audio_encoder(wav2vec2_sources[1])


def _hallo_reference(model, waveform, fps=25, clip=0, dtype=torch.float32):
    """Hallo's audio path written out with transformers' own pieces: Wav2Vec2FeatureExtractor
    normalisation, seq_len = ceil(len / 16000 * fps) (exact), zero padding to the clip length,
    feature_extractor -> F.interpolate(align_corners=True) -> feature_projection -> encoder,
    hidden_states[1:] stacked -> (F, L, D)."""
    normalized = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(
        waveform.double().numpy(), sampling_rate=16000
    ).input_values[0]
    if dtype != torch.float32:  # the extractor normalises in float32; redo it in float64
        x = waveform.double()
        normalized = ((x - x.mean()) / torch.sqrt(x.var(correction=0) + 1e-7)).numpy()
    values = torch.tensor(np.asarray(normalized), dtype=dtype)
    frames = math.ceil(Fraction(values.shape[0], 16000) * fps)
    if clip and frames % clip:
        values = F.pad(values, (0, (clip - frames % clip) * (16000 // fps)))
        frames += clip - frames % clip
    model = model.to(dtype)
    with torch.no_grad():
        cnn = model.feature_extractor(values[None])
        cnn = F.interpolate(
            cnn.to(torch.promote_types(dtype, torch.float32)), size=frames, mode="linear", align_corners=True
        ).transpose(1, 2)
        # Hallo calls the encoder on the interpolated CNN features; here transformers' own top-level forward
        # does it, with the feature extractor's output replaced by the interpolated one.
        hook = model.feature_extractor.register_forward_hook(lambda *_: cnn.to(dtype).transpose(1, 2))
        try:
            output = model(values[None], output_hidden_states=True)
        finally:
            hook.remove()
    model.float()
    return torch.stack(_layer_states(output), dim=1)[0].transpose(0, 1)


def _layer_states(output) -> list[torch.Tensor]:
    """Layers 1..L as transformers 4.x reported them (Hallo's and ER-NeRF's features): every layer's output,
    the last one after the encoder's final LayerNorm. transformers 5 reports the last layer before that norm
    (stable-layer-norm models); its ``last_hidden_state`` is still the normed one."""
    return [*output.hidden_states[1:-1], output.last_hidden_state]


def _after_reference(model, waveform, frames, layers="all"):
    values = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(
        waveform.numpy(), sampling_rate=16000
    ).input_values[0]
    with torch.no_grad():
        output = model(torch.tensor(np.asarray(values))[None], output_hidden_states=True)
    states = torch.stack(_layer_states(output), dim=1)[0] if layers == "all" else output.last_hidden_state
    states = states.reshape(-1, *states.shape[-2:])  # (R, n, D)
    return F.interpolate(states.transpose(1, 2), size=frames, mode="linear", align_corners=True).permute(
        2, 0, 1
    )


# ---- loading ------------------------------------------------------------------------------------
def test_folder_and_single_file_load_the_same_model(wav2vec2_sources, encoder):
    model, folder, single = wav2vec2_sources
    from_file = load_audio_encoder(single, num_attention_heads=2)
    assert encoder.kind == from_file.kind == "wav2vec2"
    assert encoder.name == "wav2vec2-tiny" and from_file.name == "wav2vec2_tiny.safetensors"
    for key, value in model.state_dict().items():
        assert torch.equal(encoder.model.state_dict()[key], value), key
        assert torch.equal(from_file.model.state_dict()[key], value), key
    song = _song(1.5)
    a, b = encoder.encode(song, 16000, 25), from_file.encode(song, 16000, 25)
    assert a.features.shape == (38, 2, 32) and torch.equal(a.features, b.features)


def test_hubert_folder_and_single_file(hubert_sources):
    model, folder, single = hubert_sources
    from_folder = load_audio_encoder(folder)
    from_file = load_audio_encoder(single, num_attention_heads=2)
    assert from_folder.kind == from_file.kind == "hubert"
    assert from_file.model.config.feat_extract_norm == "layer" and from_file.model.config.do_stable_layer_norm
    song = _song(1.0, seed=3)
    a = from_folder.encode(song, 16000, 25, layers="last", interpolate="after", steps_per_frame=2)
    b = from_file.encode(song, 16000, 25, layers="last", interpolate="after", steps_per_frame=2)
    assert a.rows == "steps" and a.features.shape == (25, 2, 32) and torch.equal(a.features, b.features)


def test_config_inference_reads_the_published_conventions(wav2vec2_sources):
    shapes = {
        key[len("wav2vec2.") :]: tuple(v.shape)
        for key, v in _published_file(wav2vec2_sources[0].state_dict(), "wav2vec2.").items()
    }
    config = infer_encoder_config(shapes, "wav2vec2", num_attention_heads=2)
    reference = transformers.Wav2Vec2Config(**TINY)
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "conv_dim",
        "conv_kernel",
        "conv_stride",
        "conv_bias",
        "feat_extract_norm",
        "do_stable_layer_norm",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
    ):
        assert list(np.atleast_1d(getattr(config, field))) == list(
            np.atleast_1d(getattr(reference, field))
        ), field
    with pytest.raises(ValueError, match="num_attention_heads"):
        infer_encoder_config(shapes, "wav2vec2")  # hidden 32 is not 64 x heads


def test_hidden_size_multiple_of_64_needs_no_head_count(tmp_path):
    torch.manual_seed(5)
    model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**{**TINY, "hidden_size": 128})).eval()
    path = tmp_path / "w.safetensors"
    save_file(_published_file(model.state_dict(), "wav2vec2."), str(path))
    loaded = load_audio_encoder(path)
    assert loaded.model.config.num_attention_heads == 2
    song = _song(0.8)
    reference = AudioEncoder(model, kind="wav2vec2", name="x").encode(song, 16000, 25)
    assert torch.equal(loaded.encode(song, 16000, 25).features, reference.features)


def test_single_file_variants(wav2vec2_sources, tmp_path):
    """No prefix with transformers' own parametrization names; weight norm folded into the
    positional conv weight; a weights-only .bin file."""
    model = wav2vec2_sources[0]
    song = _song(0.7, seed=13)
    reference = AudioEncoder(model, kind="wav2vec2", name="x").encode(song, 16000, 25).features
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    assert torch.equal(
        load_audio_encoder(plain, num_attention_heads=2).encode(song, 16000, 25).features, reference
    )
    folded = {k: v for k, v in model.state_dict().items() if "pos_conv_embed.conv.parametrizations" not in k}
    folded["encoder.pos_conv_embed.conv.weight"] = model.encoder.pos_conv_embed.conv.weight.detach().clone()
    save_file(folded, str(tmp_path / "folded.safetensors"))
    loaded = load_audio_encoder(tmp_path / "folded.safetensors", num_attention_heads=2)
    torch.testing.assert_close(loaded.encode(song, 16000, 25).features, reference, rtol=1e-5, atol=1e-5)
    torch.save(_published_file(model.state_dict(), "wav2vec2."), tmp_path / "model.bin")
    from_bin = load_audio_encoder(tmp_path / "model.bin", num_attention_heads=2)
    assert torch.equal(from_bin.encode(song, 16000, 25).features, reference)


def test_hub_id_resolves_in_models_dir_and_hf_cache(wav2vec2_sources, tmp_path):
    _, folder, _ = wav2vec2_sources
    import shutil

    models_dir = tmp_path / "models"
    shutil.copytree(folder, models_dir / "wav2vec2-base-960h")
    loaded = load_audio_encoder("facebook/wav2vec2-base-960h", models_dir=models_dir)
    assert loaded.name == "facebook/wav2vec2-base-960h" and loaded.num_layers == 2
    cache = tmp_path / "hf-cache"
    repo = cache / "models--facebook--wav2vec2-base-960h"
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    cached = load_audio_encoder("facebook/wav2vec2-base-960h", cache_dir=cache)  # no models_dir
    assert cached.name == "facebook/wav2vec2-base-960h" and cached.kind == "wav2vec2"


def test_missing_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_audio_encoder("facebook/wav2vec2-base-960h", models_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert (
        f"huggingface-cli download facebook/wav2vec2-base-960h --local-dir {tmp_path / 'wav2vec2-base-960h'}"
        in message
    )
    with pytest.raises(FileNotFoundError, match="known encoders"):
        load_audio_encoder("no-such-encoder", models_dir=tmp_path)


def test_broken_sources_give_clear_errors(wav2vec2_sources, tmp_path):
    model, folder, single = wav2vec2_sources
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(single.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated"):
        load_audio_encoder(truncated, num_attention_heads=2)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="no config.json"):
        load_audio_encoder(no_config)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_audio_encoder(no_weights)
    with pytest.raises(ValueError, match="kind='hubert'"):
        load_audio_encoder(folder, kind="hubert")
    with pytest.raises(ValueError, match="wav2vec2 checkpoint"):
        load_audio_encoder(single, kind="hubert", num_attention_heads=2)
    with pytest.raises(ValueError, match="kind must be"):
        load_audio_encoder(folder, kind="whisper")
    state = _published_file(model.state_dict(), "wav2vec2.")
    extra = tmp_path / "extra.safetensors"
    save_file({**state, "wav2vec2.encoder.extra.weight": torch.zeros(3)}, str(extra))
    with pytest.raises(ValueError, match="unexpected.*wav2vec2.encoder.extra.weight"):
        load_audio_encoder(extra, num_attention_heads=2)
    lacking = tmp_path / "lacking.safetensors"
    save_file({k: v for k, v in state.items() if "layers.1.final_layer_norm.bias" not in k}, str(lacking))
    with pytest.raises(ValueError, match="missing.*encoder.layers.1.final_layer_norm.bias"):
        load_audio_encoder(lacking, num_attention_heads=2)
    foreign = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(foreign))
    with pytest.raises(ValueError, match="not a wav2vec2/HuBERT encoder"):
        load_audio_encoder(foreign)


def test_download_refuses_bad_ids_and_reports_offline_failure(tmp_path, monkeypatch):
    for bad in ("wav2vec2", "a/b/c", "../etc", "facebook/..", "", "facebook/wav 2vec"):
        with pytest.raises(ValueError, match="not a Hugging Face model id"):
            download_audio_encoder(bad, tmp_path)
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        RuntimeError, match="huggingface-cli download facebook/wav2vec2-base-960h --local-dir"
    ):
        download_audio_encoder("facebook/wav2vec2-base-960h", tmp_path)
    with pytest.raises(RuntimeError, match="could not download"):
        load_audio_encoder(
            "facebook/wav2vec2-base-960h",
            models_dir=tmp_path,
            cache_dir=tmp_path / "c",
            local_files_only=False,
        )


def test_registry_and_mel_source():
    assert KNOWN_AUDIO_ENCODERS["facebook/wav2vec2-base-960h"].rows == 12
    assert KNOWN_AUDIO_ENCODERS["facebook/hubert-large-ls960-ft"].width == 1024
    assert isinstance(load_audio_encoder("mel-80"), MelEncoder)


# ---- Hallo's computation --------------------------------------------------------------------------
def test_hallo_mode_equals_transformers_recomputation(wav2vec2_sources, encoder):
    model = wav2vec2_sources[0]
    song = _song(3.1, seed=2)[: 48000 + 123]
    ours = encoder.encode(song, 16000, 25)
    reference = _hallo_reference(model, song)
    assert ours.features.shape == reference.shape == (76, 2, 32)
    # float32: the position rounding inside F.interpolate and the float32 normalisation differ slightly
    torch.testing.assert_close(ours.features, reference, rtol=1e-4, atol=1e-4)
    exact = load_audio_encoder(wav2vec2_sources[1], dtype=torch.float64).encode(song.double(), 16000, 25)
    torch.testing.assert_close(
        exact.features, _hallo_reference(model, song, dtype=torch.float64), rtol=0, atol=1e-10
    )


def test_hallo_padding_to_clip_length(wav2vec2_sources, encoder):
    song = _song(1.3, seed=4)
    ours = encoder.encode(song, 16000, 25, pad_frames_to_multiple=16)
    reference = _hallo_reference(wav2vec2_sources[0], song, clip=16)
    assert ours.frames == 48 and ours.num_samples == song.shape[0] + (48 - 33) * 640
    torch.testing.assert_close(ours.features, reference, rtol=1e-4, atol=1e-4)


def test_after_mode_and_last_layer(wav2vec2_sources, encoder):
    model = wav2vec2_sources[0]
    song = _song(2.0, seed=5)
    after = encoder.encode(song, 16000, 30, interpolate="after")
    torch.testing.assert_close(after.features, _after_reference(model, song, 60), rtol=1e-4, atol=1e-4)
    last = encoder.encode(song, 16000, 30, interpolate="after", layers="last")
    torch.testing.assert_close(last.features, after.features[:, -1:], rtol=0, atol=0)


def test_hubert_steps_layout(hubert_sources):
    model, folder, _ = hubert_sources
    song = _song(2.0, seed=6)
    steps = load_audio_encoder(folder).encode(
        song, 16000, 25, layers="last", interpolate="after", steps_per_frame=2
    )
    reference = _after_reference(model, song, 100, layers="last")  # 2 steps for each of 50 frames
    assert steps.features.shape == (50, 2, 32) and steps.rows == "steps"
    torch.testing.assert_close(steps.features, reference.reshape(50, 2, 32), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 50, 60])
def test_frame_counts_for_many_durations(encoder, fps):
    song = _song(1.05, seed=7)
    for num_samples in (400, 401, 639, 640, 641, 6400, 12345, 16799):
        features = encoder.encode(song[:num_samples], 16000, fps, layers="last", chunk_seconds=0.3)
        numerator, denominator = {29.97: (2997, 100)}.get(fps, (fps, 1))
        assert features.frames == -(-num_samples * numerator // (16000 * denominator)), (num_samples, fps)
        assert features.fps == pytest.approx(fps)


def _local_copy(model):
    """The model with attention values and positional conv zeroed: every output frame then depends
    only on its own CNN frames, so chunking must be exact, not just close."""
    local = type(model)(model.config).eval()
    local.load_state_dict(model.state_dict())
    with torch.no_grad():
        local.encoder.pos_conv_embed.conv.parametrizations.weight.original0.zero_()
        for layer in local.encoder.layers:
            layer.attention.v_proj.weight.zero_()
            layer.attention.v_proj.bias.zero_()
    return local


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
@pytest.mark.parametrize("interpolate", ["hallo", "after"])
def test_chunk_bookkeeping_is_exact_for_a_local_model(wav2vec2_sources, hubert_sources, kind, interpolate):
    model = _local_copy(wav2vec2_sources[0] if kind == "wav2vec2" else hubert_sources[0])
    local = AudioEncoder(model, kind=kind, name="local")
    song = _song(12.3, seed=8)
    whole = local.encode(song, 16000, 29.97, interpolate=interpolate, chunk_seconds=math.inf)
    chunked = local.encode(
        song, 16000, 29.97, interpolate=interpolate, chunk_seconds=1.0, context_seconds=0.0
    )
    # the GroupNorm statistics are summed in a different order: float32 rounding only
    torch.testing.assert_close(chunked.features, whole.features, rtol=1e-5, atol=1e-5)


def test_chunked_long_audio_stays_close(wav2vec2_sources, encoder):
    """The real (global-attention) tiny model: short audio in one chunk equals the reference above;
    long audio in 4-second chunks with 2 s of context stays close. Measured relative RMS error
    against the unchunked run, 20 s song: 8.8e-4 with 2 s context (max abs 3.0e-3 on values of RMS
    ~0.9), 5.3e-2 without context; bound 3e-3 and 10x."""
    song = _song(20.0, seed=9)
    reference = _hallo_reference(wav2vec2_sources[0], song)
    calls = []
    chunked = encoder.encode(
        song,
        16000,
        25,
        chunk_seconds=4.0,
        context_seconds=2.0,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 5) for i in range(1, 6)]
    error = float((chunked.features - reference).norm() / reference.norm())
    assert error < 3e-3, error
    no_context = encoder.encode(song, 16000, 25, chunk_seconds=4.0, context_seconds=0.0)
    assert float((no_context.features - reference).norm() / reference.norm()) > 10 * error  # context helps


def test_progress_can_stop_the_encoder(encoder):
    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encoder.encode(_song(3.0), 16000, 25, chunk_seconds=1.0, progress=stop)


def test_dtypes(wav2vec2_sources, encoder):
    model, folder, _ = wav2vec2_sources
    song = _song(2.0, seed=10)
    reference = encoder.encode(song, 16000, 25).features
    double = load_audio_encoder(folder, dtype=torch.float64).encode(song, 16000, 25)
    assert double.features.dtype == torch.float64
    torch.testing.assert_close(double.features.float(), reference, rtol=1e-4, atol=1e-4)
    # bfloat16: this random tiny model loses a lot in bfloat16 (about 30 % relative error against
    # float32, transformers' own bfloat16 run included), so compare with that run
    half = load_audio_encoder(folder, dtype=torch.bfloat16).encode(song, 16000, 25)
    assert half.features.dtype == torch.bfloat16
    transformers_half = _hallo_reference(model, song, dtype=torch.bfloat16).float()
    error = float((half.features.float() - transformers_half).norm() / transformers_half.norm())
    assert error < 1e-2, error


def test_stereo_and_resampled_input(encoder):
    song = _song(1.2, seed=11, sample_rate=48000)
    stereo = torch.stack([song, 0.5 * song])
    mono = encoder.encode(0.75 * song, 48000, 25)
    torch.testing.assert_close(
        encoder.encode(stereo, 48000, 25).features, mono.features, rtol=1e-5, atol=1e-5
    )
    at_16k = encoder.encode(resample(0.75 * song, 48000, 16000), 16000, 25)
    assert mono.frames == at_16k.frames == 30 and torch.equal(mono.features, at_16k.features)


@pytest.mark.parametrize(
    "waveform,match",
    [
        (torch.zeros(0), "empty"),
        (torch.zeros(2, 0), "empty"),
        (torch.zeros(16000), "silent"),
        (torch.full((100,), 0.1), "at least 400 samples"),
        (torch.tensor([0.1, float("nan")] * 500), "NaN"),
        (torch.ones(16000, dtype=torch.int16), "float audio"),
        (torch.zeros(1, 1, 100), "tensor"),
    ],
)
def test_bad_audio_is_refused(encoder, waveform, match):
    with pytest.raises(ValueError, match=match):
        encoder.encode(waveform, 16000, 25)


def test_silence_on_purpose_and_bad_arguments(encoder):
    silent = encoder.encode(torch.zeros(16000), 16000, 25, allow_silence=True)
    assert silent.frames == 25 and bool(torch.isfinite(silent.features).all())
    song = _song(0.5)
    for kwargs, match in [
        (dict(layers="some"), "layers"),
        (dict(interpolate="cubic"), "interpolate"),
        (dict(steps_per_frame=2), "layers='last'"),
        (dict(steps_per_frame=0), "steps_per_frame"),
        (dict(chunk_seconds=0.0), "chunk_seconds"),
        (dict(pad_frames_to_multiple=-1), "pad"),
    ]:
        with pytest.raises(ValueError, match=match):
            encoder.encode(song, 16000, 25, **kwargs)
    with pytest.raises(ValueError, match="fps"):
        encoder.encode(song, 16000, 0)


# ---- SINGER_AUDIO_FEATURES ---------------------------------------------------------------------
def test_features_round_trip_and_refusals(encoder, tmp_path):
    features = encoder.encode(_song(1.0), 16000, 29.97, pad_frames_to_multiple=4)
    for value in (features, features.to(dtype=torch.bfloat16)):
        path = value.save(tmp_path / "song.safetensors")
        loaded = SingerAudioFeatures.load(path)
        assert torch.equal(loaded.features, value.features) and loaded.metadata() == value.metadata()
    assert loaded.fps == 29.97 and loaded.rows == "layers" and loaded.encoder == "wav2vec2-tiny"
    assert [p.name for p in tmp_path.iterdir()] == ["song.safetensors"]  # no temporary left behind
    data = (tmp_path / "song.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        SingerAudioFeatures.load(tmp_path / "cut.safetensors")
    save_file({"features": torch.zeros(2, 2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not saved audio features"):
        SingerAudioFeatures.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01 not a file")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        SingerAudioFeatures.load(tmp_path / "junk.safetensors")


def test_features_views_and_validation(encoder):
    features = encoder.encode(_song(0.6), 16000, 25)
    assert torch.equal(features.windows(), frame_windows(features.features, 2))
    assert features.windows().shape == (15, 5, 2, 32)
    last = features.select_rows(-1)
    assert last.features.shape == (15, 1, 32) and torch.equal(last.features[:, 0], features.features[:, 1])
    assert features.seconds == 15 / 25 and features.audio_seconds == pytest.approx(0.6)
    assert features.to(dtype=torch.float64).features.dtype == torch.float64
    good = dict(features=torch.zeros(3, 2, 4), fps=25, encoder="x", sample_rate=16000, num_samples=1920)
    for change, match in [
        (dict(features=torch.zeros(3, 4)), "frames, rows, width"),
        (dict(features=torch.full((3, 2, 4), float("nan"))), "NaN"),
        (dict(fps=0), "fps"),
        (dict(rows="bands"), "rows"),
        (dict(encoder=""), "encoder"),
        (dict(sample_rate=0), "sample_rate"),
        (dict(features=torch.zeros(0, 2, 4)), "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            SingerAudioFeatures(**{**good, **change})
    with pytest.raises(ValueError, match="out of range"):
        features.select_rows([5])


def test_features_feed_autograd(encoder):
    """Encoding runs in inference mode, but its output is an ordinary tensor a trainer can use."""
    features = encoder.encode(_song(0.5), 16000, 25).features
    weight = torch.randn(32, 3, requires_grad=True)
    (features @ weight).sum().backward()
    # d/dW sum(F @ W) = F^T 1: every column of the gradient is the features summed over all rows
    column = features.double().reshape(-1, features.shape[-1]).sum(0)
    torch.testing.assert_close(weight.grad.double(), column[:, None].expand(-1, 3), rtol=1e-5, atol=1e-4)


# ---- Wav2Lip mel ----------------------------------------------------------------------------------
def _slaney_hz_to_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), (200.0 / 3) * mel)


def _slaney_filterbank():
    """(80, 401) triangles between Slaney-mel-spaced edges, area-normalised (2 / bandwidth)."""
    fft_hz = np.linspace(0, 8000, 401)
    edges = _slaney_mel_to_hz(np.linspace(_slaney_hz_to_mel(55.0), _slaney_hz_to_mel(7600.0), 82))
    bank = np.zeros((80, 401))
    for m in range(80):
        rising = (fft_hz - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - fft_hz) / (edges[m + 2] - edges[m + 1])
        bank[m] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (edges[m + 2] - edges[m])
    return bank


def _wav2lip_mel_reference(waveform: np.ndarray) -> np.ndarray:
    """Wav2Lip audio.melspectrogram in float64 numpy with our own DFT: (M, 80)."""
    emphasized = waveform - 0.97 * np.concatenate([[0.0], waveform[:-1]])
    padded = np.pad(emphasized, 400, mode="reflect")
    count = 1 + (len(padded) - 800) // 200
    frames = np.stack([padded[200 * m : 200 * m + 800] for m in range(count)])
    n = np.arange(800)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 800)
    angle = 2 * np.pi * np.outer(np.arange(401), n) / 800
    windowed = frames * window
    magnitude = np.hypot(windowed @ np.cos(angle).T, windowed @ np.sin(angle).T)
    decibels = 20 * np.log10(np.maximum(1e-5, magnitude @ _slaney_filterbank().T)) - 20
    return np.clip(8 * (decibels + 100) / 100 - 4, -4, 4)


def test_filterbank_matches_slaney_formula():
    """torchaudio builds the bank in float32: agreement to float32 rounding (measured 3e-6 of the peak)."""
    ours = MelEncoder(dtype=torch.float64).filterbank().T.numpy()
    reference = _slaney_filterbank()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-5 * reference.max())


@pytest.mark.parametrize("seconds,fps", [(2.37, 25), (1.0, 29.97), (0.0187, 25)])
def test_mel_front_end_matches_float64_reference(seconds, fps):
    song = _song(seconds, seed=12)
    reference_mel = _wav2lip_mel_reference(song.double().numpy())
    frames = math.ceil(Fraction(song.shape[0], 16000) * Fraction(fps).limit_denominator(1000))
    ours64 = MelEncoder(dtype=torch.float64)  # float64 except torchaudio's float32 filterbank
    torch.testing.assert_close(
        ours64.mel_spectrogram(song.double()), torch.from_numpy(reference_mel), rtol=0, atol=5e-5
    )
    # Wav2Lip's window loop on the reference mel (padded with -4 when shorter than 16 frames)
    padded = np.concatenate([reference_mel, np.full((max(0, 16 - len(reference_mel)), 80), -4.0)])
    ratio = Fraction(fps).limit_denominator(1000) / 80
    starts = [min(math.floor(i / ratio), len(padded) - 16) for i in range(frames)]
    windows = np.stack([padded[s : s + 16] for s in starts])
    encoded = ours64.encode(song.double(), 16000, fps, chunk_seconds=0.4)
    assert encoded.rows == "steps" and encoded.features.shape == (frames, 16, 80)
    torch.testing.assert_close(encoded.features, torch.from_numpy(windows), rtol=0, atol=5e-5)
    # float32 STFT: measured max error 1e-5 on the [-4, 4] scale
    encoded32 = MelEncoder().encode(song, 16000, fps)
    torch.testing.assert_close(encoded32.features.double(), torch.from_numpy(windows), rtol=0, atol=1e-4)
