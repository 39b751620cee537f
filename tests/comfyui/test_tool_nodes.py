"""The tool nodes inside a real ComfyUI server: Evaluate Clip on SynthSinger clips, FVD's missing-file error and a
run with a stand-in I3D, Train (motion, tiny) with progress over the websocket, the model installed for the motion
loader, Cancel that stops a run promptly and a resume that continues it (needs COMFYUI_PATH)."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time

import pytest

pytestmark = pytest.mark.comfyui

TOOL_NODES = ("SingerEvaluate", "SingerFVD", "SingerTrain")
TEXT_EVENT = 3  # protocol.BinaryEventTypes.TEXT: PromptServer.send_progress_text
FINISHED = ("execution_success", "execution_error", "execution_interrupted")


def _synth(seconds: float = 1.0, size: int = 64, seed: int = 0) -> dict:
    return {"class_type": "SingerSynthSinger",
            "inputs": {"seconds": seconds, "seed": seed, "size": size, "style": "singing", "backing": False,
                       "textured_background": False}}


def _train(run_name: str, steps: int, resume: bool = False) -> dict:
    return {"class_type": "SingerTrain",
            "inputs": {"task": "motion", "preset": "tiny", "dataset": "", "run_name": run_name, "steps": steps,
                       "resume": resume, "device": "cpu"}}


def _run_with_messages(comfy_server, prompt: dict, timeout_s: float = 120.0, on_message=None):
    """Queue `prompt` while listening on the websocket; returns (prompt id, JSON messages, progress texts).
    on_message(message) is called for every JSON message (e.g. to POST /interrupt)."""
    import aiohttp

    async def listen():
        url = comfy_server.base_url.replace("http://", "ws://") + f"/ws?clientId={comfy_server.client_id}"
        messages, texts = [], []
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
            prompt_id = comfy_server.queue_prompt(prompt)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    message = await socket.receive(timeout=max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if message.type == aiohttp.WSMsgType.BINARY:
                    (event,) = struct.unpack(">I", message.data[:4])
                    if event == TEXT_EVENT:
                        (length,) = struct.unpack(">I", message.data[4:8])
                        texts.append((message.data[8:8 + length].decode(), message.data[8 + length:].decode()))
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                messages.append(data)
                if on_message is not None:
                    on_message(data)
                if data["type"] in FINISHED and data["data"].get("prompt_id") == prompt_id:
                    return prompt_id, messages, texts
        pytest.fail(f"prompt did not finish within {timeout_s:.0f} s; log tail:\n{comfy_server.log_tail()}")

    return asyncio.run(listen())


def _combo_options(spec: list) -> list:
    """Options of a combo input in /object_info (V3: ["COMBO", {"options": [...]}], V1: [[...], {...}])."""
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def _progress(messages: list, node: str) -> list[tuple[int, int]]:
    return [(item["data"]["value"], item["data"]["max"]) for item in messages
            if item["type"] == "progress" and item["data"].get("node") == node]


def test_tool_nodes_are_served_with_tooltips(comfy_server):
    info = comfy_server.object_info()
    for name in TOOL_NODES:
        assert name in info, f"{name} is not registered"
        node = info[name]
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert all(node["output_tooltips"]), f"{name} has an output without tooltip"
    assert "IMAGE" in info["SingerEvaluate"]["input"]["required"]["generated"][0]
    # the node lists its presets without importing the trainers: the list must be every task's presets, no more
    from singer_core.train import TASKS, task_class

    presets = {name for task in TASKS for name in task_class(task).presets}
    assert set(_combo_options(info["SingerTrain"]["input"]["required"]["preset"])) == presets


def test_evaluate_clip_against_itself_and_against_a_rendered_motion(comfy_server):
    prompt = {
        "1": _synth(),
        "2": {"class_type": "SingerEvaluate",
              "inputs": {"generated": ["1", 2], "fps": 25.0, "ground_truth": ["1", 2], "motion": ["1", 3],
                         "gt_motion": ["1", 3], "identity": ["1", 4], "audio": ["1", 1]}},
        "3": {"class_type": "SingerRenderMotion",
              "inputs": {"motion": ["1", 3], "size": 64, "identity_seed": 5}},
        "4": {"class_type": "SingerEvaluate",
              "inputs": {"generated": ["3", 0], "fps": 25.0, "ground_truth": ["1", 2], "audio": ["1", 1]}},
    }

    entry = comfy_server.run_prompt(prompt, timeout_s=120)

    comfy_server.assert_success(entry)
    same = entry["outputs"]["2"]["text"][0]
    assert "| PSNR (dB) | inf |" in same and "| SSIM | 1.0000 |" in same, same
    assert "| LMD mouth (px) | 0.0000 |" in same and "| exp L1 | 0.0000 |" in same, same
    assert entry["outputs"]["2"]["images"], "no plot preview"
    other = entry["outputs"]["4"]["text"][0]
    psnr = float(re.search(r"\| PSNR \(dB\) \| ([0-9.]+) \|", other).group(1))
    ssim = float(re.search(r"\| SSIM \| ([0-9.]+) \|", other).group(1))
    assert 5.0 < psnr < 60.0 and 0.0 < ssim < 1.0, other
    assert "n/a (needs motion and gt_motion)" in other, other


def test_fvd_without_the_i3d_file_says_what_to_put_where(comfy_server):
    import requests

    prompt = {"1": _synth(),
              "2": {"class_type": "SingerFVD",
                    "inputs": {"videos_a": ["1", 2], "videos_b": ["1", 2], "i3d_model": "i3d_torchscript.pt",
                               "clip_frames": 10, "device": "cpu"}}}
    response = requests.post(comfy_server.base_url + "/prompt",
                             json={"prompt": prompt, "client_id": comfy_server.client_id}, timeout=10)

    assert response.status_code == 400, response.text
    assert "i3d_torchscript.pt" in response.text and "singer_eval" in response.text, response.text


def test_fvd_with_a_stand_in_i3d(comfy_server):
    import torch

    class MeanFeatures(torch.nn.Module):  # StyleGAN-V's I3D call signature; features = per-frame channel means
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = True) -> torch.Tensor:
            return x.mean(dim=(3, 4)).flatten(1)

    folder = comfy_server.base_dir / "models" / "singer_eval"
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(MeanFeatures()), str(folder / "stand_in_i3d.pt"))
    prompt = {"1": _synth(seconds=2.0),
              "2": {"class_type": "SingerRenderMotion", "inputs": {"motion": ["1", 3], "size": 64,
                                                                   "identity_seed": 5}},
              "3": {"class_type": "SingerFVD",
                    "inputs": {"videos_a": ["1", 2], "videos_b": ["1", 2], "i3d_model": "stand_in_i3d.pt",
                               "clip_frames": 10, "device": "cpu"}},
              "4": {"class_type": "SingerFVD",
                    "inputs": {"videos_a": ["1", 2], "videos_b": ["2", 0], "i3d_model": "stand_in_i3d.pt",
                               "clip_frames": 10, "device": "cpu"}}}

    entry = comfy_server.run_prompt(prompt, timeout_s=120)

    comfy_server.assert_success(entry)
    same = float(re.search(r"FVD (\S+)", entry["outputs"]["3"]["text"][0]).group(1))
    other = float(re.search(r"FVD (\S+)", entry["outputs"]["4"]["text"][0]).group(1))
    assert abs(same) < 1e-3 and other > 1e-3, (same, other)


def test_train_motion_reports_progress_and_installs_the_model(comfy_server):
    import requests

    run = "tool-test-motion"
    prompt_id, messages, texts = _run_with_messages(comfy_server, {"1": _train(run, steps=6)}, timeout_s=240)

    entry = comfy_server.wait_for_history(prompt_id)
    comfy_server.assert_success(entry)
    progress = _progress(messages, "1")
    assert progress and progress[-1] == (6, 6), progress
    assert any(node == "1" and "loss" in text for node, text in texts), texts
    installed = comfy_server.base_dir / "models" / "singer_motion" / run
    assert (installed / "config.json").is_file() and (installed / "model.safetensors").is_file()
    assert entry["outputs"]["1"]["text"][0].endswith(str(installed))
    info = requests.get(comfy_server.base_url + "/object_info/SingerMotionLoader", timeout=10).json()
    spec = info["SingerMotionLoader"]["input"]["required"]["model"]
    assert f"{run}/" in _combo_options(spec), spec


def test_train_refuses_a_preset_the_task_lacks(comfy_server):
    import requests

    prompt = {"1": _train("tool-test-bad-preset", steps=2)}
    prompt["1"]["inputs"]["task"] = "lip-expert"
    prompt["1"]["inputs"]["preset"] = "demo"
    response = requests.post(comfy_server.base_url + "/prompt",
                             json={"prompt": prompt, "client_id": comfy_server.client_id}, timeout=10)

    assert response.status_code == 400, response.text
    assert "has no preset 'demo'" in response.text, response.text


def test_cancel_stops_training_and_resume_continues(comfy_server):
    import requests

    run, steps = "tool-test-cancel", 100_000
    sent: list[float] = []

    def interrupt_after(first_step: int):
        def on_message(message):
            if (not sent and message["type"] == "progress" and message["data"].get("node") == "1"
                    and message["data"]["value"] >= first_step):
                sent.append(time.monotonic())
                requests.post(comfy_server.base_url + "/interrupt", timeout=10)
        return on_message

    # 1. start, cancel after a few steps: a checkpoint of the last step stays
    _, messages, _ = _run_with_messages(comfy_server, {"1": _train(run, steps)}, on_message=interrupt_after(3))
    stopped = time.monotonic()
    assert sent and stopped - sent[0] < 15.0, "the run did not stop promptly after Cancel"
    assert messages[-1]["type"] == "execution_interrupted", messages[-1]
    reported = _progress(messages, "1")[-1][0]
    checkpoints = sorted((comfy_server.base_dir / "output" / "singer_runs" / run / "checkpoints").glob("step-*"))
    assert checkpoints, "no checkpoint after Cancel"
    first = int(checkpoints[-1].name.split("-")[1])
    # the step that saw Cancel is saved, but ComfyUI's bar hook raises before it reports that step
    assert first in (reported, reported + 1), (first, reported)

    # 2. resume: the first step reported is the one after the checkpoint
    sent.clear()
    _, messages, _ = _run_with_messages(comfy_server, {"1": _train(run, steps, resume=True)},
                                        on_message=interrupt_after(first + 2))
    resumed = _progress(messages, "1")
    assert resumed[0][0] == first + 1, resumed[:3]
    assert messages[-1]["type"] == "execution_interrupted"

    # 3. the server stays healthy: the next prompt runs
    entry = comfy_server.run_prompt({"1": {"class_type": "SingerSynthSong",
                                           "inputs": {"seconds": 0.5, "seed": 0, "style": "singing",
                                                      "tempo_bpm": 96.0, "backing": False, "backing_db": -6.0,
                                                      "stereo": False, "sample_rate": "16000"}},
                                     "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}}})
    comfy_server.assert_success(entry)


def test_face_paste_of_whole_rendered_frames_pastes_only_the_face_region(comfy_server):
    """Render Motion gives whole frames the size of the portrait: Face Paste must paste their face region (the crop
    box), not the whole frame shrunk into the box (a small second head under the first one's hair)."""
    import io

    import numpy as np
    from PIL import Image

    from singer_core.face.crop import expand_box, paste_back, square_crop
    from singer_core.face.detect import detect_faces

    prompt = {
        "1": _synth(seconds=0.2, size=256),
        "2": {"class_type": "SingerRenderMotion", "inputs": {"motion": ["1", 3], "identity": ["1", 4], "size": 256,
                                                              "identity_seed": 0}},
        "3": {"class_type": "SingerFaceCrop", "inputs": {"image": ["1", 0], "expand_ratio": 1.2, "size": 256}},
        "4": {"class_type": "SingerFacePaste", "inputs": {"image": ["1", 0], "faces": ["2", 0], "crop": ["3", 1],
                                                           "feather": 0.1}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    entry = comfy_server.run_prompt(prompt)
    comfy_server.assert_success(entry)

    def picture(node_id):
        data = comfy_server.view_bytes(entry["outputs"][node_id]["images"][0])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    pasted, rendered, portrait = picture("5"), picture("6"), picture("7")
    # the reference: the core's crop of the same portrait, the rendered frame's crop box pasted back
    _, transform = square_crop(portrait, expand_box(detect_faces(portrait)[0], 1.2), 256)
    face_region = square_crop(rendered, (transform.x0, transform.y0, transform.side, transform.side), 256)[0]
    expected = paste_back(portrait, face_region, transform, feather=0.1)
    shrunk = paste_back(portrait, rendered, transform, feather=0.1)  # the whole frame in the box: the double head
    error = np.abs(pasted.astype(float) - expected).mean()
    double_head = np.abs(shrunk.astype(float) - expected).mean()
    assert error < 1.0, f"Face Paste differs from the face-region paste by {error:.2f} / 255 on average"
    assert double_head > 5 * max(error, 0.2), "the test cannot tell a whole-frame paste from a face-region paste"
