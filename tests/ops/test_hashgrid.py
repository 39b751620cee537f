"""singer_core.ops.hashgrid against a naive float64 per-point loop of the Instant-NGP / torch-ngp grid rules,
torch.autograd.gradcheck, and the tri-plane definition of DAMC §2.4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from singer_core.ops.hashgrid import (
    HashGridConfig,
    HashGridEncoder,
    TriPlaneConfig,
    TriPlaneEncoder,
)


def naive_encode(points: np.ndarray, table: np.ndarray, *, dim, levels, base, top, log2_t) -> np.ndarray:
    """Per point, per level, per corner: the torch-ngp gridencoder rules written out in float64 Python."""
    primes = [1, 2654435761, 805459861]
    t_max = 2 ** log2_t
    growth = 2.0 ** (math.log2(top / base) / (levels - 1))
    sizes, offsets, offset = [], [], 0
    for lvl in range(levels):
        res = math.ceil(base * growth ** lvl - 1.0) + 1
        sizes.append(min(t_max, (res + 1) ** dim))
        offsets.append(offset)
        offset += sizes[-1]
    assert offset == table.shape[0]
    out = np.zeros((len(points), levels, table.shape[1]))
    for n, u in enumerate(points):
        if np.any(u < 0) or np.any(u > 1):
            continue
        for lvl in range(levels):
            scale = base * growth ** lvl - 1.0
            res = math.ceil(scale) + 1
            pos = [float(c) * scale + 0.5 for c in u]
            low = [math.floor(p) for p in pos]
            frac = [p - f for p, f in zip(pos, low, strict=True)]
            for corner in range(2 ** dim):
                w, grid = 1.0, []
                for d in range(dim):
                    up = (corner >> d) & 1
                    w *= frac[d] if up else 1.0 - frac[d]
                    grid.append(low[d] + up)
                if (res + 1) ** dim <= t_max:
                    idx = sum(g * (res + 1) ** d for d, g in enumerate(grid))
                else:
                    idx = 0
                    for d, g in enumerate(grid):
                        idx ^= (g * primes[d]) % 2 ** 32
                idx = idx % sizes[lvl] + offsets[lvl]
                out[n, lvl] += w * table[idx]
    return out.reshape(len(points), -1)


TINY = dict(num_levels=4, base_resolution=4, max_resolution=32, log2_table_size=6)


@pytest.mark.parametrize("dim,features,log2_t", [(2, 1, 6), (2, 2, 6), (3, 1, 7)])
def test_encoding_matches_naive_loop(dim, features, log2_t):
    cfg = HashGridConfig(input_dim=dim, features_per_level=features, **{**TINY, "log2_table_size": log2_t})
    enc = HashGridEncoder(cfg).double()
    assert any(lv.dense for lv in enc.levels) and not all(lv.dense for lv in enc.levels)  # both index paths
    with torch.no_grad():
        enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(200, dim, generator=gen, dtype=torch.float64)
    pts[:5] = torch.tensor([[0.0] * dim, [1.0] * dim, [0.5] * dim, [1.0 - 1e-9] * dim, [1e-12] * dim],
                           dtype=torch.float64)
    pts[5:8] = torch.tensor([[-0.1] + [0.5] * (dim - 1), [1.2] + [0.5] * (dim - 1), [0.5] * (dim - 1) + [1.5]],
                            dtype=torch.float64)  # outside: 0
    got = enc(pts).detach().numpy()
    want = naive_encode(pts.numpy(), enc.embeddings.detach().numpy(), dim=dim, levels=4, base=4, top=32,
                        log2_t=log2_t)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(got[5:8] == 0)
    # float32 path agrees with the float64 one
    got32 = HashGridEncoder(enc.config).float()
    got32.load_state_dict({"embeddings": enc.embeddings.float()})
    np.testing.assert_allclose(got32(pts.float()).detach().numpy(), want, atol=1e-5)


def test_er_nerf_default_geometry():
    enc = HashGridEncoder()
    growth = 8.0 ** (1 / 11)
    assert enc.config.growth == pytest.approx(growth)
    resolutions = [lv.resolution for lv in enc.levels]
    assert resolutions == [math.ceil(64 * growth ** lvl - 1) + 1 for lvl in range(12)]
    assert resolutions[0] == 64 and resolutions[-1] == 512
    # dense while (res + 1)^2 <= 2^14
    assert [lv.dense for lv in enc.levels] == [(r + 1) ** 2 <= 16384 for r in resolutions]
    assert enc.embeddings.shape == (sum(min(16384, (r + 1) ** 2) for r in resolutions), 1)
    assert enc.output_dim == 12
    assert float(enc.embeddings.detach().abs().max()) <= 1e-4


def test_er_nerf_default_tri_plane_matches_naive_loop():
    """Full-size planes: 8 hashed levels with coordinates up to 513 (the uint32 hash wraps around)."""
    tri = TriPlaneEncoder()
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for enc in (tri.encoder_xy, tri.encoder_yz, tri.encoder_xz):
            enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=gen))
    pts = torch.rand(12, 3, generator=torch.Generator().manual_seed(9)) * 2 - 1
    pts[0] = torch.tensor([0.999, -0.999, 0.5])
    got = tri(pts).detach().double().numpy()
    unit = ((pts.double() + 1) / 2).numpy()
    want = np.concatenate([
        naive_encode(unit[:, axes], getattr(tri, f"encoder_{name}").embeddings.detach().double().numpy(),
                     dim=2, levels=12, base=64, top=512, log2_t=14)
        for name, axes in (("xy", [0, 1]), ("yz", [1, 2]), ("xz", [0, 2]))], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)  # float32 positions; a wrong row is O(1) off


def test_gradcheck_table_and_inputs():
    cfg = HashGridConfig(input_dim=2, features_per_level=2, num_levels=3, base_resolution=3,
                         max_resolution=12, log2_table_size=4)
    enc = HashGridEncoder(cfg).double()
    with torch.no_grad():
        enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=torch.Generator().manual_seed(2)))
    pts = torch.rand(12, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.9 + 0.05

    def by_table(table):  # custom autograd function (inputs without grad)
        return torch.func.functional_call(enc, {"embeddings": table}, (pts,))

    assert torch.autograd.gradcheck(by_table, (enc.embeddings.detach().clone().requires_grad_(),))

    def by_inputs(x):  # plain-autograd path, differentiable in the coordinates
        return enc(x)

    assert torch.autograd.gradcheck(by_inputs, (pts.clone().requires_grad_(),))


def test_boundary_points_keep_the_one_sided_derivative():
    """A coordinate exactly on 0 or 1 gets the derivative of its own cell, measured by a one-sided float64
    finite difference (into the box), on every torch release (torch 2.14's clamp backward is 0 there)."""
    cfg = HashGridConfig(input_dim=2, features_per_level=1, num_levels=3, base_resolution=3,
                         max_resolution=12, log2_table_size=4)
    enc = HashGridEncoder(cfg).double()
    with torch.no_grad():
        enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=torch.Generator().manual_seed(5)))
    pts = torch.tensor([[0.0, 0.4], [1.0, 0.7], [0.3, 0.0], [0.6, 1.0]], dtype=torch.float64)
    x = pts.clone().requires_grad_()
    enc(x).sum().backward()
    step = 1e-7
    for row, axis in ((0, 0), (1, 0), (2, 1), (3, 1)):
        inward = 1.0 if pts[row, axis] == 0 else -1.0
        moved = pts.clone()
        moved[row, axis] += inward * step
        with torch.no_grad():
            slope = (enc(moved)[row].sum() - enc(pts)[row].sum()) / (inward * step)
        assert abs(float(x.grad[row, axis]) - float(slope)) < 1e-5 * max(1.0, abs(float(slope)))
        assert float(x.grad[row, axis]) != 0.0


