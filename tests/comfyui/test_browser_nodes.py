"""Every registered node built by hand in ComfyUI's own frontend, and a graph wired by hand around Load Song with a
user's song and portrait, queued from the frontend (Debian chromium via playwright; needs COMFYUI_PATH and
/usr/bin/chromium; COMFYUI_FRONTEND_ROOT runs the same tests against another frontend, e.g. 1.58.x).

A workflow can load with no missing node types and still hold a node the frontend failed to build (a red box
of UNKNOWN widgets, no error event), so each node is created with `LiteGraph.createNode` and its widgets are
compared with the server's /object_info: every widget input present under its own name with its default."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from tests.comfyui.screenshots import save_screenshot

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
USER_SONG = "my song (user).wav"  # a user's upload: spaces and brackets in the name
USER_PORTRAIT = "my portrait.png"
TINY_MODEL = "singer-tiny/"  # placed by the conftest (models/singer/singer-tiny/)
RUN_TIMEOUT_S = 240.0

# Build every node of the pack as the node library does (createNode + graph.add), collecting what is thrown.
CREATE_ALL = """async () => {
    const graph = window.app.graph;
    graph.clear();
    const types = Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith("Singer")).sort();
    const results = [];
    let x = 20;
    for (const type of types) {
        let node = null, error = null;
        try {
            node = LiteGraph.createNode(type);
            if (!node) throw new Error("createNode returned " + node);
            node.pos = [x, 40];
            x += 40;
            graph.add(node);
        } catch (e) {
            error = String((e && e.stack) || e);
        }
        results.push({
            type, error,
            title: node ? node.title : null,
            widgets: node && node.widgets ? node.widgets.map((w) => ({
                name: w.name ?? null, type: w.type ?? null,
                value: (w.value === undefined || typeof w.value === "object") ? null : w.value,
            })) : [],
            outputs: node && node.outputs ? node.outputs.map((o) => o.label || o.localized_name || o.name) : [],
        });
    }
    await new Promise((resolve) => setTimeout(resolve, 500));  // widget callbacks that run after creation
    return results;
}"""

# Wire Load Song + Load Image (the user's files) into the SINGER video nodes by hand and queue from the frontend.
WIRE_AND_QUEUE = """async ({ song, portrait, model, fast }) => {
    const graph = window.app.graph;
    graph.clear();
    const make = (type, pos) => {
        const node = LiteGraph.createNode(type);
        node.pos = pos;
        graph.add(node);
        return node;
    };
    const set = (node, name, value) => {
        const widget = node.widgets.find((w) => w.name === name);
        if (!widget) throw new Error(`${node.type} has no widget ${name}`);
        widget.value = value;
        widget.callback?.(value);
    };
    const song_node = make("SingerLoadAudio", [40, 60]);
    set(song_node, "audio", song);
    set(song_node, "duration_seconds", 1.0);
    const image = make("LoadImage", [40, 560]);
    set(image, "image", portrait);
    const loader = make("SingerModelLoader", [440, 60]);
    set(loader, "model", model);
    const sampler = make("SingerSampleVideo", [860, 60]);
    // fast values for the test, set here (the defaults, 0 = auto, are what the model recommends)
    if (fast) {
        set(sampler, "steps", 2);
        set(sampler, "cfg", 1.0);
        set(sampler, "clip_frames", 4);
    }
    set(sampler, "crop_ratio", 0.0);  // the tiny stack is trained on whole frames
    const preview = make("PreviewImage", [1280, 60]);
    const out = (node, name) => {  // outputs carry their display names; look the id up in the node's definition
        const index = node.constructor.nodeData.output_name.indexOf(name);
        if (index < 0) throw new Error(`${node.type} has no output ${name}`);
        return index;
    };
    const inp = (node, name) => node.inputs.findIndex((i) => i.name === name);
    loader.connect(out(loader, "SINGER model"), sampler, inp(sampler, "singer_model"));
    image.connect(0, sampler, inp(sampler, "image"));
    song_node.connect(out(song_node, "song"), sampler, inp(sampler, "audio"));
    sampler.connect(out(sampler, "frames"), preview, 0);
    const { output } = await window.app.graphToPrompt();
    await window.app.queuePrompt(0, 1);
    return { prompt: output, ids: { song: song_node.id, image: image.id, sampler: sampler.id, preview: preview.id } };
}"""


def _defaults(spec) -> tuple[str | None, object]:
    """(widget kind or None for a socket-only input, the default the frontend gives the widget)."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return None, None
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        return "COMBO", options.get("default", choices[0] if choices else None)
    if kind not in WIDGET_TYPES:
        return None, None
    fallback = {"INT": options.get("min", 0), "FLOAT": options.get("min", 0.0), "STRING": "", "BOOLEAN": False}[kind]
    return kind, options.get("default", fallback)


