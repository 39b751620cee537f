"""The shipped workflows in ComfyUI's own frontend, driven in Debian chromium with playwright
(needs COMFYUI_PATH and /usr/bin/chromium; never downloads a browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.comfyui.screenshots import save_screenshot

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

PACK_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
PAGE_TIMEOUT_MS = 60_000

# 404s of the local server that a fresh user directory always gives.
HARMLESS_404 = re.compile(r"/(api/)?userdata\b|/user\.css$|/favicon\.ico$")


def is_noise(error: dict) -> bool:
    """Known harmless noise of a sandboxed frontend: failed lookups of external hosts (no network
    here) and the userdata/user.css/favicon 404s of a fresh user directory."""
    url = error.get("url") or ""
    host = urlparse(url).hostname
    if host and host not in ("127.0.0.1", "localhost"):
        return True
    return "status of 404" in error["text"] and bool(HARMLESS_404.search(urlparse(url).path))


# Collects the node types the frontend reports missing after every graph load.
MISSING_NODE_COLLECTOR = """() => {
    window.__singerMissing = [];
    window.app.registerExtension({
        name: "SingerTest.MissingNodeCollector",
        async afterConfigureGraph(missingNodeTypes) {
            window.__singerMissing.push(...(missingNodeTypes || []).map(
                (m) => (typeof m === "string" ? m : m.type)));
        },
    });
}"""

LOAD_AND_CONVERT = """async (wf) => {
    window.__singerMissing = [];
    const types = [...new Set(wf.nodes.map((n) => n.type))];
    const unregistered = types.filter((t) => !(t in LiteGraph.registered_node_types));
    await window.app.loadGraphData(JSON.parse(JSON.stringify(wf)));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { output } = await window.app.graphToPrompt();
    const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
    const boxes = window.app.graph._nodes.map((n) => ({
        id: n.id, type: n.type, box: [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title],
    }));
    return { unregistered, missing: window.__singerMissing, output, scale: window.app.canvas.ds.scale, boxes };
}"""


@pytest.fixture(scope="module")
def browser_page(open_frontend):
    """A chromium page on the server's frontend, with console/page errors collected."""
    with open_frontend("chromium_profile") as (page, errors, _responses):
        page.evaluate(MISSING_NODE_COLLECTOR)
        yield page, errors


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_and_converts_in_frontend(comfy_server, browser_page, workflow_path, tmp_path):
    page, errors = browser_page
    workflow = json.loads(workflow_path.read_text(encoding="utf-8"))

    seen_before = len(errors)
    result = page.evaluate(LOAD_AND_CONVERT, workflow)

    # 1. every node type is known to the frontend
    assert not result["unregistered"], f"node types not registered in LiteGraph: {result['unregistered']}"
    assert not result["missing"], f"afterConfigureGraph reported missing node types: {result['missing']}"

    # 2. the frontend's API prompt carries our nodes with the workflow's widget values
    output = result["output"]
    expected = comfy_server.workflow_to_prompt(workflow)
    our_nodes = [node for node in workflow["nodes"] if node["type"].startswith("Singer")]
    assert our_nodes, f"{workflow_path.name} uses none of the pack's nodes"
    for node in our_nodes:
        node_id = str(node["id"])
        assert node_id in output, f"node {node_id} ({node['type']}) is missing from graphToPrompt()"
        got = output[node_id]
        assert got["class_type"] == node["type"]
        # the frontend's inputs (widgets and links) equal what our converter reads from the JSON,
        # which skips UI-only entries such as a seed's control_after_generate value
        assert got["inputs"] == expected[node_id]["inputs"], (
            f"node {node_id}: frontend inputs {got['inputs']} != workflow {expected[node_id]['inputs']}")
    for node_id, node in expected.items():  # the test converter agrees with the frontend everywhere
        assert output.get(node_id, {}).get("class_type") == node["class_type"]
        for name, value in node["inputs"].items():
            assert output[node_id]["inputs"].get(name) == value, f"node {node_id} input {name!r}"

    # 3. readable as it opens: zoom >= 75 % and no node drawn over another
    assert result["scale"] >= 0.75, f"{workflow_path.name} opens at {result['scale']:.0%} zoom"
    overlaps = [(a["type"], b["type"]) for i, a in enumerate(result["boxes"]) for b in result["boxes"][i + 1:]
                if _overlap(a["box"], b["box"])]
    assert not overlaps, f"{workflow_path.name}: nodes drawn over each other: {overlaps}"

    # 4. a picture for people
    save_screenshot(page, tmp_path, workflow_path.stem)

    # 5. no errors from the pack, and no uncaught exception while our workflow loaded
    real = [e for e in errors if not is_noise(e)]
    pack_pattern = re.compile(rf"singer|{re.escape(comfy_server.pack_dir_name)}", re.IGNORECASE)
    ours_errors = [e for e in real if pack_pattern.search(e["text"] + " " + e["url"])]
    assert not ours_errors, "frontend errors that mention the pack:\n" + _format(ours_errors)
    during_load = [e for e in errors[seen_before:] if e["kind"] == "pageerror" and not is_noise(e)]
    assert not during_load, f"uncaught exceptions while {workflow_path.name} loaded:\n" + _format(during_load)
    if real:
        print("frontend errors, not the pack's (reported, not failed):\n" + _format(real))


def _overlap(a: list[float], b: list[float]) -> bool:
    """Whether two [x, y, w, h] boxes share area."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _format(errors: list[dict]) -> str:
    return "\n".join(f"  {e['kind']}: {e['text'].strip()} {e['url']}".rstrip() for e in errors)
