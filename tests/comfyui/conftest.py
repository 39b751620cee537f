"""Fixtures that run the pack inside a real ComfyUI server (see /work/shared/COMFYUI.md).

The checkout comes from ``COMFYUI_PATH`` and the Python that runs it from ``COMFYUI_PYTHON``
(default: the interpreter running pytest). ``COMFYUI_FRONTEND_ROOT`` serves another frontend with
ComfyUI's ``--front-end-root``: a ``static`` folder, or an unpacked ``comfyui-frontend-package`` wheel
(e.g. ``pip download comfyui-frontend-package==1.58.1`` and unzip it); default: the checkout's own.
``SINGER_TEST_DEMO_MODELS=out/models`` reuses the models ``make demo`` trained instead of training tiny ones;
with ``SINGER_THUMBNAILS=DIR`` the shipped-workflow test runs the real settings and writes
``<title>.jpg`` there. Without a checkout every test here skips with a reason. ComfyUI is never imported into the test process: the server runs as a subprocess in a
throw-away base directory whose ``custom_nodes/`` holds a symlink to this repository.

Helpers are methods of the session ``comfy_server`` object (``--import-mode=importlib`` does
not let test modules import this conftest): ``queue_prompt``, ``wait_for_history``,
``run_prompt``, ``object_info``, ``workflow_to_prompt``, ``view_bytes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parents[2]  # tests/comfyui/conftest.py -> repository root
PACK_LINK_NAME = "comfyui-singer"  # the pack's folder name inside custom_nodes/
SONG_NAME = "singer_example_song.wav"  # the file the shipped workflows load
TINY_MOTION_MODEL = "motion-demo"  # the model the motion workflow loads: `make demo`'s, from the demo folder
SHORT_SONG_NAME = "singer_short_song.wav"  # 0.2 s: too short for deep decompositions

STARTUP_TIMEOUT_S = 120.0
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the browser tests never download one
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
PAGE_TIMEOUT_MS = 60_000
PROMPT_TIMEOUT_S = 180.0  # a cold first run of a video workflow on 2 busy CPU cores
HTTP_TIMEOUT_S = 10.0

# Input types the frontend draws as widgets (their values live in ``widgets_values``).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Options that make the frontend add an "upload" button widget after the required inputs.
UPLOAD_OPTIONS = ("image_upload", "audio_upload", "video_upload", "animated_image_upload")
# Nodes the frontend gives an extra "audioUI" player widget (frontend 1.27, Comfy.AudioWidget).
AUDIO_UI_NODES = {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus",
                  "SingerLoadAudio"}  # ours: web/js/load_song.js
# UI-only nodes that never reach the server.
UI_ONLY_NODES = {"Note", "MarkdownNote"}


def comfyui_path_or_skip() -> Path:
    """The ComfyUI checkout named by COMFYUI_PATH, or skip the calling test with the reason."""
    raw = os.environ.get("COMFYUI_PATH", "").strip()
    if not raw:
        pytest.skip("COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the real-ComfyUI tests")
    path = Path(raw).expanduser().resolve()
    if not (path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={raw!r} is not a ComfyUI checkout (no main.py there)")
    return path


def frontend_root_or_none() -> Path | None:
    """The frontend folder named by COMFYUI_FRONTEND_ROOT (its ``index.html`` folder), or None for the
    checkout's pinned frontend. Fails (not skips) when the variable names something else."""
    raw = os.environ.get("COMFYUI_FRONTEND_ROOT", "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    for candidate in (path, path / "static", path / "comfyui_frontend_package" / "static"):
        if (candidate / "index.html").is_file():
            return candidate
    pytest.fail(f"COMFYUI_FRONTEND_ROOT={raw!r} holds no frontend (no index.html in it, in static/ or in "
                "comfyui_frontend_package/static/): unzip a comfyui-frontend-package wheel there")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_song(path: Path, seconds: float, seed: int) -> None:
    from singer_core.audio.io import write_wav
    from singer_core.audio.synth import sing

    song = sing(seconds, seed=seed)
    write_wav(path, song.waveform, song.sample_rate)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"<could not read {path}: {error}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass
class ComfyServer:
    """A running ComfyUI server and the helpers the tests use to talk to it."""

    base_url: str  # e.g. http://127.0.0.1:43121
    base_dir: Path  # the --base-directory (custom_nodes/, input/, output/, user/)
    log_path: Path  # stdout + stderr of the server
    process: subprocess.Popen
    pack_dir_name: str = PACK_LINK_NAME  # the pack's folder name under custom_nodes/
    client_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    _object_info: dict | None = None

    # -- plumbing -----------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def get(self, route: str, **params):
        import requests

        return requests.get(self.base_url + route, params=params or None, timeout=HTTP_TIMEOUT_S)

    def object_info(self) -> dict:
        if self._object_info is None:
            response = self.get("/object_info")
            response.raise_for_status()
            self._object_info = response.json()
        return self._object_info

    # -- prompts ------------------------------------------------------------------------
    def queue_prompt(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id, or fails with the server's validation errors."""
        import requests

        response = requests.post(
            self.base_url + "/prompt",
            json={"prompt": prompt, "client_id": self.client_id},
            timeout=HTTP_TIMEOUT_S,
        )
        if response.status_code != 200:
            pytest.fail(f"POST /prompt answered {response.status_code}: {response.text}")
        body = response.json()
        if body.get("node_errors"):
            pytest.fail(f"POST /prompt reported node errors: {body['node_errors']}")
        return body["prompt_id"]

    def wait_for_history(self, prompt_id: str, timeout_s: float = PROMPT_TIMEOUT_S) -> dict:
        """Poll GET /history/{id} until the prompt finished; returns its history entry
        (``outputs``, ``status`` with ``status_str`` and ``messages``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ComfyUI exited (code {self.process.returncode}) while running "
                            f"{prompt_id}; log tail:\n{self.log_tail()}")
            response = self.get(f"/history/{prompt_id}")
            response.raise_for_status()
            entry = response.json().get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.2)
        pytest.fail(f"prompt {prompt_id} did not finish within {timeout_s:.0f} s; log tail:\n{self.log_tail()}")

    def run_prompt(self, prompt: dict, timeout_s: float = PROMPT_TIMEOUT_S) -> dict:
        """Queue ``prompt`` and wait for it; returns the history entry."""
        return self.wait_for_history(self.queue_prompt(prompt), timeout_s)

    def view_bytes(self, image: dict) -> bytes:
        """GET /view for one entry of an output node's ``images`` list."""
        response = self.get("/view", filename=image["filename"], type=image.get("type", "output"),
                            subfolder=image.get("subfolder", ""))
        response.raise_for_status()
        return response.content

    # -- results ------------------------------------------------------------------------
    @staticmethod
    def execution_error(entry: dict) -> dict | None:
        """The ``execution_error`` message of a history entry, or None."""
        for kind, data in entry.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        return None

    def assert_success(self, entry: dict) -> None:
        """Fail with the node type and message when a prompt did not succeed."""
        status, error = entry.get("status", {}), self.execution_error(entry)
        assert status.get("status_str") == "success", (
            f"prompt failed: {error.get('node_type')}: {error.get('exception_message')}" if error
            else f"status {status}")

    # -- UI workflow -> API prompt ------------------------------------------------------
    def workflow_to_prompt(self, workflow: dict) -> dict:
        return workflow_to_prompt(workflow, self.object_info())

    @staticmethod
    def with_fast_values(prompt: dict) -> dict:
        """The prompt with the tests' fast values set explicitly (the shipped workflows carry the real ones):
        2 DDIM steps without guidance for Sample SINGER Video and a 0.6 s clip to animate; a 1.2 s song for the
        NeRF. Clip length stays auto (the model's own). With SINGER_THUMBNAILS set (thumbnails of the real
        settings) the prompt is left as shipped."""
        if os.environ.get("SINGER_THUMBNAILS"):
            return prompt
        kinds = {node["class_type"] for node in prompt.values()}
        for node in prompt.values():
            inputs = node["inputs"]
            if node["class_type"] == "SingerSampleVideo":
                inputs.update(steps=2, cfg=1.0)
            elif node["class_type"] == "SingerSynthSinger" and "SingerSampleVideo" in kinds:
                inputs["seconds"] = 0.6
            elif node["class_type"] == "SingerSynthSong" and "SingerNeRFRender" in kinds:
                inputs["seconds"] = 1.2
        return prompt


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (``nodes`` + ``links``) to an API prompt.

    Links: ``links`` rows are ``[link_id, from_node, from_slot, to_node, to_slot, type]``; the
    target input is named by ``to_node``'s ``inputs[to_slot]``; its value is
    ``[str(from_node), from_slot]``.

    Widgets: the frontend keeps one ``widgets_values`` entry per widget input, in
    ``/object_info`` order (required, then optional), *also* for widget inputs that are
    connected by a link (the link wins). Inputs of link-only types (AUDIO, IMAGE, ...) and
    ``forceInput`` inputs have no entry. Extra UI-only entries are skipped: the
    ``control_after_generate`` value after a seed (or any input that asks for one), and the
    ``upload`` / ``audioUI`` widgets the frontend appends after the required inputs.
    """
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links: dict[int, tuple] = {}
    for row in workflow.get("links", []):
        link_id, from_node, from_slot, to_node, to_slot = row[:5]
        links[link_id] = (from_node, from_slot, to_node, to_slot)

    prompt: dict[str, dict] = {}
    for node_id, node in nodes.items():
        class_type = node["type"]
        if class_type in UI_ONLY_NODES or node.get("mode", 0) == 2:  # notes, muted nodes
            continue
        if node.get("mode", 0) == 4:
            pytest.fail(f"workflow node {node_id} ({class_type}) is bypassed; the test converter does not "
                        "resolve bypasses")
        if class_type not in object_info:
            pytest.fail(f"workflow node {node_id} uses {class_type!r}, which the server does not know")
        info = object_info[class_type]
        inputs: dict[str, object] = {}

        # 1. links
        for slot in node.get("inputs", []):
            link_id = slot.get("link")
            if link_id is None:
                continue
            from_node, from_slot, to_node, _ = links[link_id]
            if to_node != node_id:
                pytest.fail(f"link {link_id} does not end at node {node_id}")
            if nodes[from_node]["type"] in ("Reroute", "PrimitiveNode"):
                pytest.fail(f"node {node_id}: links from {nodes[from_node]['type']} are not supported here")
            inputs[slot["name"]] = [str(from_node), from_slot]

        # 2. widget values, in /object_info input order
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            pytest.fail(f"node {node_id} ({class_type}): dict-style widgets_values are not supported")
        order = info.get("input_order") or {key: list(info["input"].get(key, {})) for key in ("required", "optional")}
        index = 0
        for section in ("required", "optional"):
            specs = info["input"].get(section, {})
            for name in order.get(section, []):
                spec = specs[name]
                kind = spec[0]
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                is_widget = (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")
                if not is_widget:
                    continue
                if index >= len(values):
                    pytest.fail(f"node {node_id} ({class_type}): no widget value for input {name!r} "
                                f"(widgets_values={values})")
                if name not in inputs:  # a linked widget input keeps its stale value; the link wins
                    inputs[name] = values[index]
                index += 1
                if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
                    index += 1
            if section == "required":
                if any(isinstance(s, list) and len(s) > 1 and isinstance(s[1], dict)
                       and any(s[1].get(key) for key in UPLOAD_OPTIONS) for s in specs.values()):
                    index += 1
                if class_type in AUDIO_UI_NODES:
                    index += 1
        prompt[str(node_id)] = {"class_type": class_type, "inputs": inputs}
    return prompt


def _train_tiny_motion_model(target: Path, runs: Path) -> None:
    """The motion workflow's model: the trainer's `demo` preset (about a CPU minute; the mouth follows the sung
    vowels), where `make demo` leaves it (<demo models>/motion-demo/, listed by the loader without copying)."""
    import shutil

    from singer_core.train.loop import train

    final = train("motion", preset="demo", out=runs / "motion", cache_dir=runs / "cache", device="cpu", quiet=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(final, target)


def _build_tiny_video_models(base_dir: Path, demo_models: Path) -> None:
    """The NeRF and SINGER workflows' models, where `make demo` leaves them (SINGER_DEMO_MODELS, listed by the
    loaders without copying): a NeRF trained for a few steps on a SynthSinger subject (nerf-demo/) and the tiny
    SINGER stack (singer-demo/), trained for two steps: enough to run the workflows end to end, not to look good.
    The SINGER node tests also place a copy where users put theirs (models/singer/singer-tiny/)."""
    import shutil

    from singer_core.demo.nerf_subject import train_demo_nerf
    from singer_core.demo.singer_stack import build_tiny_stack

    train_demo_nerf(demo_models / "nerf-demo", cache_dir=base_dir / "runs" / "nerf", steps=40)
    build_tiny_stack(demo_models / "singer-demo", cache_dir=base_dir / "runs" / "singer", steps=2, small_data=True)
    shutil.copytree(demo_models / "singer-demo", base_dir / "models" / "singer" / "singer-tiny")
    _train_tiny_frame_model(demo_models / "frames-demo", base_dir / "runs")


def _train_tiny_frame_model(target: Path, runs: Path) -> None:
    """The FD2Talk portrait workflow's frame model (<demo models>/frames-demo/, as `make demo` leaves it): the frames task's tiny preset on
    a little SynthSinger, a few steps of the VAE, the frame autoencoder and the UNet (runs the workflow end to end,
    does not look good)."""
    import shutil

    from singer_core.train.loop import train

    final = train("frames", preset="tiny", config={"steps": 2, "vae_steps": 2, "autoencoder_steps": 2,
                                                   "synth_clips": 2, "synth_seconds": 0.4, "synth_clips_per_identity": 2,
                                                   "checkpoint_every": 2},
                  out=runs / "frames", cache_dir=runs / "cache", device="cpu", quiet=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(final, target)


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    return comfyui_path_or_skip()


@pytest.fixture(scope="session")
def comfy_server(comfyui_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A ComfyUI server on a free loopback port, with this pack in custom_nodes/."""
    import requests

    python = os.environ.get("COMFYUI_PYTHON") or sys.executable

    # 1. base directory: custom_nodes/<pack link>, input/ with the test songs, seeded settings
    base_dir = tmp_path_factory.mktemp("comfy_base")
    (base_dir / "custom_nodes").mkdir()
    (base_dir / "custom_nodes" / PACK_LINK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    (base_dir / "input").mkdir()
    _write_song(base_dir / "input" / SONG_NAME, 3.0, seed=1)
    _write_song(base_dir / "input" / SHORT_SONG_NAME, 0.2, seed=2)
    demo_models = base_dir / "demo_models"  # stands in for <pack>/out/models of `make demo` (SINGER_DEMO_MODELS)
    given = os.environ.get("SINGER_TEST_DEMO_MODELS")  # reuse `make demo`'s out/models (thumbnails, quick reruns)
    if given:
        demo_models.mkdir()
        for name in (TINY_MOTION_MODEL, "nerf-demo", "singer-demo", "frames-demo"):
            (demo_models / name).symlink_to(Path(given).resolve() / name, target_is_directory=True)
        (base_dir / "models" / "singer").mkdir(parents=True)
        (base_dir / "models" / "singer" / "singer-tiny").symlink_to(Path(given).resolve() / "singer-demo")
    else:
        _train_tiny_motion_model(demo_models / TINY_MOTION_MODEL, base_dir / "runs")
        _build_tiny_video_models(base_dir, demo_models)
    settings = base_dir / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))

    # 2. start the server
    port = _free_port()
    log_path = base_dir / "comfyui.log"
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base_dir), "--database-url", "sqlite:///:memory:"]
    frontend = frontend_root_or_none()
    if frontend is not None:
        command += ["--front-end-root", str(frontend)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", SINGER_DEMO_MODELS=str(demo_models))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=comfyui_path, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    server = ComfyServer(base_url=f"http://127.0.0.1:{port}", base_dir=base_dir, log_path=log_path,
                         process=process)
    try:
        # 3. wait until it answers
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {process.returncode} during start-up; "
                            f"log tail:\n{_tail(log_path)}")
            try:
                if requests.get(server.base_url + "/system_stats", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not answer /system_stats within {STARTUP_TIMEOUT_S:.0f} s; "
                            f"log tail:\n{_tail(log_path)}")
            time.sleep(0.25)
        yield server
    finally:
        # 4. stop it
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@pytest.fixture(scope="session")
def open_frontend(comfy_server, tmp_path_factory):
    """A factory for headless-chromium pages on the server's frontend:
    `with open_frontend("name") as (page, errors, responses): ...`, the page loaded and `window.app` ready,
    console/page errors collected as {kind, text, url} and every response as (url, status; -1 = failed)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")

    @contextlib.contextmanager
    def opener(name: str):
        profile = tmp_path_factory.mktemp(name)
        errors: list[dict] = []
        responses: list[tuple[str, int]] = []
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True,
                viewport={"width": 1600, "height": 1000},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.on("console", lambda msg: errors.append(
                    {"kind": "console", "text": msg.text, "url": msg.location.get("url", "")})
                    if msg.type == "error" else None)
                page.on("pageerror", lambda exc: errors.append(
                    {"kind": "pageerror", "text": f"{exc}\n{getattr(exc, 'stack', '') or ''}", "url": ""}))
                page.on("response", lambda response: responses.append((response.url, response.status)))
                page.on("requestfailed", lambda request: responses.append((request.url, -1)))
                page.goto(comfy_server.base_url, timeout=PAGE_TIMEOUT_MS)
                page.wait_for_function("() => window.app && window.app.graph", timeout=PAGE_TIMEOUT_MS)
                yield page, errors, responses
            finally:
                context.close()

    return opener
