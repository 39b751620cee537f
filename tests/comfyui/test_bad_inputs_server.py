"""Bad inputs through a real ComfyUI server (issue 8 part 6, the representative subset of
tests/test_bad_inputs.py): every prompt fails in our node with a message naming the problem and the fix in
``execution_error``, leaves no partial file in output/ or models/, and afterwards the server still answers
/system_stats and runs a good prompt (needs COMFYUI_PATH)."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.toy_models import save_tiny_motion_model

pytestmark = pytest.mark.comfyui

TINY_MOTION_MODEL = "motion-demo"  # trained by conftest into its demo folder (SINGER_DEMO_MODELS)


def _tone(seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * 220.0 * t)).float()[None]


def _load(name: str, node: str = "1") -> dict:
    return {node: {"class_type": "SingerLoadAudio",
                   "inputs": {"audio": name, "sample_rate": "original", "mono": True, "start_seconds": 0.0,
                              "duration_seconds": 0.0, "normalize": "none"}}}


def _load_prompt(name: str) -> dict:
    return _load(name) | {"2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}}}


def _mel_encode(audio_link: list, fps: float = 25.0) -> dict:
    return {
        "10": {"class_type": "SingerAudioEncoderLoader",
               "inputs": {"encoder": "mel-80 (built-in, no weights)", "allow_download": False, "dtype": "float32",
                          "device": "cpu"}},
        "11": {"class_type": "SingerAudioEncode",
               "inputs": {"encoder": ["10", 0], "audio": audio_link, "fps": fps, "layers": "all",
                          "interpolation": "hallo", "steps_per_frame": 1, "chunk_seconds": 30.0}},
    }


def _synth_song(seconds: float, node: str = "20") -> dict:
    return {node: {"class_type": "SingerSynthSong",
                   "inputs": {"seconds": seconds, "seed": 0, "style": "singing", "tempo_bpm": 96.0, "backing": False,
                              "backing_db": -6.0, "stereo": False, "sample_rate": "16000"}}}


def _face_crop(image_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "SingerFaceCrop", "inputs": {"image": ["1", 0], "expand_ratio": 1.2, "size": 256}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def _motion_loader(model: str) -> dict:
    return {"30": {"class_type": "SingerMotionLoader", "inputs": {"model": model, "device": "cpu"}}}


def _sample(features_link: list) -> dict:
    return {"31": {"class_type": "SingerSampleMotion",
                   "inputs": {"motion_model": ["30", 0], "features": features_link, "steps": 2, "eta": 0.0,
                              "seed": 0, "pose_scale": 1.0, "expression_scale": 1.0}}}


def _render(motion_link: list, audio_link: list | None) -> dict:
    inputs = {"motion": motion_link, "size": 64, "identity_seed": 0}
    if audio_link is not None:
        inputs["audio"] = audio_link
    return {"40": {"class_type": "SingerRenderMotion", "inputs": inputs},
            "41": {"class_type": "PreviewImage", "inputs": {"images": ["40", 0]}}}


def _png(path: Path, image: np.ndarray) -> None:
    import cv2

    cv2.imwrite(str(path), image[..., ::-1] if image.ndim == 3 else image)


@pytest.fixture(scope="module")
def bad_files(comfy_server) -> Path:
    """The bad inputs, written into the server's input/ and models/ folders (found at request time)."""
    from singer_core.audio.encode import write_audio
    from singer_core.motion.lip_expert import LipExpert, LipExpertConfig

    base = comfy_server.base_dir
    inputs = base / "input"
    (inputs / "bad_empty.wav").write_bytes(b"")
    (inputs / "bad_corrupt.mp3").write_bytes(b"ID3 this is not an mp3 at all\n" * 40)
    full = write_audio(inputs / "bad_full.wav", _tone(2.0, 16000), 16000)
    (inputs / "bad_truncated.wav").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    nan = write_audio(inputs / "bad_nan.wav", _tone(1.0, 16000), 16000, codec="pcm_f32le")
    data = bytearray(nan.read_bytes())
    data[len(data) - 4 * 4000:len(data) - 4 * 3999] = struct.pack("<f", float("nan"))
    nan.write_bytes(bytes(data))
    write_audio(inputs / "bad_silent.wav", torch.zeros(1, 16000), 16000)
    _png(inputs / "bad_cover.png", np.full((32, 32, 3), 200, np.uint8))
    shutil.copy(inputs / "bad_cover.png", inputs / "bad_cover.wav")
    _png(inputs / "bad_no_face.png", np.full((256, 256, 3), 128, np.uint8))
    _png(inputs / "bad_16x16.png", np.full((16, 16, 3), 128, np.uint8))
    _png(inputs / "bad_4096.png", np.full((4096, 4096, 3), 90, np.uint8))

    motion_models = base / "models" / "singer_motion"
    truncated = save_tiny_motion_model(motion_models / "bad-truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    LipExpert(LipExpertConfig()).save_pretrained(motion_models / "bad-lip-expert")

    encoders = base / "models" / "audio_encoders"
    encoders.mkdir(parents=True, exist_ok=True)
    (encoders / "bad-truncated.safetensors").write_bytes(weights.read_bytes()[:500])
    pickled = encoders / "bad-pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({
        "model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2}))
    torch.save({"state_dict": {"w": torch.zeros(3)}, "extra": _PickledThing()}, pickled / "pytorch_model.bin")
    return base


class _PickledThing:
    def __init__(self):
        self.weight = torch.zeros(2)


# (id, prompt builder, failing node, fragments: what + how to fix)
CASES = [
    ("audio-empty-file", lambda: _load_prompt("bad_empty.wav"), "SingerLoadAudio",
     ("'bad_empty.wav' is empty (0 bytes)", "give a file with sound")),
    ("audio-corrupt-file", lambda: _load_prompt("bad_corrupt.mp3"), "SingerLoadAudio",
     ("could not be opened as audio", "re-export or re-download")),
    ("audio-image-named-wav", lambda: _load_prompt("bad_cover.wav"), "SingerLoadAudio",
     ("contains no audio stream", "give a file with sound")),
    ("audio-truncated-wav", lambda: _load_prompt("bad_truncated.wav"), "SingerLoadAudio",
     ("is damaged", "of 2.00 s", "duration_seconds <=", "on_damage='silence'")),
    ("audio-nan-samples", lambda: _load_prompt("bad_nan.wav"), "SingerLoadAudio",
     ("NaN or infinite samples", "re-export or re-download")),
    ("audio-silent-encode", lambda: _load("bad_silent.wav") | _mel_encode(["1", 0]) | {
        "12": {"class_type": "SingerWaveletSubbands",
               "inputs": {"audio": ["11", 0], "levels": 1, "n_mels": 80, "normalize": "band", "colormap": "viridis",
                          "band_order": "pywt", "mode": "symmetric", "cell_height": 64, "feature_row": -1}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}}},
     "SingerAudioEncode", ("the audio is silent", "allow_silence")),
    ("image-no-face", lambda: _face_crop("bad_no_face.png"), "SingerFaceCrop",
     ("no face found in the 256x256 image", "frontal portrait")),
    ("image-16x16", lambda: _face_crop("bad_16x16.png"), "SingerFaceCrop",
     ("only 16x16 pixels", "give a larger portrait")),
    ("image-4096x4096-no-face", lambda: _face_crop("bad_4096.png"), "SingerFaceCrop",
     ("no face found in the 4096x4096 image", "frontal portrait")),
    ("checkpoint-truncated-motion-model", lambda: _motion_loader("bad-truncated/") | _synth_song(1.0)
     | _mel_encode(["20", 0]) | _sample(["11", 0]) | _render(["31", 0], None), "SingerMotionLoader",
     ("not a readable safetensors file", "save or download it again")),
    ("checkpoint-wrong-model-type", lambda: _motion_loader("bad-lip-expert/") | _synth_song(1.0)
     | _mel_encode(["20", 0]) | _sample(["11", 0]) | _render(["31", 0], None), "SingerMotionLoader",
     ("holds a 'LipExpert' model", "pick the matching loader or checkpoint")),
    ("checkpoint-truncated-encoder", lambda: _synth_song(1.0) | _mel_encode(["20", 0]) | {
        "10": {"class_type": "SingerAudioEncoderLoader",
               "inputs": {"encoder": "bad-truncated.safetensors", "allow_download": False, "dtype": "float32",
                          "device": "cpu"}}} | _motion_loader(f"{TINY_MOTION_MODEL}/") | _sample(["11", 0])
     | _render(["31", 0], None), "SingerAudioEncoderLoader",
     ("not a valid safetensors file or is truncated", "download it again")),
    ("checkpoint-pickle-bin", lambda: _synth_song(1.0) | _mel_encode(["20", 0]) | {
        "10": {"class_type": "SingerAudioEncoderLoader",
               "inputs": {"encoder": "bad-pickled/", "allow_download": False, "dtype": "float32",
                          "device": "cpu"}}} | _motion_loader(f"{TINY_MOTION_MODEL}/") | _sample(["11", 0])
     | _render(["31", 0], None), "SingerAudioEncoderLoader",
     ("is refused", "pickled Python objects", ".safetensors version")),
    ("fps-features-30-into-model-25", lambda: _synth_song(1.0) | _mel_encode(["20", 0], fps=30.0)
     | _motion_loader(f"{TINY_MOTION_MODEL}/") | _sample(["11", 0]) | _render(["31", 0], None), "SingerSampleMotion",
     ("at 30 fps", "trained at 25 fps", "encode the audio at fps=25")),
]



