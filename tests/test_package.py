"""Packaging and layering rules: the core never imports ComfyUI, nothing happens on import,
the pack's entry point is inert without ComfyUI, node/workflow conventions hold."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution"}
CORE_NODE_TYPES = {"LoadAudio", "PreviewImage", "SaveImage", "PreviewAudio", "SaveAudio", "LoadImage",
                   "SaveVideo", "CreateVideo", "GetVideoComponents", "LoadVideo"}


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_core_never_imports_comfyui_sources():
    offenders = []
    for path in (ROOT / "singer_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders


def test_core_imports_without_comfyui_and_without_work():
    result = _run_python(
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "import singer_core, singer_core.ops, singer_core.spectral.visualize, singer_core.audio.synth, "
        "singer_core.audio.io, singer_core.audio.frames, singer_core.audio.features, "
        "singer_core.audio.encoders, singer_core.audio.encoder_loading, singer_core.audio.separation, "
        "singer_core.face.morphable, singer_core.face.render, singer_core.face.bfm, singer_core.face.procedural, "
        "singer_core.face.crop, singer_core.face.detect, singer_core.face.motion_types, "
        "singer_core.io.video_read, singer_core.io.video_write, "
        "singer_core.data.format, singer_core.data.synthetic, singer_core.data.dataset, "
        "singer_core.data.preprocess, singer_core.demo\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
        "assert 'numba' not in sys.modules, 'numba must be imported lazily'\n"
        "assert 'cv2' not in sys.modules, 'cv2 must be imported lazily'\n"
        "for heavy in ('transformers', 'av', 'onnx', 'huggingface_hub', 'scipy'):\n"
        "    assert heavy not in sys.modules, heavy + ' must be imported lazily'\n"
        "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_pack_entry_point_is_inert_without_comfyui():
    spec = importlib.util.spec_from_file_location("singer_pack_under_test", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WEB_DIRECTORY == "./web"
    assert not hasattr(module, "comfy_entrypoint")
    assert not hasattr(module, "NODE_CLASS_MAPPINGS"), "V1 mappings would make ComfyUI skip comfy_entrypoint"


def test_kernels_survive_being_imported_under_comfyui_style_names(tmp_path):
    """ComfyUI imports the pack under a path-derived module name. Kernels compiled there must
    not poison a later plain `import singer_core` (numba's on-disk cache did, once)."""
    code_as_pack = (
        "import importlib.util, sys, torch\n"
        f"root = {str(ROOT)!r}\n"
        "name = root + '/custom_nodes/comfyui-singer'\n"
        "spec = importlib.util.spec_from_file_location(name, root + '/__init__.py', submodule_search_locations=[root])\n"
        "pack = importlib.util.module_from_spec(spec); sys.modules[name] = pack; spec.loader.exec_module(pack)\n"
        "wavelet = importlib.import_module(name + '.singer_core.ops.wavelet')\n"
        "print(float(wavelet.haar_dwt2(torch.ones(2, 4, 4))[:, 0].sum()))\n"
    )
    code_plain = "import torch\nfrom singer_core.ops.wavelet import haar_dwt2\nprint(float(haar_dwt2(torch.ones(2, 4, 4))[:, 0].sum()))\n"
    for code in (code_as_pack, code_plain, code_as_pack):
        result = _run_python(code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "16.0"


def _node_schemas():
    """(node_id, category, inputs-without-tooltip) for every node, read with ast (no ComfyUI needed)."""
    found = []
    for path in sorted((ROOT / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text())
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "Schema":
                keywords = {k.arg: k.value for k in call.keywords}
                node_id = ast.literal_eval(keywords["node_id"])
                category = ast.literal_eval(keywords["category"])
                missing, input_ids, output_ids = [], [], []
                for item in getattr(keywords.get("inputs"), "elts", []):
                    first = item.args[0]
                    while isinstance(first, ast.Call):  # MultiType.Input(io.X.Input("id", ...), ...)
                        first = first.args[0]
                    input_ids.append(ast.literal_eval(first))
                    if not any(k.arg == "tooltip" for k in item.keywords):
                        missing.append(input_ids[-1])
                for item in getattr(keywords.get("outputs"), "elts", []):
                    if item.args:
                        output_ids.append(ast.literal_eval(item.args[0]))
                    if not any(k.arg == "display_name" for k in item.keywords):  # else the graph shows its type
                        missing.append(f"output {output_ids[-1] if item.args else '?'} (display_name)")
                clashes = sorted(set(input_ids) & set(output_ids))
                assert not clashes, f"{node_id}: ComfyUI refuses ids shared by inputs and outputs: {clashes}"
                found.append((node_id, category, missing, path.name))
    return found


def test_node_conventions():
    schemas = _node_schemas()
    assert schemas, "no nodes found"
    registry = (ROOT / "nodes" / "__init__.py").read_text()
    for node_id, category, missing, filename in schemas:
        assert node_id.startswith("Singer"), node_id
        assert category.startswith("SINGER/"), (node_id, category)
        assert not missing, f"{node_id} ({filename}): inputs without tooltip / outputs without display_name: {missing}"
        assert re.search(rf"\b{node_id}\b", registry), f"{node_id} is not in the registry (nodes/__init__.py)"


def test_workflows_are_valid_ui_json_with_known_nodes():
    ours = {node_id for node_id, *_ in _node_schemas()}
    workflows = sorted((ROOT / "workflows").glob("*.json"))
    assert workflows
    for path in workflows:
        data = json.loads(path.read_text())
        ids = {node["id"] for node in data["nodes"]}
        for node in data["nodes"]:
            assert node["type"] in ours | CORE_NODE_TYPES, f"{path.name}: unknown node type {node['type']}"
        for link_id, src, _, dst, _, _ in data["links"]:
            assert src in ids and dst in ids, f"{path.name}: link {link_id} points to a missing node"
        assert any(node["type"] in ours for node in data["nodes"]), f"{path.name} uses none of our nodes"


def test_pyproject_metadata():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["project"]["dependencies"]}
    for needed in ("torch", "diffusers", "transformers", "safetensors", "opencv-python", "huggingface_hub", "av",
                   "numpy"):
        assert needed in deps, needed
    # torchaudio may not load beside the user's torch: the pack never needs it (audio/dsp.py)
    assert "torchaudio" not in deps
    assert any(d.startswith("torchaudio") for d in project["project"]["optional-dependencies"]["test"])
    torch_spec = next(d for d in project["project"]["dependencies"] if d.startswith("torch"))
    assert "==" not in torch_spec, "ComfyUI owns torch: never pin it in the package"
    assert "test" in project["project"]["optional-dependencies"]
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    constraints = (ROOT / "constraints.txt").read_text()
    for pin in ("torch==2.11.0", "torchaudio==2.11.0", "torchvision==0.26.0"):
        assert pin in constraints


def test_no_unpickling_and_no_path_hacks():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part.startswith(".venv") for part in path.parts) or "build" in path.parts:
            continue
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1) and rel.parts[0] != "tests":
                offenders.append(f"{rel}: torch.load without weights_only=True")
        if re.search(r"sys\.path\.(insert|append)", text) and str(rel) not in ("tests/comfyui/conftest.py",):
            if rel.name != "test_package.py":
                offenders.append(f"{rel}: sys.path edit")
    assert not offenders


