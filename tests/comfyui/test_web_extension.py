"""The pack's web extension (web/js) in ComfyUI's own frontend, driven in Debian chromium with playwright:
the files load, the sub-band viewer draws a queued prompt's result, and the audio / video previews
play files written by nodes/web_preview.py (needs COMFYUI_PATH and /usr/bin/chromium; never
downloads a browser). Screenshots go to a pytest temp folder (paths printed; copied to
$SINGER_ARTIFACTS when set)."""

from __future__ import annotations

import dataclasses
import importlib
import io
import math
import os
import re
import shutil
import sys
import types
import wave
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import torch

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install playwright)")

PACK_ROOT = Path(__file__).resolve().parents[2]
WEB_FILES = sorted(p.name for p in (PACK_ROOT / "web" / "js").glob("*.js"))
OUR_EXTENSIONS = ("Singer.SubbandViewer", "Singer.AudioPreview", "Singer.VideoPreview")
PAGE_TIMEOUT_MS = 60_000
WIDGET_TIMEOUT_MS = 30_000
BACKGROUND = (24, 24, 24)  # the viewer's #181818
GRID_BACKGROUND = 24  # visualize.subband_grid's canvas grey


@dataclasses.dataclass
class WebPage:
    page: object  # playwright Page
    errors: list  # {kind, text, url}
    responses: list  # (url, status)
    shots: Path  # screenshot folder

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        path = self.shots / f"{name}.png"
        if selector and self.page.locator(selector).first.is_visible():
            self.page.locator(selector).first.screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path))
        artifacts = os.environ.get("SINGER_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(artifacts) / path.name)
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="module")
def web_page(open_frontend, tmp_path_factory):
    """A chromium page on the server's frontend with our extensions registered; console errors, page
    errors and every response status are collected."""
    shots = tmp_path_factory.mktemp("web_screenshots")
    with open_frontend("chromium_profile_web") as (page, errors, responses):
        page.wait_for_function(
            "(names) => names.every((n) => window.app.extensions.some((e) => e.name === n))",
            arg=list(OUR_EXTENSIONS), timeout=PAGE_TIMEOUT_MS)
        yield WebPage(page, errors, responses, shots)


def _ours(comfy_server, text: str) -> bool:
    return bool(re.search(rf"singer|{re.escape(comfy_server.pack_dir_name)}", text, re.IGNORECASE))


def _pack_errors(comfy_server, web: WebPage) -> list[dict]:
    return [e for e in web.errors if _ours(comfy_server, e["text"] + " " + e["url"])]


def _assert_no_pack_errors(comfy_server, web: WebPage) -> None:
    errors = _pack_errors(comfy_server, web)
    assert not errors, "frontend errors that mention the pack:\n" + "\n".join(
        f"  {e['kind']}: {e['text'].strip()} {e['url']}" for e in errors)


def _served(comfy_server, url: str) -> object:
    """GET a URL the page uses (made absolute) from the test process."""
    import requests

    parsed = urlparse(url)
    response = requests.get(comfy_server.base_url + parsed.path, params=parse_qs(parsed.query), timeout=10)
    return response


# -- the graph in the page ---------------------------------------------------------------------

ADD_NODE = """([type, x, y, values]) => {
    const node = LiteGraph.createNode(type);
    node.pos = [x, y];
    window.app.graph.add(node);
    for (const [name, value] of Object.entries(values || {})) {
        const widget = node.widgets.find((w) => w.name === name);
        if (!widget) throw new Error(`${type} has no widget ${name}`);
        widget.value = value;
    }
    return node.id;
}"""

RESET_GRAPH = """() => {
    window.app.graph.clear();
    const ds = window.app.canvas.ds;
    ds.scale = 1;
    ds.offset = [0, 0];
    window.app.graph.setDirtyCanvas(true, true);
}"""

