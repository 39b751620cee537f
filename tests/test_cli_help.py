"""Help texts of every command line, in one parametrised in-process test (no interpreter start per case).

Expected contents are derived from what the help describes: the task registry, each task's config dataclass
(field names and defaults via ``dataclasses``) and presets, the subcommand tables. That ``python -m ...`` itself
starts is checked once elsewhere (tests/test_bad_inputs_cli.py runs the trainer in a subprocess).
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from singer_core.train import TASKS, task_class
from tests.cli_run import run_cli


def _field_defaults(config_class) -> dict:
    fields = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            fields[field.name] = field.default
        else:
            fields[field.name] = field.default_factory()
    return fields


def _train_task_fragments(name: str) -> list[str]:
    """Every config field with its default, every preset with the fields it changes."""
    klass = task_class(name)
    defaults = _field_defaults(klass.config_class)
    fragments = [f"{field} (" for field in defaults]
    fragments += [f"default {value!r}" for value in defaults.values() if not isinstance(value, (tuple, list, dict))]
    for preset, config in klass.presets.items():
        fragments.append(f"  {preset}: ")
        fragments += [f"{key}={getattr(config, key)!r}" for key in defaults
                      if getattr(config, key) != defaults[key] and not isinstance(defaults[key], (tuple, list, dict))]
    return fragments + ["--resume", "--preset", "--set FIELD=VALUE"]


def _cases():
    from singer_core.data.__main__ import main as data_main
    from singer_core.demo import main as demo_main
    from singer_core.eval.__main__ import COMMANDS as EVAL_COMMANDS
    from singer_core.eval.__main__ import main as eval_main
    from singer_core.train.__main__ import main as train_main

    cases = [
        pytest.param(train_main, ["--help"], lambda: sorted(TASKS), id="train"),
        pytest.param(eval_main, ["--help"], lambda: [f"python -m singer_core.eval {name}" for name in EVAL_COMMANDS],
                     id="eval"),
        pytest.param(data_main, ["--help"], lambda: ["python -m singer_core.data synth",
                                                     "python -m singer_core.data preprocess"], id="data"),
        pytest.param(demo_main, ["--help"], lambda: ["--out", "--seconds", "--seed", "--motion-preset"], id="demo"),
    ]
    for name in sorted(TASKS):
        cases.append(pytest.param(train_main, [name, "--help"], lambda name=name: _train_task_fragments(name),
                                  id=f"train-{name}"))
    return cases


@pytest.mark.parametrize("main,argv,fragments", _cases())
def test_help_text(main, argv, fragments):
    code, out, _ = run_cli(main, argv)
    assert code == 0
    missing = [fragment for fragment in fragments() if fragment not in out]
    assert not missing, f"{missing} not in the help of {argv}:\n{out}"
    if main.__module__ == "singer_core.train.__main__" and argv[0] in TASKS:
        # every config field's line says what the field does: "  name (type, default value): comment"
        for field in dataclasses.fields(task_class(argv[0]).config_class):
            assert re.search(rf"^  {field.name} \(.+, default .+\): \S", out, re.M), field.name