def _same(kind: str, got, want, spec) -> bool:
    if kind in ("INT", "FLOAT"):
        step = (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}).get("step", 1)
        return got is not None and math.isclose(float(got), float(want), abs_tol=max(1e-6, 0.5 * float(step or 1e-6)))
    return got == want


def _user_files(comfy_server) -> None:
    """Upload a song and a portrait as a user would (POST /upload/image, the frontend's upload route): the
    portrait is a frame of the singer the tiny stack was trained on."""
    import io

    import requests
    from PIL import Image

    from singer_core.audio.io import write_wav
    from singer_core.audio.synth import sing
    from singer_core.data.synthetic import SynthSingerConfig, generate_clip
    from singer_core.train.config import resolve_config
    from singer_core.train.singer import SingerTask

    song = sing(1.0, seed=7)
    song_path = comfy_server.base_dir / "upload.wav"
    write_wav(song_path, song.waveform, song.sample_rate)
    seed = resolve_config(SingerTask, "tiny", {}).synth_seed
    frame = generate_clip(SynthSingerConfig(clips=1, size=256, seconds=0.2, seed=seed), 0).frames[0].numpy()
    png = io.BytesIO()
    Image.fromarray(frame).save(png, format="PNG")
    for name, data, mime in ((USER_SONG, song_path.read_bytes(), "audio/wav"),
                             (USER_PORTRAIT, png.getvalue(), "image/png")):
        response = requests.post(comfy_server.base_url + "/upload/image", files={"image": (name, data, mime)},
                                 data={"type": "input", "overwrite": "true"}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["name"] == name


@pytest.fixture(scope="module")
def page_and_errors(comfy_server, open_frontend):
    _user_files(comfy_server)  # before the page loads: the combos list the input folder at load time
    with open_frontend("chromium_nodes") as (page, errors, _responses):
        yield page, errors



def test_every_registered_node_can_be_created_by_hand(comfy_server, page_and_errors, tmp_path):
    page, errors = page_and_errors
    info = comfy_server.get("/object_info").json()  # fresh: the input folder's files as the page listed them
    ours = sorted(name for name in info if name.startswith("Singer"))
    seen = len(errors)
    results = {entry["type"]: entry for entry in page.evaluate(CREATE_ALL)}
    assert sorted(results) == ours, "the frontend registered other node types than the server lists"
    thrown = [e for e in errors[seen:] if e["kind"] == "pageerror"]
    assert not thrown, "uncaught errors while creating the nodes:\n" + "\n".join(e["text"] for e in thrown)
    problems = []
    for node_id in ours:
        entry, node_info = results[node_id], info[node_id]
        if entry["error"]:
            problems.append(f"{node_id}: createNode threw {entry['error'].splitlines()[0]}")
            continue
        if entry["title"] != node_info["display_name"]:
            problems.append(f"{node_id}: title {entry['title']!r} != {node_info['display_name']!r}")
        widgets = {w["name"]: w for w in entry["widgets"]}
        if any(not w["name"] for w in entry["widgets"]):
            problems.append(f"{node_id}: a widget without a name: {entry['widgets']}")
        for section in ("required", "optional"):
            for name, spec in node_info["input"].get(section, {}).items():
                kind, default = _defaults(spec)
                if kind is None:
                    continue
                widget = widgets.get(name)
                if widget is None:
                    problems.append(f"{node_id}: no widget {name!r} (widgets: {sorted(widgets)})")
                elif not _same(kind, widget["value"], default, spec):
                    problems.append(f"{node_id}.{name}: widget value {widget['value']!r} != default {default!r}")
        # outputs are labelled by their display names, not their types
        if entry["outputs"] != node_info["output_name"]:
            problems.append(f"{node_id}: output labels {entry['outputs']} != {node_info['output_name']}")
        if any(label == kind for label, kind in zip(entry["outputs"], node_info["output"], strict=False)):
            problems.append(f"{node_id}: an output is labelled by its type: {entry['outputs']}")
    song = {w["name"]: w for w in results["SingerLoadAudio"]["widgets"]}
    for name in ("upload", "audioUI"):  # the frontend's own upload button and player
        if name not in song:
            problems.append(f"SingerLoadAudio: no {name!r} widget: {sorted(song)}")
    page.evaluate("() => window.app.canvas.ds && (window.app.canvas.ds.scale = 0.6, window.app.graph.setDirtyCanvas(true, true))")
    save_screenshot(page, tmp_path, "all_nodes")
    assert not problems, "\n".join(problems)


def test_load_song_with_a_users_song_and_portrait_runs_from_the_frontend(comfy_server, page_and_errors, tmp_path):
    import io

    from PIL import Image

    page, errors = page_and_errors
    seen, log_start = len(errors), len(comfy_server.log_text())
    fast = not os.environ.get("SINGER_THUMBNAILS")  # pictures for people: the model's own settings
    queued = page.evaluate(WIRE_AND_QUEUE, {"song": USER_SONG, "portrait": USER_PORTRAIT, "model": TINY_MODEL,
                                            "fast": fast})
    prompt = queued["prompt"]
    song_id = str(queued["ids"]["song"])
    assert prompt[song_id]["class_type"] == "SingerLoadAudio"
    assert prompt[song_id]["inputs"]["audio"] == USER_SONG
    # (frontend 1.27 also sends the player's empty value as `audioUI`, as for LoadAudio; the server ignores it)
    sampler = prompt[str(queued["ids"]["sampler"])]["inputs"]
    assert (sampler["steps"], sampler["clip_frames"]) == ((2, 4) if fast else (0, 0))

    # the frontend queued it: find that prompt in the history and wait for it
    entry, deadline = None, time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if "invalid prompt" in comfy_server.log_text()[log_start:]:
            pytest.fail(f"the server refused the frontend's prompt:\n{comfy_server.log_tail()}")
        history = comfy_server.get("/history").json()
        for item in history.values():
            graph = item.get("prompt", [None, None, {}])[2]
            if graph.get(song_id, {}).get("inputs", {}).get("audio") == USER_SONG and \
                    item.get("status", {}).get("status_str") in ("success", "error"):
                entry = item
        if entry is not None:
            break
        time.sleep(0.5)
    assert entry is not None, f"the queued prompt did not finish in {RUN_TIMEOUT_S:.0f} s:\n{comfy_server.log_tail()}"
    comfy_server.assert_success(entry)
    frames = entry["outputs"][str(queued["ids"]["preview"])]["images"]
    assert len(frames) == 25, "the user's 1 s of song at 25 fps gives 25 frames"
    first = Image.open(io.BytesIO(comfy_server.view_bytes(frames[0])))
    assert first.size == (256, 256)
    # the preview shows the frames; wait for the browser to draw them, then keep a picture
    page.wait_for_timeout(1500)
    page.evaluate("() => { const c = window.app.canvas; c.ds.scale = 0.75; c.ds.offset = [40, 90]; "
                  "window.app.graph.setDirtyCanvas(true, true); }")
    page.wait_for_timeout(500)
    save_screenshot(page, tmp_path, "load_song_user_portrait_run")
    thrown = [e for e in errors[seen:] if e["kind"] == "pageerror"]
    assert not thrown, "uncaught errors during the run:\n" + "\n".join(e["text"] for e in thrown)