CANVAS_STATS = """([selector, background]) => {
    const canvas = document.querySelector(selector);
    const { width, height } = canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    let filled = 0;
    const colours = new Set();
    let hash = 0;
    for (let i = 0; i < data.length; i += 4) {
        const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
        const distance = Math.abs(r - background[0]) + Math.abs(g - background[1])
            + Math.abs(b - background[2]);
        if (distance > 12) filled += 1;
        colours.add((r >> 3) * 1024 + (g >> 3) * 32 + (b >> 3));
        hash = (hash * 31 + r + 7 * g + 13 * b) >>> 0;
    }
    return { width, height, filled: filled / (width * height), colours: colours.size, hash };
}"""


def _node_selector(kind: str) -> str:
    return f".singer-{kind}"


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# -- 1. the extension files --------------------------------------------------------------------

def test_extension_files_are_served_and_load_without_errors(comfy_server, web_page):
    listed = comfy_server.get("/extensions").json()
    prefix = f"/extensions/{comfy_server.pack_dir_name}/js/"
    ours = sorted(url[len(prefix):] for url in listed if url.startswith(prefix))
    assert ours == WEB_FILES, f"/extensions lists {ours}, web/js holds {WEB_FILES}"

    loaded = {urlparse(url).path: status for url, status in web_page.responses if prefix in url}
    for name in WEB_FILES:
        assert loaded.get(prefix + name) == 200, f"{name}: the page got {loaded.get(prefix + name)} for it"
        response = comfy_server.get(prefix + name)
        assert response.status_code == 200 and "javascript" in response.headers.get("Content-Type", "")
    bad = [(url, status) for url, status in web_page.responses if prefix in url and status != 200]
    assert not bad, f"extension requests that failed: {bad}"
    names = web_page.page.evaluate("() => window.app.extensions.map((e) => e.name)")
    for name in OUR_EXTENSIONS:
        assert names.count(name) == 1, f"{name} registered {names.count(name)} times"
    _assert_no_pack_errors(comfy_server, web_page)


# -- 2. the sub-band viewer on a queued prompt -------------------------------------------------

@pytest.fixture(scope="module")
def subband_run(comfy_server, web_page):
    """SingerSynthSong (2 s) -> SingerWaveletSubbands (3 levels) -> PreviewImage, queued from the page."""
    page = web_page.page
    page.evaluate(RESET_GRAPH)
    song = page.evaluate(ADD_NODE, ["SingerSynthSong", 20, 40,
                                    {"seconds": 2.0, "seed": 3, "sample_rate": "16000"}])
    view = page.evaluate(ADD_NODE, ["SingerWaveletSubbands", 420, 40, {"levels": 3, "cell_height": 64}])
    preview = page.evaluate(ADD_NODE, ["PreviewImage", 1000, 40, {}])
    page.evaluate("""([a, b, c]) => {
        const g = window.app.graph;
        g.getNodeById(a).connect(0, g.getNodeById(b), 0);
        g.getNodeById(b).connect(0, g.getNodeById(c), 0);
    }""", [song, view, preview])
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as posted:
        page.evaluate("() => window.app.queuePrompt(0, 1)")
    body = posted.value.json()
    assert not body.get("node_errors"), body
    entry = comfy_server.wait_for_history(body["prompt_id"])
    comfy_server.assert_success(entry)
    return {"song": song, "view": view, "preview": preview, "outputs": entry["outputs"]}


