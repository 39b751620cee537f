"""Audio NeRF nodes in a real ComfyUI server: served with tooltips, the shipped talking-head workflow saves a video
with sound, a tiny local VITS speaks through the TTS node into the NeRF, and a missing model, empty text, an
offline hub id or features at the wrong fps give clear errors while the server keeps serving (needs
COMFYUI_PATH)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui

PACK_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = PACK_ROOT / "workflows" / "Audio NeRF talking head (DAMC).json"
DEMO_NAME = "nerf-demo"  # the folder the shipped workflow loads (make demo's, from the demo folder)
DEMO_STEPS = 40  # enough for the occupancy grid to prune empty space (fast renders) and a face-like blob
NODE_IDS = ("SingerNeRFLoader", "SingerNeRFRender", "SingerTextToSpeech")
MEL = "mel-80 (built-in, no weights)"


@pytest.fixture(scope="module")
def nerf_model(comfy_server) -> Path:
    """nerf-demo in the server's demo folder (SINGER_DEMO_MODELS; the conftest may have placed it already)."""
    from singer_core.demo.nerf_subject import train_demo_nerf

    target = comfy_server.base_dir / "demo_models" / DEMO_NAME
    if not (target / "model.safetensors").is_file():
        train_demo_nerf(target, cache_dir=comfy_server.base_dir / "runs" / "nerf", steps=DEMO_STEPS)
    return target


@pytest.fixture(scope="module")
def tiny_vits(comfy_server) -> str:
    """A tiny random VITS (as in tests/audio/test_tts.py) saved into models/tts/tiny-vits."""
    transformers = pytest.importorskip("transformers")
    import torch

    folder = comfy_server.base_dir / "models" / "tts" / "tiny-vits"
    characters = list(" abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(characters)}, "<unk>": len(characters) + 1}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.VitsTokenizer(vocab_file=str(folder / "vocab.json"), phonemize=False)
    config = transformers.VitsConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        flow_size=16, spectrogram_bins=33, upsample_initial_channel=16, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1, duration_predictor_filter_channels=16, depth_separable_num_layers=1,
        sampling_rate=16000, window_size=4)
    torch.manual_seed(0)
    transformers.VitsModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return "tiny-vits/"


def _fresh_info(comfy_server, node_id: str) -> dict:
    response = comfy_server.get(f"/object_info/{node_id}")
    response.raise_for_status()
    return response.json()[node_id]


def _choices(spec) -> list:
    return spec[1]["options"] if len(spec) > 1 and isinstance(spec[1], dict) and "options" in spec[1] else spec[0]


def _song(seconds: float) -> dict:
    return {"class_type": "SingerSynthSong",
            "inputs": {"seconds": seconds, "seed": 1, "style": "singing", "tempo_bpm": 96.0, "backing": False,
                       "backing_db": -6.0, "stereo": False, "sample_rate": "16000"}}