def test_tree_is_lint_clean():
    pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e .[test]")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "--no-cache",
                             "singer_core", "nodes", "tests", "benchmarks", "__init__.py"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for needle in ("make demo", "make test", "COMFYUI_PATH", "custom_nodes"):
        assert needle in readme, needle
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("target", ["setup", "test", "demo", "bench"])
def test_makefile_targets_exist(target):
    assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M)


def test_requirements_txt_matches_pyproject():
    """ComfyUI-Manager installs from requirements.txt: it must list every runtime dependency but torch."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())

    def names(lines):
        return {re.split(r"[<>=!~ \[]", line.strip())[0].lower() for line in lines
                if line.strip() and not line.strip().startswith("#")}

    wanted = names(project["project"]["dependencies"]) - {"torch", "torchaudio"}
    listed = names((ROOT / "requirements.txt").read_text().splitlines())
    assert wanted == listed, f"missing {sorted(wanted - listed)}, extra {sorted(listed - wanted)}"


# -- the import graph of the core (module level and lazy, function-level imports alike) -----------------------

# DESIGN's dependency direction, lowest first: a module may import its own package and packages of a lower rank
# only (same-rank packages stay independent of each other). The top-level progress.py and env.py are leaves.
LAYERS = {"progress": 0, "env": 0, "io": 1, "ops": 2, "audio": 3, "face": 3, "spectral": 4, "data": 4,
          "motion": 5, "diffusion": 5, "nerf": 5, "train": 6, "eval": 7, "demo": 8}


def core_modules(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module of root/singer_core (a package is its __init__.py)."""
    modules = {}
    for path in sorted((root / "singer_core").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def core_import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the singer_core modules it imports}, from the AST: every `import` / `from ... import` anywhere in
    the file (inside functions too), relative ones resolved; `from pkg import name` is an edge to pkg.name when
    that is a module, else to pkg. A package's own __init__ running first is not counted as an edge."""
    modules = core_modules(root)
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # singer_core.x.y.Name -> singer_core.x.y
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges against LAYERS: into a package of the same or a higher rank (e.g. nerf/ -> train/, ops/ -> audio/,
    motion/ -> diffusion/). A package's own modules and the root package are free."""
    found = []
    for module, targets in graph.items():
        for target in targets:
            source, goal = _layer(module), _layer(target)
            if source and goal and source != goal and LAYERS[goal] >= LAYERS[source]:
                found.append(f"{module} -> {target}")
    return sorted(found)


