"""The pack inside a real ComfyUI server: registration, shipped workflows, errors (needs COMFYUI_PATH)."""

from __future__ import annotations

import ast
import io
import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui

PACK_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
SHORT_SONG_NAME = "singer_short_song.wav"  # 0.2 s, written by the comfy_server fixture
MOTION_WORKFLOW = PACK_ROOT / "workflows" / "Motion DiT - song to head motion (FD2Talk).json"
LOADERS = ("SingerMotionLoader", "SingerModelLoader", "SingerNeRFLoader", "SingerFrameModelLoader")  # of trained models


def _node_ids_by_class() -> dict[str, str]:
    """Class name -> node_id for every class in nodes/*.py whose define_schema passes node_id="..."."""
    found: dict[str, str] = {}
    for path in sorted((PACK_ROOT / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for method in cls.body:
                if not (isinstance(method, ast.FunctionDef) and method.name == "define_schema"):
                    continue
                for call in (n for n in ast.walk(method) if isinstance(n, ast.Call)):
                    for keyword in call.keywords:
                        if keyword.arg == "node_id" and isinstance(keyword.value, ast.Constant):
                            found[cls.name] = keyword.value.value
    return found


def _registry_class_names() -> list[str]:
    """Names listed in ``NODES = [...]`` of nodes/__init__.py (the pack's one registry)."""
    tree = ast.parse((PACK_ROOT / "nodes" / "__init__.py").read_text(encoding="utf-8"))
    for statement in tree.body:
        targets = [statement.target] if isinstance(statement, ast.AnnAssign) else getattr(statement, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "NODES" for t in targets):
            return [element.id for element in statement.value.elts if isinstance(element, ast.Name)]
    pytest.fail("nodes/__init__.py has no NODES = [...] registry")


def expected_node_ids() -> list[str]:
    by_class = _node_ids_by_class()
    registry = _registry_class_names()
    missing = [name for name in registry if name not in by_class]
    assert not missing, f"registry entries without a define_schema node_id in nodes/*.py: {missing}"
    unregistered = sorted(set(by_class) - set(registry))
    assert not unregistered, f"nodes defined in nodes/*.py but missing from the NODES registry: {unregistered}"
    return [by_class[name] for name in registry]





def test_pack_imports_without_errors(comfy_server):
    log, pack = comfy_server.log_text(), comfy_server.pack_dir_name
    bad = [line for line in log.splitlines()
           if pack in line and ("Cannot import" in line or "IMPORT FAILED" in line)]
    assert not bad, "ComfyUI could not import the pack:\n" + "\n".join(bad) + "\n" + comfy_server.log_tail()
    assert f"custom_nodes/{pack}" in log, "the pack folder is missing from the import-times report"


def test_every_registered_node_is_served_with_category_and_tooltips(comfy_server):
    node_ids = expected_node_ids()
    assert node_ids, "the NODES registry is empty"
    info = comfy_server.object_info()
    for node_id in node_ids:
        assert node_id.startswith("Singer"), f"{node_id}: node ids start with 'Singer'"
        assert node_id in info, f"{node_id} is not in /object_info; log tail:\n{comfy_server.log_tail()}"
        entry = info[node_id]
        assert entry["category"].startswith("SINGER/"), f"{node_id}: category {entry['category']!r}"
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert options.get("tooltip"), f"{node_id}.{name} ({section}) has no tooltip"


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_runs(comfy_server, workflow_path: Path, tmp_path: Path):
    workflow = json.loads(workflow_path.read_text(encoding="utf-8"))
    prompt = comfy_server.with_fast_values(comfy_server.workflow_to_prompt(workflow))
    info = comfy_server.object_info()

    entry = comfy_server.run_prompt(prompt)

    comfy_server.assert_success(entry)
    output_nodes = [node_id for node_id, node in prompt.items() if info[node["class_type"]].get("output_node")]
    assert output_nodes, f"{workflow_path.name} has no output node"
    for node_id in output_nodes:
        outputs = entry["outputs"].get(node_id, {})
        kind = "audio" if "Audio" in prompt[node_id]["class_type"] else "images"
        assert outputs.get(kind), f"{workflow_path.name}: output node {node_id} ({prompt[node_id]['class_type']}) made no {kind}"
        if prompt[node_id]["class_type"] == "SaveVideo":
            _assert_real_video(comfy_server.view_bytes(outputs[kind][0]), tmp_path)
        elif kind == "images":
            _assert_real_picture(comfy_server.view_bytes(outputs[kind][0]))
    thumbnails = os.environ.get("SINGER_THUMBNAILS")
    if thumbnails:  # workflows/<name>.jpg for the template browser, from this run's first output
        first = next(node_id for node_id in output_nodes if entry["outputs"].get(node_id, {}).get("images"))
        _write_thumbnail(comfy_server.view_bytes(entry["outputs"][first]["images"][0]),
                         Path(thumbnails) / f"{workflow_path.stem}.jpg", tmp_path)


def _write_thumbnail(data: bytes, target: Path, tmp_path: Path) -> None:
    """A 384 x 384 JPEG card of a PNG, or of a video's middle frame."""
    from PIL import Image

    if data[:8] == b"\x89PNG\r\n\x1a\n":
        image = Image.open(io.BytesIO(data)).convert("RGB")
    else:
        from singer_core.io.video_read import read_video

        path = tmp_path / "thumbnail.mp4"
        path.write_bytes(data)
        frames = read_video(path).frames
        image = Image.fromarray(frames[frames.shape[0] // 2].numpy())
    side = 384  # the template browser shows square cards: the picture scaled to fit, on a dark square
    scale = side / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    card = Image.new("RGB", (side, side), (24, 24, 24))
    card.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    target.parent.mkdir(parents=True, exist_ok=True)
    card.save(target, format="JPEG", quality=88)


def _assert_real_picture(data: bytes) -> None:
    import numpy as np
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "GET /view did not return a PNG"
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert pixels.shape[1] > 200, f"the sub-band grid is only {pixels.shape[1]} px wide"
    assert (pixels != pixels[0, 0]).any(), "the sub-band grid is a single colour"


def _assert_real_video(data: bytes, tmp_path: Path) -> None:
    """A saved video decodes to moving frames with a sound track."""
    from singer_core.io.video_read import read_video

    path = tmp_path / "saved.mp4"
    path.write_bytes(data)
    video = read_video(path)
    assert video.frames.shape[0] >= 10, f"only {video.frames.shape[0]} frames"
    assert video.audio is not None and video.audio.shape[-1] > 0, "the saved video has no sound"
    assert (video.frames[1:].float() - video.frames[:-1].float()).abs().mean() > 0.05, "the frames never change"


def _subbands_prompt(song: str, levels: int) -> dict:
    return {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": song}},
        "2": {"class_type": "SingerWaveletSubbands",
              "inputs": {"audio": ["1", 0], "levels": levels, "n_mels": 80, "normalize": "band",
                         "colormap": "viridis", "band_order": "pywt", "mode": "symmetric", "cell_height": 96}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def test_bad_input_gives_a_clear_error_and_the_server_stays_healthy(comfy_server):
    entry = comfy_server.run_prompt(_subbands_prompt(SHORT_SONG_NAME, levels=6))

    assert entry["status"]["status_str"] == "error", "levels=6 on a 0.2 s song should fail"
    error = comfy_server.execution_error(entry)
    assert error is not None, f"no execution_error message in {entry['status']}"
    assert error["node_type"] == "SingerWaveletSubbands"
    message = error["exception_message"]
    assert "SingerWaveletSubbands" in message, f"the message does not name the node: {message!r}"
    assert re.search(r"lower 'levels' to \d|use a clip of at least", message), f"the message does not say what to change: {message!r}"

    comfy_server.assert_success(comfy_server.run_prompt(_subbands_prompt(SHORT_SONG_NAME, levels=1)))


def test_every_workflow_is_in_the_template_browser(comfy_server):
    """ComfyUI lists a pack's workflows/ folder in its template browser (one source of truth: no copies)."""
    templates = comfy_server.get("/workflow_templates").json()
    ours = templates.get(comfy_server.pack_dir_name)
    assert ours is not None, f"our pack is missing from /workflow_templates: {sorted(templates)}"
    assert sorted(ours) == sorted(p.stem for p in WORKFLOWS)
    for path in WORKFLOWS:
        served = comfy_server.get(f"/api/workflow_templates/{comfy_server.pack_dir_name}/{path.name}")
        assert served.status_code == 200, f"{path.name}: HTTP {served.status_code}"
        assert served.json() == json.loads(path.read_text(encoding="utf-8"))


def test_every_template_has_a_thumbnail_from_a_real_run(comfy_server):
    """The template browser asks for workflows/<name>.jpg as the thumbnail (made from a run of the workflow by
    test_shipped_workflow_runs with SINGER_THUMBNAILS set)."""
    from PIL import Image

    for path in WORKFLOWS:
        served = comfy_server.get(f"/api/workflow_templates/{comfy_server.pack_dir_name}/{path.stem}.jpg")
        assert served.status_code == 200, f"{path.stem}.jpg: HTTP {served.status_code}"
        image = Image.open(io.BytesIO(served.content))
        assert image.format == "JPEG" and min(image.size) >= 128, (path.stem, image.format, image.size)


@pytest.mark.parametrize("workflow_path", [p for p in WORKFLOWS if any(t in p.read_text() for t in LOADERS)],
                         ids=lambda p: p.stem)
def test_a_missing_model_refuses_the_whole_workflow_before_anything_runs(comfy_server, workflow_path):
    """Every output of a shipped workflow that loads a model needs it: with the model missing, POST /prompt is
    refused (nothing runs, no half-run reported as success) and the error names the command that makes it."""
    import requests

    prompt = comfy_server.workflow_to_prompt(json.loads(workflow_path.read_text(encoding="utf-8")))
    loaders = {node_id: node for node_id, node in prompt.items() if node["class_type"] in LOADERS}
    assert loaders
    for node in loaders.values():
        node["inputs"]["model"] = "no-such-model/"
    response = requests.post(comfy_server.base_url + "/prompt", json={"prompt": prompt,
                                                                      "client_id": comfy_server.client_id}, timeout=10)
    assert response.status_code == 400, f"{workflow_path.name}: queued anyway: {response.text}"
    assert "make demo" in response.text and "no-such-model" in response.text, response.text
    # each loader refuses with its own message (what to run), not only the first one
    node_errors = response.json()["node_errors"]
    for node_id, node in loaders.items():
        text = json.dumps(node_errors.get(node_id, {}))
        assert "'no-such-model/' is not in" in text and "make demo" in text, (node["class_type"], node_errors)


def test_loaders_list_the_demo_models_without_copying(comfy_server):
    """`make demo` leaves motion-demo/, singer-demo/, nerf-demo/ and frames-demo/ in its out/models (here
    SINGER_DEMO_MODELS): each loader lists its own kind from there and no other."""
    def options(node_id):
        spec = comfy_server.get(f"/object_info/{node_id}").json()[node_id]["input"]["required"]["model"]
        return spec[1]["options"] if isinstance(spec[1], dict) and "options" in spec[1] else spec[0]

    demo = {"SingerMotionLoader": "motion-demo/", "SingerModelLoader": "singer-demo/", "SingerNeRFLoader": "nerf-demo/",
            "SingerFrameModelLoader": "frames-demo/"}
    for node_id, name in demo.items():
        listed = options(node_id)
        assert name in listed, (node_id, listed)
        assert not set(demo.values()) - {name} & set(listed), f"{node_id} lists another kind's model: {listed}"
    # a name that leaves the model folders is refused before anything runs
    import requests

    prompt = comfy_server.workflow_to_prompt(json.loads(MOTION_WORKFLOW.read_text(encoding="utf-8")))
    for node in prompt.values():
        if node["class_type"] == "SingerMotionLoader":
            node["inputs"]["model"] = "../singer/singer-tiny/"  # exists, but outside singer_motion
    response = requests.post(comfy_server.base_url + "/prompt", json={"prompt": prompt}, timeout=10)
    assert response.status_code == 400 and "is not in" in response.text, response.text


def test_pack_import_takes_under_a_second(comfy_server):
    """ComfyUI's start-up report of import times: the pack does no work at import (no models, no kernels)."""
    pattern = re.compile(r"^\s*([\d.]+) seconds.*custom_nodes/" + re.escape(comfy_server.pack_dir_name) + r"\s*$")
    times = [float(m.group(1)) for line in comfy_server.log_text().splitlines() if (m := pattern.match(line))]
    assert times, "no import time of the pack in ComfyUI's log"
    assert times[0] < 1.0, f"importing the pack took {times[0]:.2f} s inside ComfyUI"


def test_interrupting_motion_sampling_stops_promptly_and_the_server_stays_healthy(comfy_server):
    import time

    import requests

    workflow = json.loads(MOTION_WORKFLOW.read_text(encoding="utf-8"))
    prompt = comfy_server.workflow_to_prompt(workflow)
    for node in prompt.values():
        if node["class_type"] == "SingerSampleMotion":
            node["inputs"]["steps"] = 1000  # long enough to interrupt mid-way
        if node["class_type"] == "SingerSynthSinger":
            node["inputs"]["seconds"] = 20.0
    prompt_id = comfy_server.queue_prompt(prompt)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it runs
        running = requests.get(comfy_server.base_url + "/queue", timeout=10).json()["queue_running"]
        if any(item[1] == prompt_id for item in running):
            break
        time.sleep(0.2)
    time.sleep(6.0)  # clip synthesis and encoding take a few seconds: interrupt inside the sampler
    sent = time.monotonic()
    requests.post(comfy_server.base_url + "/interrupt", timeout=10)
    entry = comfy_server.wait_for_history(prompt_id, timeout_s=120)
    waited = time.monotonic() - sent

    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, entry["status"]
    assert waited < 20, f"sampling took {waited:.1f} s to stop after Cancel"
    assert requests.get(comfy_server.base_url + "/system_stats", timeout=10).status_code == 200
    comfy_server.assert_success(comfy_server.run_prompt(_subbands_prompt(SHORT_SONG_NAME, levels=1)))