def test_subband_payload_matches_the_image_output(comfy_server, subband_run):
    outputs = subband_run["outputs"]
    payload = outputs[str(subband_run["view"])]["singer_subbands"]
    assert len(payload) == 1 and payload[0]["type"] == "temp" and payload[0]["levels"] == 3
    ours = _png(comfy_server.view_bytes(payload[0]))
    grid = _png(comfy_server.view_bytes(outputs[str(subband_run["preview"])]["images"][0]))
    assert ours.shape == grid.shape == (payload[0]["height"], payload[0]["width"], 3)
    # PreviewImage re-quantises the float IMAGE (x / 255 * 255, truncated): one grey level at most
    assert np.abs(ours.astype(int) - grid.astype(int)).max() <= 1

    # the cell boxes sit exactly on the grid's cells: inside a box is picture, the gap column left of
    # it and the gap row under it are the grid's plain background
    cells = payload[0]["cells"]
    expected = [(level, band) for level in (1, 2, 3) for band in ("LL", "LH", "HL", "HH")]
    assert [(c["level"], c["band"]) for c in cells] == expected
    for cell in cells:
        x, y, w, h = cell["x"], cell["y"], cell["w"], cell["h"]
        inside = grid[y:y + h, x:x + w]
        assert inside.shape == (h, w, 3) and h == 64
        assert (np.abs(inside.astype(int) - GRID_BACKGROUND).max(axis=-1) > 3).mean() > 0.5, cell
        assert np.all(np.abs(grid[y:y + h, x - 1].astype(int) - GRID_BACKGROUND) <= 1), f"left gap of {cell}"
        assert np.all(np.abs(grid[y + h, x:x + w].astype(int) - GRID_BACKGROUND) <= 1), f"gap under {cell}"


def test_subband_viewer_draws_toggles_and_zooms(comfy_server, web_page, subband_run):
    page = web_page.page
    view = subband_run["view"]
    node = f"window.app.graph.getNodeById({view}).singerSubbandViewer"
    page.wait_for_function(f"() => {node}.drawCount > 0 && {node}.layout.levels.length === 3",
                           timeout=WIDGET_TIMEOUT_MS)
    layout = page.evaluate(f"() => {node}.layout")
    assert layout == {"levels": [1, 2, 3], "bands": ["LL", "LH", "HL", "HH"]}
    selector = _node_selector("subband-viewer") + " canvas"
    stats = page.evaluate(CANVAS_STATS, [selector, list(BACKGROUND)])
    assert stats["width"] > 100 and stats["height"] > 100, stats
    assert stats["filled"] > 0.15 and stats["colours"] > 30, f"the viewer canvas looks blank: {stats}"
    web_page.screenshot("subband_viewer", _node_selector("subband-viewer"))

    # toggles: the buttons in the widget switch bands and levels off
    viewer = page.locator(_node_selector("subband-viewer"))
    viewer.get_by_role("button", name="HH", exact=True).click()
    viewer.get_by_role("button", name="L3", exact=True).click()
    assert page.evaluate(f"() => {node}.layout") == {"levels": [1, 2], "bands": ["LL", "LH", "HL"]}
    toggled = page.evaluate(CANVAS_STATS, [selector, list(BACKGROUND)])
    assert toggled["hash"] != stats["hash"] and toggled["filled"] > 0.15
    web_page.screenshot("subband_viewer_toggled", _node_selector("subband-viewer"))

    # wheel zoom on the canvas zooms the view (not the graph)
    graph_scale = page.evaluate("() => window.app.canvas.ds.scale")
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] / 3)
    page.mouse.wheel(0, -600)
    page.wait_for_function(f"() => {node}.zoom > 1.5", timeout=WIDGET_TIMEOUT_MS)
    zoomed = page.evaluate(CANVAS_STATS, [selector, list(BACKGROUND)])
    assert zoomed["hash"] != toggled["hash"] and zoomed["filled"] > 0.5, zoomed
    assert page.evaluate("() => window.app.canvas.ds.scale") == graph_scale
    web_page.screenshot("subband_viewer_zoomed", _node_selector("subband-viewer"))
    page.evaluate(f"() => {{ {node}.setBand('HH', true); {node}.setLevel(3, true); {node}.resetView(); }}")

    # the workflow and the API prompt are unchanged by the widget (it is never serialised)
    got = page.evaluate(f"""async () => {{
        const node = window.app.graph.getNodeById({view});
        const {{ output }} = await window.app.graphToPrompt();
        return {{ values: node.serialize().widgets_values, inputs: Object.keys(output["{view}"].inputs),
                 widgets: node.widgets.map((w) => w.name) }};
    }}""")
    assert got["widgets"][-1] == "singer_subband_viewer" and "singer_subband_viewer" not in got["inputs"]
    # one value per real widget, no hole or trailing entry for the viewer
    assert len(got["values"]) == len(got["widgets"]) - 1 and None not in got["values"], got
    _assert_no_pack_errors(comfy_server, web_page)


