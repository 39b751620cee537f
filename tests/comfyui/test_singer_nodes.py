"""SINGER video nodes in a real ComfyUI server: served with tooltips, the shipped workflow renders a video with
sound from the tiny stack, missing model files give errors that name them, and the server keeps serving."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui

PACK_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = PACK_ROOT / "workflows" / "SINGER - a portrait sings a song.json"
TINY_NAME = "singer-tiny"  # the folder the shipped workflow loads (models/singer/singer-tiny/)
NODE_IDS = ("SingerModelLoader", "SingerSampleVideo")


@pytest.fixture(scope="module")
def singer_models(comfy_server) -> Path:
    """models/singer/ of the server: the tiny stack (2 training steps on 2 short clips), a folder without
    weights and an empty 'net.pth' whose VAE and face model are absent."""
    from singer_core.demo.singer_stack import build_tiny_stack

    root = comfy_server.base_dir / "models" / "singer"
    target = root / TINY_NAME
    if not (target / "model.safetensors").is_file():  # the conftest may have placed it already
        build_tiny_stack(target, cache_dir=comfy_server.base_dir / "runs" / "singer", steps=2, small_data=True)
    broken = root / "singer-no-weights"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "config.json").write_text((target / "config.json").read_text())
    (root / "net.pth").write_bytes(b"")
    return root


def _fresh_info(comfy_server, node_id: str) -> dict:
    response = comfy_server.get(f"/object_info/{node_id}")
    response.raise_for_status()
    return response.json()[node_id]


def test_singer_nodes_are_served_with_tooltips(comfy_server, singer_models):
    for node_id in NODE_IDS:
        entry = _fresh_info(comfy_server, node_id)
        assert entry["category"] == "SINGER/video"
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(entry["output_tooltips"]), f"{node_id}: an output has no tooltip"
    models = _fresh_info(comfy_server, "SingerModelLoader")["input"]["required"]["model"]
    choices = models[1]["options"] if isinstance(models[1], dict) and "options" in models[1] else models[0]
    assert f"{TINY_NAME}/" in choices and "net.pth" in choices, choices


def test_workflow_renders_a_video_with_sound(comfy_server, singer_models, tmp_path):
    from singer_core.io.video_read import read_video

    prompt = comfy_server.with_fast_values(comfy_server.workflow_to_prompt(json.loads(WORKFLOW.read_text(encoding="utf-8"))))
    synth = next(node for node in prompt.values() if node["class_type"] == "SingerSynthSinger")
    seconds, size = synth["inputs"]["seconds"], synth["inputs"]["size"]
    sample = next(node for node in prompt.values() if node["class_type"] == "SingerSampleVideo")
    fps = sample["inputs"]["fps"]

    entry = comfy_server.run_prompt(prompt, timeout_s=180)

    comfy_server.assert_success(entry)
    save = next(key for key, node in prompt.items() if node["class_type"] == "SaveVideo")
    sampler = next(key for key, node in prompt.items() if node["class_type"] == "SingerSampleVideo")
    path = tmp_path / "singer.mp4"
    path.write_bytes(comfy_server.view_bytes(entry["outputs"][save]["images"][0]))
    video = read_video(path)
    assert video.frames.shape == (math.ceil(seconds * fps), size, size, 3)  # frames = ceil(seconds x fps)
    assert video.audio is not None, "the saved video has no sound"
    seconds_of_sound = video.audio.shape[-1] / video.sample_rate
    assert abs(seconds_of_sound - seconds) < 0.1, f"{seconds_of_sound:.3f} s of sound for a {seconds} s song"
    assert float(video.audio.abs().max()) > 0.01, "the sound track is silent"
    # one representative preview (the video itself), not one thumbnail per frame
    previews = entry["outputs"][sampler]
    assert "images" not in previews and len(previews["singer_video"]) == 1, previews


def _loader_prompt(model: str) -> dict:
    return {
        "1": {"class_type": "SingerModelLoader",
              "inputs": {"model": model, "vae": "auto", "face_model": "auto",
                         "motion_module": "none (net.pth has them)", "allow_download": False}},
        "2": {"class_type": "SingerSynthSinger",
              "inputs": {"seconds": 0.2, "seed": 0, "size": 64, "style": "singing", "backing": False,
                         "textured_background": False}},
        "3": {"class_type": "SingerSampleVideo",
              "inputs": {"singer_model": ["1", 0], "image": ["2", 0], "audio": ["2", 1], "seed": 0, "steps": 1,
                         "cfg": 1.0, "pose_weight": 1.0, "face_weight": 1.0, "lip_weight": 1.0, "dtype": "auto",
                         "offload": False, "crop_ratio": 0.0, "clip_frames": 8, "motion_frames": 2,
                         "use_msm": True}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }


def _error_message(comfy_server, prompt: dict) -> str:
    entry = comfy_server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error", "the prompt should have failed"
    error = comfy_server.execution_error(entry)
    assert error is not None and error["node_type"] == "SingerModelLoader", error
    return error["exception_message"]


def test_missing_model_files_name_each_file_and_the_server_keeps_serving(comfy_server, singer_models):
    message = _error_message(comfy_server, _loader_prompt("net.pth"))
    assert "sd-vae-ft-mse" in message and str(comfy_server.base_dir / "models" / "vae") in message, message
    assert "glintr100.onnx" in message and str(singer_models / "face_analysis") in message, message

    message = _error_message(comfy_server, _loader_prompt("singer-no-weights/"))
    assert "model.safetensors" in message and "singer-no-weights" in message, message

    assert comfy_server.get("/system_stats").status_code == 200
    comfy_server.assert_success(comfy_server.run_prompt(_loader_prompt(f"{TINY_NAME}/"), timeout_s=180))


def test_auto_sampling_follows_the_model(comfy_server, singer_models):
    """steps / cfg / clip_frames 0 = what the model recommends: the tiny stack stores 20 steps without guidance in
    singer_training.json and was trained on 4-frame clips (SINGER's net.pth would give Hallo's 40 / 3.5 / 16)."""
    info = json.loads((singer_models / TINY_NAME / "singer_training.json").read_text())
    assert info["sampling"] == {"steps": 20, "cfg": 1.0} and info["frames"] == 4
    prompt = _loader_prompt(f"{TINY_NAME}/")
    prompt["3"]["inputs"].update(steps=0, cfg=0.0, clip_frames=0)
    start = len(comfy_server.log_text())
    comfy_server.assert_success(comfy_server.run_prompt(prompt, timeout_s=180))
    assert "SingerSampleVideo: 20 steps, cfg 1, 4-frame clips" in comfy_server.log_text()[start:]
