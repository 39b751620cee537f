"""singer_core.io.checkpoint: atomic save_pretrained / strict from_pretrained, clear errors on bad files."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from singer_core.io.checkpoint import (
    PretrainedMixin,
    atomic_write_bytes,
    load_tensors,
    read_safetensors_metadata,
    save_tensors,
)
from singer_core.io.config import JsonConfig


@dataclasses.dataclass(frozen=True)
class TinyConfig(JsonConfig):
    width: int = 4
    depth: int = 1


class Tiny(torch.nn.Module, PretrainedMixin):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.layers = torch.nn.ModuleList(torch.nn.Linear(config.width, config.width) for _ in range(config.depth))
        self.register_buffer("scale", torch.arange(config.width, dtype=torch.float32))


class Other(Tiny):
    pass


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(width=3, depth=2))
    model.save_pretrained(tmp_path / "m")
    loaded = Tiny.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not loaded.training
    assert read_safetensors_metadata(tmp_path / "m" / "model.safetensors")["model_type"] == "Tiny"


def test_overwrite_replaces_the_whole_folder(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "stale.txt").write_text("x")
    Tiny(TinyConfig(width=2)).save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert Tiny.from_pretrained(tmp_path / "m").config.width == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left


def test_wrong_shapes_are_named(tmp_path):
    Tiny(TinyConfig(width=3)).save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    payload = json.loads(config.read_text())
    payload["config"]["width"] = 5
    config.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"layers\.0\.weight: file \(3, 3\) vs model \(5, 5\)"):
        Tiny.from_pretrained(tmp_path / "m")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    Tiny(TinyConfig(depth=2)).save_pretrained(tmp_path / "m")
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    payload["config"]["depth"] = 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"unexpected \[layers\.1\.bias, layers\.1\.weight\]"):
        Tiny.from_pretrained(tmp_path / "m")


def test_other_model_type_is_refused(tmp_path):
    Other(TinyConfig()).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a 'Other' model, not 'Tiny'"):
        Tiny.from_pretrained(tmp_path / "m")


def test_unknown_config_key_is_refused(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "m")
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    payload["config"]["colour"] = "red"
    (tmp_path / "m" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        Tiny.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("keep", [0, 5, 100])
def test_truncated_weights_are_a_clear_error(tmp_path, keep):
    Tiny(TinyConfig(width=8)).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(ValueError, match="save or download it again"):
        Tiny.from_pretrained(tmp_path / "m")


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        Tiny.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Tiny.from_pretrained(tmp_path / "empty")


def test_save_tensors_clones_shared_storage(tmp_path):
    base = torch.arange(6.0)
    save_tensors(tmp_path / "t.safetensors", {"a": base, "b": base[:3]}, metadata={"k": "v"})
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert torch.equal(loaded["a"], base) and torch.equal(loaded["b"], base[:3])
    assert read_safetensors_metadata(tmp_path / "t.safetensors") == {"k": "v"}


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, 123)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_folder_replaces_on_success_and_keeps_the_old_one_on_failure(tmp_path):
    from singer_core.io.checkpoint import atomic_folder

    target = tmp_path / "run"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "first"
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary or old folders left
