"""Memory flat in song length (issue 16) for the paths the 16 kHz mono test (audio/test_encoders_memory.py) does not
cover: mel-80 encoding of a 44.1 kHz stereo song (mixed down and resampled span by span) and the motion
sampler (windows gathered a batch at a time). Each run is a fresh interpreter (benchmarks/memory_long_songs.py);
growth = peak RSS during the call - RSS before it. Three minutes may cost no more than one beyond the larger
output itself, plus a fixed margin: a whole-song copy would exceed it (the old mono mix + 16 kHz copy of a
44.1 kHz song: 14.4 MB per minute; the old (windows, W, 1280) audio copy of the sampler: about 8.5 MB per minute).

The full figures (10 and 30 minutes) come from ``python benchmarks/memory_long_songs.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARGIN_MB = 8.0  # edge chunks and allocator noise (measured spread 0-2 MB)


def _bench():
    spec = importlib.util.spec_from_file_location("memory_long_songs", ROOT / "benchmarks" / "memory_long_songs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc for VmRSS/VmHWM")
@pytest.mark.parametrize("what", ["mel-44k-stereo", "motion"])
def test_three_minutes_cost_no_more_than_one_beyond_the_output(what):
    bench = _bench()
    one, three = bench.measure(what, 1.0, timeout=300), bench.measure(what, 3.0, timeout=300)
    if what == "motion":
        assert one["shape"] == [1, 1500, 64] and three["shape"] == [1, 4500, 64]
    else:
        assert one["shape"] == [1500, 16, 80] and three["shape"] == [4500, 16, 80]
    extra_growth = three["growth_mb"] - one["growth_mb"]
    extra_output = three["output_mb"] - one["output_mb"]
    assert extra_growth < extra_output + MARGIN_MB, (one, three)


def test_sampler_spans_and_window_batches_do_not_change_the_result(monkeypatch):
    """Gathering windows a few at a time and stepping a few frames at a time is bookkeeping only: the samples
    equal those of one span and one batch of windows, bit for bit (deterministic and with eta > 0)."""
    import torch

    from singer_core.motion import sampling

    torch.manual_seed(0)
    layer = torch.nn.Linear(8 + 6, 6)

    def model(x, t, audio):
        return torch.tanh(layer(torch.cat([x, audio], -1))) + 1e-3 * t[:, None, None].float()

    audio = torch.randn(2, 301, 8, generator=torch.Generator().manual_seed(1))
    for eta in (0.0, 0.5):
        whole = sampling.sample(model, audio, steps=5, eta=eta, seed=3, window=40, overlap=7, motion_dim=6,
                                window_batch=1000)
        monkeypatch.setattr(sampling, "STEP_FRAMES", 37)
        pieces = sampling.sample(model, audio, steps=5, eta=eta, seed=3, window=40, overlap=7, motion_dim=6,
                                 window_batch=3)
        monkeypatch.undo()
        assert torch.equal(whole, pieces)
