"""The audio nodes inside a real ComfyUI server: loading files of several codecs, refusing paths
outside the input folder, clear errors for non-audio files and missing encoders, a tiny local
wav2vec2 in models/audio_encoders, and Cancel during a long separation (needs COMFYUI_PATH)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.comfyui





def _load_prompt(name: str, **overrides) -> dict:
    inputs = {"audio": name, "sample_rate": "16000", "mono": True, "start_seconds": 0.0,
              "duration_seconds": 0.0, "normalize": "loudness -23 LUFS"} | overrides
    return {
        "1": {"class_type": "SingerLoadAudio", "inputs": inputs},
        "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}},
    }


def _encode_prompt(loader_inputs: dict, seconds: float, seed: int) -> dict:
    """Encoder loader + synthetic song -> Encode Audio -> sub-bands of the features -> preview."""
    return {
        "1": {"class_type": "SingerAudioEncoderLoader", "inputs": loader_inputs},
        "2": {"class_type": "SingerSynthSong",
              "inputs": {"seconds": seconds, "seed": seed, "style": "singing", "tempo_bpm": 96.0, "backing": False,
                         "backing_db": -6.0, "stereo": False, "sample_rate": "16000"}},
        "3": {"class_type": "SingerAudioEncode",
              "inputs": {"encoder": ["1", 0], "audio": ["2", 0], "fps": 25.0, "layers": "all",
                         "interpolation": "hallo", "steps_per_frame": 1, "chunk_seconds": 30.0}},
        "4": {"class_type": "SingerWaveletSubbands",
              "inputs": {"audio": ["3", 0], "levels": 2, "n_mels": 80, "normalize": "band", "colormap": "viridis",
                         "band_order": "pywt", "mode": "symmetric", "cell_height": 64, "feature_row": -1}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


def _post(comfy_server, prompt: dict):
    import requests

    return requests.post(comfy_server.base_url + "/prompt",
                         json={"prompt": prompt, "client_id": comfy_server.client_id}, timeout=10)


@pytest.mark.parametrize("suffix", [".flac", ".mp3", ".ogg", ".m4a"])
def test_load_song_decodes_common_codecs(comfy_server, suffix):
    from singer_core.audio.encode import write_audio
    from singer_core.audio.synth import sing

    song = sing(2.0, seed=3, sample_rate=44100)
    name = f"singer_codec_test{suffix}"
    write_audio(comfy_server.base_dir / "input" / name, song.waveform[None].repeat(2, 1), song.sample_rate)

    entry = comfy_server.run_prompt(_load_prompt(name))

    comfy_server.assert_success(entry)
    assert entry["outputs"]["2"]["audio"], "PreviewAudio saved nothing"


def test_load_song_refuses_paths_outside_the_input_folder(comfy_server):
    response = _post(comfy_server, _load_prompt("../../../../etc/passwd"))

    assert response.status_code == 400, response.text
    assert "outside ComfyUI's input folder" in response.text


def test_load_song_says_when_a_file_is_not_audio(comfy_server):
    (comfy_server.base_dir / "input" / "singer_not_audio.wav").write_bytes(b"this is a text file, not a song\n" * 20)

    entry = comfy_server.run_prompt(_load_prompt("singer_not_audio.wav"))

    error = comfy_server.execution_error(entry)
    assert error is not None and error["node_type"] == "SingerLoadAudio", entry["status"]
    assert "singer_not_audio.wav" in error["exception_message"]


def test_encoder_loader_offline_error_says_what_to_place_where(comfy_server):
    loader = {"encoder": "facebook/wav2vec2-base-960h", "allow_download": False, "dtype": "auto", "device": "auto"}
    prompt = _encode_prompt(loader, seconds=2.0, seed=0)
    entry = comfy_server.run_prompt(prompt)

    error = comfy_server.execution_error(entry)
    assert error is not None and error["node_type"] == "SingerAudioEncoderLoader", entry["status"]
    message = error["exception_message"]
    assert "hf download facebook/wav2vec2-base-960h" in message, message
    assert "audio_encoders" in message, message


def test_local_tiny_wav2vec2_encodes_a_song(comfy_server):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16, 16), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=32)
    folder = comfy_server.base_dir / "models" / "audio_encoders" / "tiny-wav2vec2"
    transformers.Wav2Vec2Model(config).save_pretrained(folder)

    loader = {"encoder": "tiny-wav2vec2/", "allow_download": False, "dtype": "float32", "device": "cpu"}
    prompt = _encode_prompt(loader, seconds=3.0, seed=1)
    entry = comfy_server.run_prompt(prompt)

    comfy_server.assert_success(entry)
    assert entry["outputs"]["5"]["images"]


def test_cancel_stops_a_long_separation(comfy_server):
    import requests

    prompt = {
        "1": {"class_type": "SingerSynthSong",
              "inputs": {"seconds": 600.0, "seed": 2, "style": "singing", "tempo_bpm": 96.0, "backing": True,
                         "backing_db": -6.0, "stereo": True, "sample_rate": "44100"}},
        "2": {"class_type": "SingerIsolateVocals",
              "inputs": {"audio": ["1", 0], "method": "dsp (built-in, no weights)", "denoise": False}},
        "3": {"class_type": "PreviewAudio", "inputs": {"audio": ["2", 0]}},
    }
    prompt_id = comfy_server.queue_prompt(prompt)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it runs
        running = requests.get(comfy_server.base_url + "/queue", timeout=10).json()["queue_running"]
        if any(item[1] == prompt_id for item in running):
            break
        time.sleep(0.1)
    time.sleep(2.0)
    sent = time.monotonic()
    requests.post(comfy_server.base_url + "/interrupt", timeout=10)

    entry = comfy_server.wait_for_history(prompt_id, timeout_s=120)

    waited = time.monotonic() - sent
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, entry["status"]
    assert waited < 30, f"the prompt took {waited:.1f} s to stop after Cancel"