def _leftovers(base: Path) -> list[str]:
    """Partial files anywhere under output/ and models/ (temporary names of our atomic writers)."""
    found = []
    for root in (base / "output", base / "models"):
        if root.is_dir():
            found += [str(path) for path in root.rglob("*")
                      if path.is_file() and (".partial" in path.name or path.name.endswith(".tmp")
                                             or path.name.startswith("."))]
    return found


def _still_serving(comfy_server) -> None:
    assert comfy_server.get("/system_stats").status_code == 200
    entry = comfy_server.run_prompt(_synth_song(0.5, node="1") | {
        "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}}})
    comfy_server.assert_success(entry)


@pytest.mark.parametrize("builder, node_type, fragments", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_fails_in_our_node_and_the_server_keeps_serving(comfy_server, bad_files, builder, node_type,
                                                                   fragments):
    entry = comfy_server.run_prompt(builder(), timeout_s=120)

    error = comfy_server.execution_error(entry)
    assert error is not None, f"the prompt did not fail: {entry['status']}"
    assert error["node_type"] == node_type, (error["node_type"], error["exception_message"])
    message = error["exception_message"]
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    assert not _leftovers(bad_files)
    _still_serving(comfy_server)


def test_render_motion_refuses_audio_of_another_length(comfy_server, bad_files):
    prompt = {
        "1": {"class_type": "SingerSynthSinger",
              "inputs": {"seconds": 1.0, "seed": 0, "size": 64, "style": "singing", "backing": False,
                         "textured_background": False}},
    } | _synth_song(4.0) | _render(["1", 3], ["20", 0])
    entry = comfy_server.run_prompt(prompt, timeout_s=120)

    error = comfy_server.execution_error(entry)
    assert error is not None and error["node_type"] == "SingerRenderMotion", entry["status"]
    assert "the audio is 4.00 s long but the motion is 1.00 s" in error["exception_message"]
    _still_serving(comfy_server)


@pytest.mark.parametrize("name", ["/etc/hostname", "../../../../etc/hostname", "../input/../../comfyui.log"])
def test_paths_escaping_the_input_folder_are_refused_before_running(comfy_server, bad_files, name):
    import requests

    response = requests.post(comfy_server.base_url + "/prompt",
                             json={"prompt": _load_prompt(name), "client_id": comfy_server.client_id}, timeout=10)

    assert response.status_code == 400, response.text
    assert "outside ComfyUI's input folder" in response.text and "copy it into that folder" in response.text
    _still_serving(comfy_server)