# -- 3. audio and video previews ---------------------------------------------------------------

def _web_preview_module():
    """nodes/web_preview.py without ComfyUI: the pack is mounted as a throw-away package whose ``nodes``
    sub-package skips nodes/__init__.py (which needs comfy_api)."""
    root = "singer_pack_under_test"
    if root not in sys.modules:
        package = types.ModuleType(root)
        package.__path__ = [str(PACK_ROOT)]
        sys.modules[root] = package
        nodes = types.ModuleType(f"{root}.nodes")
        nodes.__path__ = [str(PACK_ROOT / "nodes")]
        sys.modules[f"{root}.nodes"] = nodes
    return importlib.import_module(f"{root}.nodes.web_preview")


def _temp_dir(comfy_server) -> Path:
    return comfy_server.base_dir / "temp"  # folder_paths.temp_directory under --base-directory


def _tone(seconds: float, rate: int, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    envelope = torch.clamp(t / seconds * 2, max=1.0)  # a ramp, so the waveform is not a flat band
    left = 0.8 * envelope * torch.sin(2 * math.pi * 220.0 * t)
    voices = [left, 0.3 * torch.sin(2 * math.pi * 330.0 * t)][:channels]
    return torch.stack(voices).float()


def _inject(page, node_type: str, x: int, payload: dict) -> int:
    node_id = page.evaluate(ADD_NODE, [node_type, x, 520, {}])
    page.evaluate("([id, output]) => window.app.graph.getNodeById(id).onExecuted(output)", [node_id, payload])
    return node_id


def test_audio_preview_draws_the_waveform_and_plays(comfy_server, web_page):
    web_preview = _web_preview_module()
    rate = 16000
    waveform = _tone(1.5, rate)
    entries = web_preview.write_audio_preview({"waveform": waveform[None], "sample_rate": rate},
                                              _temp_dir(comfy_server), prefix="test_audio", label="song")
    assert len(entries) == 1 and entries[0]["type"] == "temp" and entries[0]["seconds"] == 1.5
    page = web_page.page
    node_id = _inject(page, "SingerSynthSong", 20, {web_preview.AUDIO_KEY: entries})
    preview = f"window.app.graph.getNodeById({node_id}).singerAudioPreview"
    ready = page.evaluate(f"async () => await {preview}.ready")
    assert ready is True, page.evaluate(f"() => {preview}.error")

    # the <audio> element plays the file the server serves
    src = page.evaluate(f"() => {preview}.audio.src")
    response = _served(comfy_server, src)
    assert response.status_code == 200
    written = (_temp_dir(comfy_server) / entries[0]["filename"]).read_bytes()
    assert response.content == written

    # waveform: the JS min/max per column equal numpy's over the WAV's own samples
    with wave.open(io.BytesIO(written)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    samples = pcm.astype(np.float64) / 32768.0
    peaks = np.asarray(page.evaluate(f"() => Array.from({preview}.peaks)")).reshape(-1, 2)
    columns = len(peaks)
    edges = [(c * len(samples)) // columns for c in range(columns + 1)]
    expected = np.array([[samples[a:max(b, a + 1)].min(), samples[a:max(b, a + 1)].max()]
                         for a, b in zip(edges[:-1], edges[1:], strict=True)])
    assert np.abs(peaks - expected).max() < 1e-4
    assert abs(page.evaluate(f"() => {preview}.duration") - 1.5) < 1e-3

    # this node's widget (other nodes of the page, e.g. the executed Synth Song, have previews too)
    own = f"#singer-test-audio-{node_id}"
    page.evaluate(f"() => {{ {preview}.element.id = 'singer-test-audio-{node_id}'; }}")
    stats = page.evaluate(CANVAS_STATS, [own + " canvas", [16, 20, 24]])
    assert stats["filled"] > 0.1, f"the waveform canvas looks blank: {stats}"
    web_page.screenshot("audio_preview", own)

    # play: the button starts the element and time moves on
    page.locator(own).get_by_role("button").first.click()
    page.wait_for_function(f"() => {preview}.audio.currentTime > 0.05", timeout=WIDGET_TIMEOUT_MS)
    page.evaluate(f"() => {preview}.audio.pause()")
    _assert_no_pack_errors(comfy_server, web_page)


def test_video_preview_plays_the_mp4_with_sound(comfy_server, web_page):
    web_preview = _web_preview_module()
    frames_count, fps, size = 20, 25.0, 64
    ramp = torch.linspace(0, 1, size)
    frames = torch.stack([torch.stack([ramp[None].expand(size, size), ramp[:, None].expand(size, size),
                                       torch.full((size, size), i / frames_count)], dim=-1)
                          for i in range(frames_count)])
    rate = 16000
    audio = {"waveform": _tone(frames_count / fps, rate, channels=2)[None], "sample_rate": rate}
    entry = web_preview.write_video_preview(frames, fps, _temp_dir(comfy_server), audio=audio,
                                            prefix="test_video")
    assert entry["frames"] == frames_count and entry["has_audio"] and entry["width"] == size

    page = web_page.page
    node_id = _inject(page, "SingerRenderMotion", 420, {web_preview.VIDEO_KEY: [entry]})
    video = f"window.app.graph.getNodeById({node_id}).singerVideoPreview.video"
    src = page.evaluate(f"() => {video}.src")
    response = _served(comfy_server, src)
    assert response.status_code == 200 and response.content[4:8] == b"ftyp"
    assert response.content == (_temp_dir(comfy_server) / entry["filename"]).read_bytes()

    playable = page.evaluate(
        "() => document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E, mp4a.40.2\"')")
    if not playable:
        web_page.screenshot("video_preview_unplayable", _node_selector("video-preview"))
        pytest.skip("this chromium build cannot play H.264/AAC mp4 (no proprietary codecs); "
                    "the file is served")
    page.wait_for_function(f"() => {video}.readyState >= 2", timeout=WIDGET_TIMEOUT_MS)
    meta = page.evaluate(f"() => ({{ w: {video}.videoWidth, h: {video}.videoHeight, d: {video}.duration }})")
    assert meta["w"] == size and meta["h"] == size
    assert abs(meta["d"] - frames_count / fps) < 0.1, meta
    web_page.screenshot("video_preview", _node_selector("video-preview"))
    _assert_no_pack_errors(comfy_server, web_page)


def test_queued_nodes_send_audio_and_video_previews(comfy_server, web_page, subband_run):
    """End to end once the audio/face nodes call nodes/web_preview.py (skips until they do)."""
    song_output = subband_run["outputs"].get(str(subband_run["song"]), {})
    if "singer_audio" not in song_output:
        pytest.skip("SingerSynthSong sends no singer_audio ui payload yet "
                    "(call audio_preview_ui in nodes/audio.py)")
    page = web_page.page
    preview = f"window.app.graph.getNodeById({subband_run['song']}).singerAudioPreview"
    page.wait_for_function(f"() => {preview} && {preview}.peaks", timeout=WIDGET_TIMEOUT_MS)
    assert _served(comfy_server, page.evaluate(f"() => {preview}.audio.src")).status_code == 200