def test_custom_backward_equals_autograd_path():
    enc = HashGridEncoder(HashGridConfig(**TINY, features_per_level=2)).double()
    pts = torch.rand(300, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    weights = torch.randn(300, enc.output_dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (enc(pts) * weights).sum().backward()
    fast = enc.embeddings.grad.clone()
    enc.zero_grad()
    (enc(pts.clone().requires_grad_()) * weights).sum().backward()
    torch.testing.assert_close(fast, enc.embeddings.grad, rtol=1e-12, atol=1e-12)


def test_triplane_is_concatenation_of_planes():
    cfg = TriPlaneConfig(aabb=(-1.0, -2.0, 0.0, 1.0, 2.0, 4.0), **TINY)
    tri = TriPlaneEncoder(cfg).double()
    tri.reset_parameters(torch.Generator().manual_seed(6))
    for enc in (tri.encoder_xy, tri.encoder_yz, tri.encoder_xz):
        with torch.no_grad():
            enc.embeddings.mul_(1e4)
    pts = torch.rand(50, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    world = pts * torch.tensor([2.0, 4.0, 4.0], dtype=torch.float64) + torch.tensor([-1.0, -2.0, 0.0],
                                                                                    dtype=torch.float64)
    feats = tri(world)
    assert feats.shape == (50, 3 * 4) and tri.output_dim == 12
    table = {name: getattr(tri, f"encoder_{name}").embeddings.detach().numpy() for name in ("xy", "yz", "xz")}
    want = np.concatenate([
        naive_encode(pts.numpy()[:, axes], table[name], dim=2, levels=4, base=4, top=32, log2_t=6)
        for name, axes in (("xy", [0, 1]), ("yz", [1, 2]), ("xz", [0, 2]))], axis=1)
    np.testing.assert_allclose(feats.detach().numpy(), want, rtol=1e-10, atol=1e-10)
    assert set(dict(tri.named_parameters())) == {"encoder_xy.embeddings", "encoder_yz.embeddings",
                                                 "encoder_xz.embeddings"}


def test_config_round_trip_and_errors():
    cfg = TriPlaneConfig(num_levels=5)
    assert TriPlaneConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        HashGridConfig.from_json('{"levels": 3}')
    with pytest.raises(ValueError, match="input_dim"):
        HashGridConfig(input_dim=4)
    with pytest.raises(ValueError, match="last axis"):
        HashGridEncoder()(torch.rand(4, 3))
    with pytest.raises(ValueError, match="aabb"):
        TriPlaneConfig(aabb=(0, 0, 0, 1, -1, 1))
