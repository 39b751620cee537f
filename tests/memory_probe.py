"""Peak-RSS probes for the memory tests, run in a fresh child process: the kernel's peak mark (VmHWM) is reset
after the imports through /proc/self/clear_refs ("5"); `ru_maxrss` would not do, Linux carries it over from the
forking parent. Imported as ``tests.memory_probe`` (by the tests and by the children they start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def reset_peak() -> int:
    """Reset this process's peak-RSS mark to its current RSS (Linux clear_refs "5"); returns bytes."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return rss_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Peak RSS in bytes since the last `reset_peak`."""
    return rss_kib("VmHWM") * 1024


def can_reset_peak() -> bool:
    try:
        reset_peak()
        return True
    except (OSError, StopIteration):
        return False


def run_child(code: str) -> dict:
    """Run `code` in a fresh interpreter at the repository root; its last stdout line is JSON, returned."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
