"""TTS (DAMC §2.3) through transformers: tiny random SpeechT5 + HiFi-GAN and VITS saved to folders and loaded
back with load_tts (no hub access); outputs checked against the transformers models run directly."""

import io
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from singer_core.audio.encoders import MelEncoder  # noqa: E402
from singer_core.audio.tts import TtsResult, load_tts  # noqa: E402
from singer_core.io.checkpoint import save_tensors  # noqa: E402

SENTENCES = ["hello world", "the quick brown fox jumps over the lazy dog", "sing a song of sixpence"]


@pytest.fixture(scope="module")
def speecht5_folder(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("speecht5")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 10),
        model_writer=buffer,
        vocab_size=40,
        model_type="char",
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    (folder / "spm_char.model").write_bytes(buffer.getvalue())
    tokenizer = transformers.SpeechT5Tokenizer(vocab_file=str(folder / "spm_char.model"))
    config = transformers.SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=2,
        speaker_embedding_dim=8,
        num_mel_bins=80,
        reduction_factor=2,
        max_text_positions=64,
        max_speech_positions=256,
        encoder_max_relative_position=16,
        conv_dim=(8,),
        conv_stride=(5,),
        conv_kernel=(10,),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    transformers.SpeechT5ForTextToSpeech(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    vocoder = transformers.SpeechT5HifiGanConfig(
        model_in_dim=80,
        sampling_rate=16000,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
    )
    transformers.SpeechT5HifiGan(vocoder).save_pretrained(folder / "vocoder")
    return folder


@pytest.fixture(scope="module")
def vits_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vits")
    characters = list(" abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(characters)}, "<unk>": len(characters) + 1}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.VitsTokenizer(vocab_file=str(folder / "vocab.json"), phonemize=False)
    config = transformers.VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=1,
        sampling_rate=16000,
        window_size=4,
    )
    torch.manual_seed(0)
    transformers.VitsModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_speecht5_matches_transformers_run_directly(speecht5_folder):
    tts = load_tts(speecht5_folder)
    speaker = torch.linspace(-1, 1, 8)
    state = torch.get_rng_state()
    result = tts.synthesize("hello world", speaker_embedding=speaker, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert (
        isinstance(result, TtsResult) and result.sample_rate == 16000 and result.mel_kind == "speecht5-log10"
    )
    assert (
        result.waveform.dtype == torch.float32 and result.waveform.ndim == 2 and result.waveform.shape[0] == 1
    )
    assert result.mel.ndim == 2 and result.mel.shape[1] == 80 and result.mel_fps == 16000 / 16
    # reference: the transformers models loaded on their own, same seed
    model = transformers.SpeechT5ForTextToSpeech.from_pretrained(speecht5_folder).eval()
    vocoder = transformers.SpeechT5HifiGan.from_pretrained(speecht5_folder / "vocoder").eval()
    ids = transformers.SpeechT5Tokenizer.from_pretrained(speecht5_folder)("hello world", return_tensors="pt")
    with torch.no_grad():
        torch.manual_seed(3)
        mel = model.generate_speech(ids["input_ids"], speaker_embeddings=speaker[None])
        waveform = vocoder(mel)
    torch.testing.assert_close(result.mel, mel)
    torch.testing.assert_close(result.waveform[0], waveform)
    assert result.waveform.shape[1] == mel.shape[0] * 16  # vocoder hop = prod(upsample_rates)
    again = tts.synthesize("hello world", speaker_embedding=speaker, seed=3)
    assert torch.equal(again.waveform, result.waveform)


def test_speecht5_speaker_embedding_file_and_errors(speecht5_folder, tmp_path):
    save_tensors(speecht5_folder / "speaker_embedding.safetensors", {"speaker_embedding": torch.ones(8)})
    try:
        tts = load_tts(speecht5_folder)
        default = tts.synthesize("sing a song", seed=1)
        explicit = tts.synthesize("sing a song", speaker_embedding=torch.ones(1, 8), seed=1)
        assert torch.equal(default.waveform, explicit.waveform)
    finally:
        (speecht5_folder / "speaker_embedding.safetensors").unlink()
    with pytest.raises(ValueError, match="expects 8"):
        tts.synthesize("sing", speaker_embedding=torch.ones(5))
    with pytest.raises(ValueError, match="empty"):
        tts.synthesize("   ")
    with pytest.raises(ValueError, match="no characters this model can speak"):
        tts.synthesize("你好，世界")
    with pytest.raises(ValueError, match="at most 64"):
        tts.synthesize("a" * 200)
    with pytest.raises(FileNotFoundError, match="microsoft/speecht5_hifigan"):
        load_tts(speecht5_folder, vocoder="microsoft/speecht5_hifigan", cache_dir=tmp_path)


def test_vits_matches_transformers_and_mel_is_wav2lip(vits_folder):
    tts = load_tts(vits_folder)
    result = tts.synthesize("Hello, world!", seed=5)
    assert result.sample_rate == 16000 and result.mel_kind == "wav2lip-mel-80" and result.mel_fps == 80.0
    model = transformers.VitsModel.from_pretrained(vits_folder).eval()
    tokenizer = transformers.VitsTokenizer.from_pretrained(vits_folder)
    with torch.no_grad():
        torch.manual_seed(5)
        waveform = model(**tokenizer("Hello, world!", return_tensors="pt")).waveform
    torch.testing.assert_close(result.waveform, waveform)
    torch.testing.assert_close(result.mel, MelEncoder().mel_spectrogram(waveform[0]))
    assert result.mel.shape == (1 + waveform.shape[1] // 200, 80)
    with pytest.raises(ValueError, match="no characters this model can speak"):
        tts.synthesize("你好 123 !!")


def test_missing_models_name_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no folder at"):
        load_tts(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"microsoft/speecht5_tts.*huggingface-cli download"):
        load_tts("microsoft/speecht5_tts", cache_dir=tmp_path)
    other = tmp_path / "bert"
    transformers.BertConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(other)
    with pytest.raises(ValueError, match="supported TTS models"):
        load_tts(other)
