"""The JSON round trip every frozen config shares."""

from __future__ import annotations

import dataclasses

import pytest

from singer_core.io.config import JsonConfig


@dataclasses.dataclass(frozen=True)
class _Example(JsonConfig):
    size: int = 3  # a number
    pair: tuple[float, float] = (1.0, 2.0)  # a sequence: JSON gives a list back
    name: str = "x"


def test_round_trip_restores_tuples_and_defaults():
    config = _Example(size=5, pair=(0.5, 4.0), name="y")
    assert _Example.from_json(config.to_json()) == config
    assert _Example.from_json('{"size": 7}') == _Example(size=7)
    assert config.to_json(indent=1).startswith("{\n \"name\": \"y\",\n")


@pytest.mark.parametrize("text, message", [
    ('{"size": 1, "colour": "red"}', r"_Example: unknown keys \['colour'\]; known keys are \['name', 'pair', 'size'\]"),
    ("[1, 2]", "expected a JSON object, got list"),
])
def test_bad_json_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        _Example.from_json(text)
