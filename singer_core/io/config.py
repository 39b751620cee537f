"""JSON round trip shared by every frozen config dataclass (STYLE rule 4: error on unknown keys), and the
positive-integer check their ``__post_init__`` methods share."""

from __future__ import annotations

import dataclasses
import json
from typing import TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for frozen dataclasses: `to_json()` and `from_json(text)`.

    JSON has no tuples, so lists read back become tuples (every config here keeps sequences as tuples,
    to stay hashable and immutable). Unknown keys are an error naming the known ones; missing keys
    take the field defaults; the dataclass's own __post_init__ checks the values.
    """

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=indent)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_json: expected a JSON object, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def check_positive_ints(who: str, **values) -> None:
    """Raise ``ValueError`` naming ``who`` and the field unless every value is an int >= 1 (bools are not)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