def test_every_core_package_has_a_layer():
    """A new package of the core must be placed in LAYERS (else the direction check would not see it)."""
    packages = {_layer(module) for module in core_modules(ROOT) if "." in module}
    assert packages - set(LAYERS) == set()


def test_import_graph_sees_lazy_relative_and_package_imports(tmp_path):
    """The checks below can fail: a function-level relative import into train/ and a circle are found."""
    files = {
        "singer_core/__init__.py": "",
        "singer_core/nerf/__init__.py": "from .subject import Model\n",
        "singer_core/nerf/subject.py": "import torch\n\ndef load():\n    from ..train.loop import train\n",
        "singer_core/train/__init__.py": "",
        "singer_core/train/loop.py": "from singer_core.nerf import subject\nfrom . import nerf\n",
        "singer_core/train/nerf.py": "from .. import nerf\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = core_import_graph(tmp_path)
    assert graph == {"singer_core": set(), "singer_core.nerf": {"singer_core.nerf.subject"},
                     "singer_core.nerf.subject": {"singer_core.train.loop"}, "singer_core.train": set(),
                     "singer_core.train.loop": {"singer_core.nerf.subject", "singer_core.train.nerf"},
                     "singer_core.train.nerf": {"singer_core.nerf"}}
    assert upward_imports(graph) == ["singer_core.nerf.subject -> singer_core.train.loop"]
    # subject -> train.loop -> train.nerf -> nerf (its __init__) -> subject: one circle of four modules
    assert import_cycles(graph) == [["singer_core.nerf", "singer_core.nerf.subject", "singer_core.train.loop",
                                     "singer_core.train.nerf"]]
    del graph["singer_core.nerf.subject"], graph["singer_core.train.loop"]
    graph = {module: targets - {"singer_core.nerf.subject", "singer_core.train.loop"} for module, targets in graph.items()}
    assert import_cycles(graph) == [] and upward_imports(graph) == []
    sideways = {"singer_core.ops.haar": {"singer_core.audio.dsp", "singer_core.io.config"},
                "singer_core.motion.dit": {"singer_core.diffusion.net", "singer_core.motion.sampling"},
                "singer_core.audio.dsp": {"singer_core.ops.wavelet", "singer_core.progress"}}
    assert upward_imports(sideways) == ["singer_core.motion.dit -> singer_core.diffusion.net",
                                        "singer_core.ops.haar -> singer_core.audio.dsp"]


def test_core_imports_only_downward():
    """DESIGN's dependency direction (LAYERS), lazy imports included: only eval/ and demo/ import train/, nothing
    imports demo/, ops/ and io/ import nothing above them, motion/, diffusion/ and nerf/ not each other."""
    assert upward_imports(core_import_graph(ROOT)) == []


def test_no_import_circles_between_core_modules():
    """Module-level and lazy imports together form no circle (a lazy one only hides the circle until run time)."""
    assert import_cycles(core_import_graph(ROOT)) == []


# the tests' own layout: tests/<package>/ for singer_core/<package>/, tests/comfyui/ for nodes/ in a real
# ComfyUI, tests/benchmarks/ for benchmarks/; at the top only the checks that span the whole pack
CROSS_CUTTING_TESTS = {"test_package.py", "test_one_definition.py", "test_cli_help.py", "test_bad_inputs.py",
                       "test_bad_inputs_cli.py", "test_bad_inputs_data.py"}


def test_tests_mirror_the_package_layout():
    folders = {path.name for path in (ROOT / "tests").iterdir() if path.is_dir() and path.name != "__pycache__"}
    packages = {path.parent.name for path in (ROOT / "singer_core").glob("*/__init__.py")}
    assert folders - packages == {"comfyui", "benchmarks"}
    assert {path.name for path in (ROOT / "tests").glob("test_*.py")} == CROSS_CUTTING_TESTS
