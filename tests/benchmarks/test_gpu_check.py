"""`make gpu-check --dry-run`: every step of benchmarks/gpu_check.py runs end to end on the CPU at reduced size
and lands in one JSON (the GPU numbers themselves need a lent CUDA machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_run import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a few CPU minutes: the NeRF kernels run under the Triton interpreter
def test_gpu_check_dry_run_writes_every_step(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and all(result[step]["ok"] for step in ("tests", "singer", "nerf", "motion"))
    presets = result["singer"]["presets"]
    assert set(presets) == {"official", "ours_default"} and all(p["seconds_per_frame"] > 0 for p in presets.values())


def test_gpu_check_refuses_a_missing_output_folder(tmp_path):
    """In-process (the script is loaded from its file; an interpreter start costs seconds): one error line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    code, _, err = run_cli(gpu_check.main, ["--dry-run", "--json", str(tmp_path / "missing" / "x.json")])
    assert code == 1 and err.strip().startswith("error:") and "Traceback" not in err
    assert str(tmp_path / "missing") in err and "create it first" in err
    assert not (tmp_path / "missing").exists()