def _render_prompt(model: str, seconds: float, fps: float) -> dict:
    return {
        "1": _song(seconds),
        "2": {"class_type": "SingerAudioEncoderLoader",
              "inputs": {"encoder": MEL, "allow_download": False, "dtype": "auto", "device": "auto"}},
        "3": {"class_type": "SingerAudioEncode",
              "inputs": {"encoder": ["2", 0], "audio": ["1", 0], "fps": fps, "layers": "all",
                         "interpolation": "hallo", "steps_per_frame": 1, "chunk_seconds": 30.0}},
        "4": {"class_type": "SingerNeRFLoader", "inputs": {"model": model, "device": "cpu"}},
        "5": {"class_type": "SingerNeRFRender",
              "inputs": {"nerf_model": ["4", 0], "features": ["3", 0], "camera": "static", "sway_degrees": 10.0,
                         "sway_seconds": 4.0, "audio": ["1", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }


def _tts_prompt(model: str, text: str, *, allow_download: bool = False) -> dict:
    return {
        "1": {"class_type": "SingerTextToSpeech",
              "inputs": {"text": text, "model": model, "allow_download": allow_download, "seed": 3, "fps": 25.0,
                         "device": "cpu"}},
        "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}},
    }


def _error(comfy_server, entry: dict, node_type: str) -> str:
    error = comfy_server.execution_error(entry)
    assert error is not None and error["node_type"] == node_type, entry["status"]
    return error["exception_message"]


def test_nerf_nodes_are_served_with_tooltips(comfy_server, nerf_model, tiny_vits):
    for node_id in NODE_IDS:
        entry = _fresh_info(comfy_server, node_id)
        assert entry["category"] == "SINGER/nerf"
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert entry["output_tooltips"] and all(entry["output_tooltips"]), f"{node_id}: an output has no tooltip"
    models = _choices(_fresh_info(comfy_server, "SingerNeRFLoader")["input"]["required"]["model"])
    assert f"{DEMO_NAME}/" in models, models
    voices = _choices(_fresh_info(comfy_server, "SingerTextToSpeech")["input"]["required"]["model"])
    assert tiny_vits in voices and "microsoft/speecht5_tts" in voices, voices


def test_workflow_saves_a_talking_head_video_with_sound(comfy_server, nerf_model, tmp_path):
    from singer_core.io.video_read import read_video

    workflow = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    prompt = comfy_server.with_fast_values(comfy_server.workflow_to_prompt(workflow))
    seconds = next(node["inputs"]["seconds"] for node in prompt.values() if node["class_type"] == "SingerSynthSong")

    entry = comfy_server.run_prompt(prompt, timeout_s=120)

    comfy_server.assert_success(entry)
    save = next(key for key, node in prompt.items() if node["class_type"] == "SaveVideo")
    path = tmp_path / "talking_head.mp4"
    path.write_bytes(comfy_server.view_bytes(entry["outputs"][save]["images"][0]))
    video = read_video(path)
    size = json.loads((nerf_model / "config.json").read_text())["config"]
    assert video.frames.shape == (math.ceil(seconds * 25), size["height"], size["width"], 3)
    assert video.audio is not None and abs(video.audio.shape[-1] / video.sample_rate - seconds) < 0.05
    assert (video.frames[1:].float() - video.frames[:-1].float()).abs().mean() > 0.05, "the camera never moved"
    render = next(key for key, node in prompt.items() if node["class_type"] == "SingerNeRFRender")
    assert entry["outputs"][render]["singer_video"], "the render node sent no preview"


def test_tts_speaks_and_drives_the_nerf(comfy_server, nerf_model, tiny_vits):
    prompt = _tts_prompt(tiny_vits, "sing a song of sixpence")
    prompt["3"] = {"class_type": "SingerNeRFLoader", "inputs": {"model": f"{DEMO_NAME}/", "device": "cpu"}}
    prompt["4"] = {"class_type": "SingerNeRFRender",
                   "inputs": {"nerf_model": ["3", 0], "features": ["1", 1], "camera": "training",
                              "sway_degrees": 10.0, "sway_seconds": 4.0, "audio": ["1", 0]}}
    prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}

    entry = comfy_server.run_prompt(prompt, timeout_s=120)

    comfy_server.assert_success(entry)
    assert entry["outputs"]["2"]["audio"], "PreviewAudio saved no speech"
    assert entry["outputs"]["5"]["images"], "the NeRF rendered no frames from the speech"


def test_missing_model_empty_text_and_wrong_fps_give_clear_errors(comfy_server, nerf_model, tiny_vits):
    import requests

    # 1. a NeRF folder that is not there: refused at validation, naming the folder and how to make one
    response = requests.post(comfy_server.base_url + "/prompt", timeout=10, json={
        "prompt": _render_prompt("nowhere/", 0.4, 25.0), "client_id": comfy_server.client_id})
    assert response.status_code == 400, response.text
    assert "nowhere/" in response.text and "singer_nerf" in response.text, response.text
    # 2. empty text
    message = _error(comfy_server, comfy_server.run_prompt(_tts_prompt(tiny_vits, "   ")), "SingerTextToSpeech")
    assert "text is empty" in message, message
    # 3. a hub id that is not downloaded, with downloads off
    entry = comfy_server.run_prompt(_tts_prompt("microsoft/speecht5_tts", "hello"))
    message = _error(comfy_server, entry, "SingerTextToSpeech")
    assert "hf download microsoft/speecht5_tts" in message and "tts" in message, message
    # 4. features at 30 fps for a 25 fps model
    message = _error(comfy_server, comfy_server.run_prompt(_render_prompt(f"{DEMO_NAME}/", 0.4, 30.0)),
                     "SingerNeRFRender")
    assert "30 fps" in message and "fps=25" in message, message
    # 5. the server keeps serving
    entry = comfy_server.run_prompt(_render_prompt(f"{DEMO_NAME}/", 0.2, 25.0))
    comfy_server.assert_success(entry)
    assert entry["outputs"]["6"]["images"]
