"""singer_core.ops.triton_kernels run through Triton's CPU interpreter (TRITON_INTERPRET=1, in a subprocess:
the variable must be set before the kernels are built) against the torch paths of ops.hashgrid / ops.volume
and independent float64 references (a vectorised numpy version of the torch-ngp grid rules with its
analytic gradients; Instant-NGP's sequential march written with float64 torch ops and autograd); plus the
dispatch rules, which need no triton at all.

Run directly (`python tests/ops/test_triton_kernels.py`) this file is the interpreter child: it prints one JSON
object of measured errors and facts that the tests below assert on.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from singer_core.ops import triton_kernels
from singer_core.ops.hashgrid import HashGridConfig, HashGridEncoder
from singer_core.ops.volume import composite

ROOT = Path(__file__).resolve().parents[2]
PRIMES = (1, 2654435761, 805459861)
TINY = dict(num_levels=4, base_resolution=4, max_resolution=32)
ER_NERF = dict(num_levels=12, base_resolution=64, max_resolution=512, log2_table_size=14)


# ------------------------------------------------------------------------------- float64 references

def reference_hash_grid(u: np.ndarray, table: np.ndarray, grad_out: np.ndarray, *, dim: int, num_levels: int,
                        base_resolution: int, max_resolution: float, log2_table_size: int):
    """torch-ngp grid rules in float64 numpy, vectorised over points.

    Returns out (N, L*F), d(sum grad_out*out)/d table (rows, F), .../d u (N, D), and the smallest distance
    of any level position to a cell edge per point (N,) (where float32 may pick the neighbouring cell).
    """
    num, features = u.shape[0], table.shape[1]
    t_max = 2 ** log2_table_size
    growth = 2.0 ** (math.log2(max_resolution / base_resolution) / (num_levels - 1))
    out = np.zeros((num, num_levels, features))
    grad_table = np.zeros_like(table)
    grad_u = np.zeros((num, dim))
    edge = np.full(num, np.inf)
    inside = np.all((u >= 0) & (u <= 1), axis=1)
    unit = np.clip(u, 0.0, 1.0)
    g = grad_out.reshape(num, num_levels, features)
    offset = 0
    for level in range(num_levels):
        scale = base_resolution * growth ** level - 1.0
        res = math.ceil(scale) + 1
        size = min(t_max, (res + 1) ** dim)
        pos = unit * scale + 0.5
        low = np.floor(pos)
        frac = pos - low
        edge = np.minimum(edge, np.min(np.minimum(frac, 1.0 - frac), axis=1))
        low = low.astype(np.int64)
        for corner in range(2 ** dim):
            bits = [(corner >> d) & 1 for d in range(dim)]
            vertex = [low[:, d] + bits[d] for d in range(dim)]
            axis_w = [frac[:, d] if bits[d] else 1.0 - frac[:, d] for d in range(dim)]
            if (res + 1) ** dim <= t_max:
                idx = sum(vertex[d] * (res + 1) ** d for d in range(dim))
            else:
                idx = np.zeros(num, dtype=np.int64)
                for d in range(dim):
                    idx ^= (vertex[d] * PRIMES[d]) % 2 ** 32
            rows = idx % size + offset
            weight = np.prod(axis_w, axis=0) * inside
            values = table[np.where(inside, rows, 0)]                                   # (N, F)
            out[:, level] += weight[:, None] * values
            np.add.at(grad_table, rows[inside], weight[inside, None] * g[inside, level])
            dot = np.sum(values * g[:, level], axis=1) * inside
            for d in range(dim):
                others = np.prod([axis_w[e] for e in range(dim) if e != d], axis=0)
                grad_u[:, d] += dot * (1.0 if bits[d] else -1.0) * others * scale
        offset += size
    assert offset == table.shape[0]
    return out.reshape(num, -1), grad_table, grad_u, edge


def reference_march(sigma, rgb, delta, t, mask, stop):
    """Instant-NGP's march in float64 torch ops (T as a running product), differentiable by autograd.

    Args: (R, S) / (R, S, 3) float64 tensors, mask (R, S) bool; a sample counts while T_i >= stop.
    Returns: rgb (R, 3) without background, depth, opacity, weights (R, S), transmittance (R,).
    """
    trans = torch.ones(sigma.shape[0], dtype=torch.float64)
    colour, depth, opacity, weights = 0.0, 0.0, 0.0, []
    for i in range(sigma.shape[1]):
        alpha = (1.0 - torch.exp(-sigma[:, i] * delta[:, i])) * mask[:, i]
        weight = trans * alpha * (trans.detach() >= stop)
        colour = colour + weight[:, None] * rgb[:, i]
        depth = depth + weight * t[:, i]
        opacity = opacity + weight
        weights.append(weight)
        trans = trans * (1.0 - alpha)
    return colour, depth, opacity, torch.stack(weights, dim=1), trans


# ------------------------------------------------------------------------------------ interpreter child

def _max_err(got: torch.Tensor, want) -> float:
    want = torch.as_tensor(want, dtype=torch.float64)
    return float((got.detach().double() - want).abs().max())


def _child_hash_grid(results: dict) -> None:
    """HashGridEncoder: triton vs torch float32 vs float64 reference; values, table and input gradients."""
    cases = {
        "d2f1": dict(dim=2, features=1, log2_table_size=6, **TINY),
        "d2f2": dict(dim=2, features=2, log2_table_size=6, **TINY),
        "d3f1": dict(dim=3, features=1, log2_table_size=7, **TINY),
        "ernerf": dict(dim=2, features=1, **ER_NERF),
    }
    for name, case in cases.items():
        dim, features = case.pop("dim"), case.pop("features")
        enc = HashGridEncoder(HashGridConfig(input_dim=dim, features_per_level=features, **case))
        levels = enc.levels
        results[f"hash/{name}/dense_and_hashed"] = any(lv.dense for lv in levels) and not all(
            lv.dense for lv in levels)
        gen = torch.Generator().manual_seed(len(results))
        with torch.no_grad():
            enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=gen))
        pts = torch.rand(301, dim, generator=gen)                          # 301: not a multiple of the block
        pts[:4] = torch.tensor([[0.0] * dim, [1.0] * dim, [-0.1] + [0.5] * (dim - 1),
                                [0.5] * (dim - 1) + [1.5]])                # corners, then two outside
        grad_out = torch.randn(301, enc.output_dim, generator=gen)
        runs = {}
        for backend in ("triton", "torch"):
            enc.backend = backend
            for coord_grad in (False, True):
                enc.zero_grad()
                x = pts.clone().requires_grad_(coord_grad)
                out = enc(x)
                out.backward(grad_out)
                runs[backend, coord_grad] = (out.detach(), enc.embeddings.grad.clone(),
                                             x.grad.clone() if coord_grad else None)
        want, want_table, want_u, edge = reference_hash_grid(
            pts.double().numpy(), enc.embeddings.detach().double().numpy(), grad_out.double().numpy(), dim=dim,
            **case)
        far = torch.from_numpy(edge > 2e-4) & (torch.arange(301) >= 4)
        results[f"hash/{name}/edge_excluded"] = float(1 - far.double().mean())
        tri_out, tri_table, _ = runs["triton", False]
        results[f"hash/{name}/zero_outside"] = bool((tri_out[2:4] == 0).all())
        results[f"hash/{name}/fwd_vs_torch"] = _max_err(tri_out, runs["torch", False][0])
        results[f"hash/{name}/fwd_vs_ref"] = _max_err(tri_out, want)
        results[f"hash/{name}/table_grad_vs_torch"] = _max_err(tri_table, runs["torch", False][1])
        results[f"hash/{name}/table_grad_vs_ref"] = _max_err(tri_table, want_table)
        results[f"hash/{name}/table_grad_with_coords_vs_ref"] = _max_err(runs["triton", True][1], want_table)
        tri_u, torch_u = runs["triton", True][2], runs["torch", True][2]
        scale = float(np.abs(want_u).max())
        results[f"hash/{name}/coord_grad_vs_torch"] = _max_err(tri_u, torch_u) / scale
        results[f"hash/{name}/coord_grad_vs_ref"] = _max_err(tri_u[far], want_u[far.numpy()]) / scale
        results[f"hash/{name}/coord_grad_zero_outside"] = bool((tri_u[2:4] == 0).all())


def _tri_plane_run(tri, backend: str, world: torch.Tensor, grad_out: torch.Tensor):
    """Output, parameter gradients (list) and point gradient of one tri-plane forward + backward on `backend`."""
    tri.backend = backend
    tri.zero_grad()
    x = world.clone().requires_grad_()
    out = tri(x)
    out.backward(grad_out)
    return out.detach(), [p.grad.clone() for p in tri.parameters()], x.grad.clone()


def _child_tri_plane(results: dict) -> None:
    """TriPlaneEncoder (three stacked tables, one launch): triton vs torch vs float64 reference per plane."""
    from singer_core.ops.hashgrid import PLANES, TriPlaneConfig, TriPlaneEncoder

    for name, case in {"tiny": dict(log2_table_size=6, **TINY), "ernerf": ER_NERF}.items():
        tri = TriPlaneEncoder(TriPlaneConfig(aabb=(-1.0, -2.0, 0.0, 1.0, 2.0, 4.0), **case))
        gen = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for _, param in tri.named_parameters():
                param.copy_(torch.randn(param.shape, generator=gen))
        unit = torch.rand(203, 3, generator=gen, dtype=torch.float64)
        unit[0] = torch.tensor([1.2, 0.5, 0.5], dtype=torch.float64)             # outside on xy and xz only
        world = (unit * torch.tensor([2.0, 4.0, 4.0], dtype=torch.float64)
                 + torch.tensor([-1.0, -2.0, 0.0], dtype=torch.float64)).float()
        grad_out = torch.randn(203, tri.output_dim, generator=gen)
        runs = {backend: _tri_plane_run(tri, backend, world, grad_out) for backend in ("triton", "torch")}
        levels = case["num_levels"]                                            # one feature per level
        want, want_tables, want_world = [], [], np.zeros((203, 3))
        edge = np.full(203, np.inf)
        for plane, (plane_name, plane_axes) in enumerate(PLANES):
            axes = list(plane_axes)
            table = getattr(tri, f"encoder_{plane_name}").embeddings.detach().double().numpy()
            g = grad_out[:, plane * levels:(plane + 1) * levels].double().numpy()
            out, grad_table, grad_u, plane_edge = reference_hash_grid(unit.numpy()[:, axes], table, g, dim=2,
                                                                      **case)
            want.append(out)
            want_tables.append(grad_table)
            want_world[:, axes] += grad_u / np.array([2.0, 4.0, 4.0])[axes]
            edge = np.minimum(edge, np.where(np.all((unit.numpy()[:, axes] >= 0) & (unit.numpy()[:, axes] <= 1),
                                                    axis=1), plane_edge, np.inf))
        far = torch.from_numpy(edge > 2e-4)
        results[f"tri/{name}/edge_excluded"] = float(1 - far.double().mean())
        results[f"tri/{name}/fwd_vs_torch"] = _max_err(runs["triton"][0], runs["torch"][0])
        results[f"tri/{name}/fwd_vs_ref"] = _max_err(runs["triton"][0], np.concatenate(want, axis=1))
        results[f"tri/{name}/table_grad_vs_torch"] = max(
            _max_err(a, b) for a, b in zip(runs["triton"][1], runs["torch"][1], strict=True))
        results[f"tri/{name}/table_grad_vs_ref"] = max(
            _max_err(a, b) for a, b in zip(runs["triton"][1], want_tables, strict=True))
        scale = float(np.abs(want_world).max())
        results[f"tri/{name}/point_grad_vs_torch"] = _max_err(runs["triton"][2], runs["torch"][2]) / scale
        results[f"tri/{name}/point_grad_vs_ref"] = _max_err(runs["triton"][2][far],
                                                            want_world[far.numpy()]) / scale
        results[f"tri/{name}/outside_planes_zero"] = bool(
            (runs["triton"][0][0, :levels] == 0).all() and (runs["triton"][0][0, 2 * levels:] == 0).all()
            and (runs["triton"][0][0, levels:2 * levels] != 0).any())


def _child_half_precision(results: dict) -> None:
    """float16 table and inputs: Triton (float32 inside) vs the float64 reference on the rounded values."""
    enc = HashGridEncoder(HashGridConfig(input_dim=2, log2_table_size=6, **TINY), backend="triton").half()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=gen))
    pts = torch.rand(77, 2, generator=gen).half()
    out = enc(pts)
    grad_out = torch.randn(77, enc.output_dim, generator=gen)
    out.backward(grad_out.half())
    want, want_table, _, _ = reference_hash_grid(
        pts.double().numpy(), enc.embeddings.detach().double().numpy(), grad_out.half().double().numpy(), dim=2,
        log2_table_size=6, **TINY)
    results["half/dtype"] = str(out.dtype)
    results["half/fwd_vs_ref"] = _max_err(out, want) / float(np.abs(want).max())
    results["half/table_grad_vs_ref"] = (_max_err(enc.embeddings.grad, want_table)
                                         / float(np.abs(want_table).max()))


def _composite_data(rays: int, samples: int, seed: int):
    from singer_core.ops.volume import stratified_samples

    gen = torch.Generator().manual_seed(seed)
    sigma = torch.rand(rays, samples, generator=gen) * 6
    sigma[:8] *= 0.02                                  # thin rays: never terminate
    sigma[8:16, 20:24] = 400.0                         # opaque walls in the first chunk of 64
    sigma[16:24, 90:93] = 400.0                        # ... and in the second chunk (carry across chunks)
    rgb = torch.rand(rays, samples, 3, generator=gen)
    # delta comes back as an expanded view (stride 0 along the samples)
    t, delta = stratified_samples(torch.full((rays,), 1.0), torch.full((rays,), 3.0), samples)
    mask = torch.rand(rays, samples, generator=gen) > 0.25
    mask[8:24, 20:24] = mask[8:24, 90:93] = True        # the walls are evaluated
    return sigma, rgb, delta, t, mask


def _child_composite(results: dict) -> None:
    """composite(): Triton vs torch vs the float64 march; outputs, early termination, gradients."""
    sigma, rgb, delta, t, mask = _composite_data(37, 150, 3)       # 37 rays (odd), 150 samples (3 chunks)
    bg = torch.tensor([0.2, 0.5, 0.9])
    names = ("rgb", "depth", "opacity", "weights", "transmittance")
    for stop in (1e-4, 0.0):
        tag = "stop" if stop else "nostop"
        tri = composite(sigma, rgb, delta, t, mask=mask, background=bg, early_stop=stop, backend="triton")
        ref = composite(sigma, rgb, delta, t, mask=mask, background=bg, early_stop=stop, backend="torch")
        march = reference_march(sigma.double(), rgb.double(), delta.double(), t.double(), mask, stop)
        want = dict(zip(names, march, strict=True))
        want["rgb"] = want["rgb"] + (1 - want["opacity"])[:, None] * bg.double()
        for key in names:   # depth is a distance (t up to ~3): its error is measured relative to the far end
            scale = float(t.max()) if key == "depth" else 1.0
            results[f"comp/{tag}/{key}_vs_torch"] = _max_err(tri[key], ref[key]) / scale
            results[f"comp/{tag}/{key}_vs_ref"] = _max_err(tri[key], want[key]) / scale
        # float64 transmittance before each sample: terminated samples (T < stop) must weigh exactly 0, the
        # others not (unless their float64 weight is negligible); no T may sit on the threshold
        tau = torch.where(mask, sigma.double() * delta.double(), 0.0)
        trans = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
        terminated = mask & (trans < stop)
        kept = mask & ~terminated & (want["weights"] > 1e-6)
        results[f"comp/{tag}/terminated_samples"] = int(terminated.sum())
        results[f"comp/{tag}/terminated_weigh_zero"] = bool((tri["weights"][terminated] == 0).all())
        results[f"comp/{tag}/kept_weigh_nonzero"] = bool((tri["weights"][kept] > 0).all())
        late = mask & (trans < 1e-4) & (want["weights"] > 1e-20)     # what early_stop=1e-4 drops
        results[f"comp/{tag}/late_samples"] = int(late.sum())
        results[f"comp/{tag}/late_weigh_nonzero"] = bool((tri["weights"][late] > 0).all())
        results[f"comp/{tag}/threshold_margin"] = float((trans.log() - math.log(stop)).abs().min()) if stop \
            else 1.0
        terminated = (tri["weights"][16:24, 93:] == 0).all() and (tri["weights"][16:24, 85:90] > 0).any()
        results[f"comp/{tag}/second_chunk_walls_terminate"] = bool(terminated)
    # gradients of every output: Triton's analytic backward vs torch autograd vs float64 march autograd
    gen = torch.Generator().manual_seed(4)
    upstream = [torch.randn(shape, generator=gen) for shape in ((37, 3), (37,), (37,), (37, 150), (37,))]
    grads = {}
    for backend in ("triton", "torch", "march"):
        dtype = torch.float64 if backend == "march" else torch.float32
        leaves = [x.to(dtype).clone().requires_grad_() for x in (sigma, rgb, delta.contiguous(), t)]
        if backend == "march":
            outs = list(reference_march(*leaves[:4], mask, 1e-4))
            outs[0] = outs[0] + (1 - outs[2])[:, None] * bg.double()
        else:
            out = composite(*leaves, mask=mask, background=bg, early_stop=1e-4, backend=backend)
            outs = [out[key] for key in names]
        torch.autograd.backward(outs, [g.to(dtype) for g in upstream])
        grads[backend] = [leaf.grad for leaf in leaves]
    for i, key in enumerate(("sigma", "rgb", "delta", "t")):
        scale = float(grads["march"][i].abs().max())
        results[f"comp/grad/{key}_vs_torch"] = _max_err(grads["triton"][i], grads["torch"][i]) / scale
        results[f"comp/grad/{key}_vs_ref"] = _max_err(grads["triton"][i], grads["march"][i]) / scale
    # float16 inputs
    halves = [x.half() for x in (sigma, rgb, delta, t)]
    half = composite(*halves, mask=mask, early_stop=1e-4, backend="triton")
    march = reference_march(*[x.double() for x in halves], mask, 1e-4)
    results["comp/half/dtype"] = str(half["rgb"].dtype)
    results["comp/half/rgb_vs_ref"] = _max_err(half["rgb"], march[0])
    results["comp/half/depth_vs_ref"] = _max_err(half["depth"], march[1]) / 3.0


def _child_dispatch(results: dict) -> None:
    """Under the interpreter: 'auto' still keeps CPU tensors on the torch path; set_backend switches."""
    sigma, rgb, delta, t, mask = _composite_data(5, 9, 8)
    results["dispatch/available"] = triton_kernels.available()
    results["dispatch/auto_cpu_uses_torch"] = not triton_kernels.use_triton("x", (sigma, rgb), "auto")
    with triton_kernels.use_backend("triton"):
        inside = composite(sigma, rgb, delta, t, mask=mask)["weights"]
    results["dispatch/restored"] = triton_kernels.get_backend()
    forced = composite(sigma, rgb, delta, t, mask=mask, backend="triton")["weights"]
    results["dispatch/use_backend_equals_forced"] = bool(torch.equal(inside, forced))


def _child_main() -> None:
    torch.set_num_threads(1)
    reason = triton_kernels._import_error()
    if reason is not None:
        print(json.dumps({"skip": reason}))
        return
    results: dict = {}
    for part in (_child_hash_grid, _child_tri_plane, _child_half_precision, _child_composite, _child_dispatch):
        part(results)
    print(json.dumps(results))


# ------------------------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def interpreted() -> dict:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (it ships with the CUDA builds of torch)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in results:
        pytest.skip(results["skip"])
    return results


@pytest.mark.parametrize("name", ["d2f1", "d2f2", "d3f1", "ernerf"])
def test_hash_grid_kernel_matches_torch_and_float64(interpreted, name):
    r = {key.split("/", 2)[2]: value for key, value in interpreted.items() if key.startswith(f"hash/{name}/")}
    assert r["dense_and_hashed"]
    assert r["zero_outside"] and r["coord_grad_zero_outside"]
    assert r["fwd_vs_torch"] < 1e-5 and r["fwd_vs_ref"] < 2e-4
    assert r["table_grad_vs_torch"] < 1e-5 and r["table_grad_vs_ref"] < 2e-4
    assert r["table_grad_with_coords_vs_ref"] < 2e-4
    assert r["coord_grad_vs_torch"] < 1e-5
    assert r["edge_excluded"] < 0.1 and r["coord_grad_vs_ref"] < 1e-4


@pytest.mark.parametrize("name", ["tiny", "ernerf"])
def test_tri_plane_kernel_matches_torch_and_float64(interpreted, name):
    r = {key.split("/", 2)[2]: value for key, value in interpreted.items() if key.startswith(f"tri/{name}/")}
    assert r["outside_planes_zero"]
    assert r["fwd_vs_torch"] < 1e-5 and r["fwd_vs_ref"] < 2e-4
    assert r["table_grad_vs_torch"] < 1e-5 and r["table_grad_vs_ref"] < 2e-4
    assert r["point_grad_vs_torch"] < 1e-5
    assert r["edge_excluded"] < 0.2 and r["point_grad_vs_ref"] < 1e-4


def test_hash_grid_kernel_half_precision(interpreted):
    assert interpreted["half/dtype"] == "torch.float16"
    assert interpreted["half/fwd_vs_ref"] < 2e-3 and interpreted["half/table_grad_vs_ref"] < 2e-3


@pytest.mark.parametrize("tag", ["stop", "nostop"])
def test_composite_kernel_outputs_and_early_termination(interpreted, tag):
    r = {key.split("/", 2)[2]: value for key, value in interpreted.items() if key.startswith(f"comp/{tag}/")}
    for key in ("rgb", "depth", "opacity", "weights", "transmittance"):
        assert r[f"{key}_vs_torch"] < 2e-6, key
        assert r[f"{key}_vs_ref"] < 2e-5, key
    assert r["threshold_margin"] > 0.01            # no sample sits on the threshold (either answer is right)
    assert r["terminated_weigh_zero"] and r["kept_weigh_nonzero"]
    if tag == "stop":
        assert r["terminated_samples"] > 500 and r["second_chunk_walls_terminate"]
        assert r["late_samples"] == 0
    else:
        assert r["terminated_samples"] == 0
        assert r["late_samples"] > 500 and r["late_weigh_nonzero"]


def test_composite_kernel_gradients(interpreted):
    for key in ("sigma", "rgb", "delta", "t"):
        assert interpreted[f"comp/grad/{key}_vs_torch"] < 1e-5, key
        assert interpreted[f"comp/grad/{key}_vs_ref"] < 1e-5, key
    assert interpreted["comp/half/dtype"] == "torch.float16"
    assert interpreted["comp/half/rgb_vs_ref"] < 3e-3 and interpreted["comp/half/depth_vs_ref"] < 3e-3


def test_dispatch_under_interpreter(interpreted):
    assert interpreted["dispatch/available"] and interpreted["dispatch/auto_cpu_uses_torch"]
    assert interpreted["dispatch/restored"] == "auto" and interpreted["dispatch/use_backend_equals_forced"]


def test_forcing_triton_where_it_cannot_run_explains(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    sigma, rgb = torch.rand(2, 3), torch.rand(2, 3, 3)
    with pytest.raises(ValueError, match=r"composite: backend='triton' cannot run here: inputs are on cpu"):
        composite(sigma, rgb, sigma, sigma, backend="triton")
    with pytest.raises(ValueError, match=r"HashGridEncoder: backend='triton' cannot run here: dtype float64"):
        encoder = HashGridEncoder(HashGridConfig(**TINY), backend="triton").double()
        encoder(torch.rand(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend='cuda'"):
        composite(sigma, rgb, sigma, sigma, backend="cuda")
    with pytest.raises(ValueError, match="backend='fast'"):
        HashGridEncoder(HashGridConfig(**TINY), backend="fast")
    with pytest.raises(ValueError, match="set_backend"):
        triton_kernels.set_backend("gpu")
    assert triton_kernels.get_backend() == "auto"


def test_cpu_auto_is_the_torch_path_and_never_imports_triton():
    code = (
        "import sys, torch\n"
        "from singer_core.ops.hashgrid import TriPlaneEncoder, TriPlaneConfig\n"
        "from singer_core.ops.volume import composite\n"
        "g = torch.Generator().manual_seed(0)\n"
        "tri = TriPlaneEncoder(TriPlaneConfig(num_levels=3, base_resolution=4, max_resolution=16))\n"
        "x = torch.rand(50, 3, generator=g) * 2 - 1\n"
        "a = tri(x); tri.backend = 'torch'; b = tri(x)\n"
        "s, c = torch.rand(4, 6, generator=g), torch.rand(4, 6, 3, generator=g)\n"
        "p = composite(s, c, s, s, backend='auto')['rgb']; q = composite(s, c, s, s, backend='torch')['rgb']\n"
        "assert torch.equal(a, b) and torch.equal(p, q)\n"
        "assert 'triton' not in sys.modules, 'triton imported for CPU tensors'\n"
        "print('ok')\n")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-4000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the compiled kernels)")
def test_compiled_kernels_on_cuda():
    """On a GPU machine: the compiled kernels against the torch path on the same CUDA tensors."""
    if not triton_kernels.available() or triton_kernels.interpreting():
        pytest.skip("triton is not importable, or TRITON_INTERPRET is set")
    from singer_core.ops.hashgrid import PLANES, TriPlaneConfig, TriPlaneEncoder

    tri = TriPlaneEncoder(TriPlaneConfig()).cuda()
    with torch.no_grad():
        for param in tri.parameters():
            param.normal_()
    gen = torch.Generator().manual_seed(0)
    world = (torch.rand(4099, 3, generator=gen) * 2.2 - 1.1).cuda()
    grad_out = torch.randn(4099, tri.output_dim, generator=gen).cuda()
    runs = {}
    for backend in ("triton", "torch"):
        out, table_grads, point_grad = _tri_plane_run(tri, backend, world, grad_out)
        runs[backend] = [out, *table_grads, point_grad]
    # the point gradient jumps at cell edges, where fused multiply-adds may pick the other cell: skip those
    unit = (world.cpu().double() - tri.aabb_min.cpu().double()) / tri.aabb_size.cpu().double()
    edge = torch.full((4099,), float("inf"), dtype=torch.float64)
    for _, axes in PLANES:
        for level in tri.encoder_xy.levels:
            pos = unit[:, list(axes)] * level.scale + 0.5
            edge = torch.minimum(edge, (pos - pos.round()).abs().amin(dim=1))
    far = (edge > 1e-3).cuda()
    runs["triton"][-1], runs["torch"][-1] = runs["triton"][-1][far], runs["torch"][-1][far]
    for got, want in zip(runs["triton"], runs["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    sigma, rgb, delta, t, mask = (x.cuda() for x in _composite_data(37, 150, 3))
    outs = {}
    for backend in ("triton", "torch"):
        leaves = [x.clone().requires_grad_() for x in (sigma, rgb, delta.contiguous(), t)]
        out = composite(*leaves, mask=mask, background=0.5, backend=backend)
        values = [out[key] for key in ("rgb", "depth", "opacity", "weights", "transmittance")]
        torch.autograd.backward(values, [torch.ones_like(v) for v in values])
        outs[backend] = [v.detach() for v in values] + [leaf.grad for leaf in leaves]
    for got, want in zip(outs["triton"], outs["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=5e-5 * float(want.abs().max()) + 1e-7)


if __name__ == "__main__":
    _child_main()
