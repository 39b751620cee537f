"""Names the pack defines once: the progress callback type (singer_core/progress.py) and the mel encoder's name
(MEL_ENCODER_NAME next to MelEncoder). Read from the source with ast, so a new copy anywhere fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    for folder in ("singer_core", "nodes"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_progress_is_defined_once():
    copies = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            if any(isinstance(target, ast.Name) and target.id == "Progress" for target in targets):
                copies.append(f"{name}:{node.lineno}")
            if (isinstance(node, ast.Subscript) and ast.unparse(node) == "Callable[[int, int], None]"
                    and name != "singer_core/progress.py"):
                copies.append(f"{name}:{node.lineno} (spelled out)")
    assert copies == ["singer_core/progress.py:19"], "import Progress from singer_core.progress instead"


def test_the_mel_encoder_name_is_written_once():
    literals = []
    for name, tree in _modules():
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "mel-80" and id(node) not in docstrings:
                literals.append(f"{name}:{node.lineno}")
    assert len(literals) == 1 and literals[0].startswith("singer_core/audio/encoders.py:"), (
        f"use singer_core.audio.encoders.MEL_ENCODER_NAME instead of the literal: {literals}")
