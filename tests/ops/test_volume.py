"""singer_core.ops.volume against naive float64 loops: pinhole rays, slab ray/box intersection, stratified
bins, per-ray compositing with Instant-NGP early termination, the occupancy grid and its skipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from singer_core.ops.volume import (
    OccupancyGrid,
    PinholeCamera,
    camera_rays,
    composite,
    ray_aabb,
    stratified_samples,
)


def _pose(angle: float, axis: str, translation) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = {"y": [[c, 0, s], [0, 1, 0], [-s, 0, c]], "x": [[1, 0, 0], [0, c, -s], [0, s, c]]}[axis]
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.tensor(rot, dtype=torch.float64)
    pose[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return pose


def test_rays_known_camera():
    # identity pose, 2x2 image, f = 2, principal point at the centre: pixel (0, 0) looks up-left, forward -z
    origins, dirs = camera_rays(torch.eye(4, dtype=torch.float64), 2.0, 2.0, 1.0, 1.0, 2, 2)
    want = torch.tensor([-0.25, 0.25, -1.0], dtype=torch.float64)
    torch.testing.assert_close(dirs[0, 0], want / want.norm())
    torch.testing.assert_close(dirs[1, 1], torch.tensor([0.25, -0.25, -1.0], dtype=torch.float64) / want.norm())
    assert torch.all(origins == 0)
    _, cv = camera_rays(torch.eye(4, dtype=torch.float64), 2.0, 2.0, 1.0, 1.0, 2, 2, convention="opencv")
    torch.testing.assert_close(cv[0, 0], torch.tensor([-0.25, -0.25, 1.0], dtype=torch.float64) / want.norm())


def test_rays_match_naive_loop():
    pose = _pose(0.7, "y", [0.3, -0.2, 2.5]) @ _pose(-0.3, "x", [0, 0, 0])
    fx, fy, cx, cy, h, w = 30.0, 25.0, 9.5, 6.0, 11, 17
    cam = PinholeCamera(pose, fx, fy, cx, cy, w, h)
    origins, dirs = cam.rays(dtype=torch.float64)
    rot, trans = pose[:3, :3].numpy(), pose[:3, 3].numpy()
    for v in range(h):
        for u in range(w):
            d = np.array([(u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1.0])
            d = rot @ d
            np.testing.assert_allclose(dirs[v, u].numpy(), d / np.linalg.norm(d), atol=1e-12)
            np.testing.assert_allclose(origins[v, u].numpy(), trans)
    # resized: same rays through the same image fractions
    big = cam.resized(2 * h, 2 * w)
    _, dirs2 = big.rays(dtype=torch.float64)
    assert dirs2.shape == (2 * h, 2 * w, 3)
    d = rot @ np.array([(1 - cx) / fx, -(1 - cy) / fy, -1.0])  # pixel corner (1, 1) of the small image
    mid = (dirs2[1, 1] + dirs2[2, 2]).numpy()  # the four big pixels around it straddle it symmetrically
    np.testing.assert_allclose(mid / np.linalg.norm(mid), d / np.linalg.norm(d), atol=1e-3)


def _naive_slab(o, d, lo, hi):
    t_near, t_far = -np.inf, np.inf
    for a in range(3):
        if d[a] == 0:
            if o[a] < lo[a] or o[a] > hi[a]:
                return None
            continue
        t0, t1 = (lo[a] - o[a]) / d[a], (hi[a] - o[a]) / d[a]
        t_near, t_far = max(t_near, min(t0, t1)), min(t_far, max(t0, t1))
    return (t_near, t_far) if t_far > max(t_near, 0.0) else None


def test_ray_aabb_matches_naive_slab():
    gen = torch.Generator().manual_seed(0)
    o = torch.randn(400, 3, generator=gen, dtype=torch.float64) * 2
    d = torch.randn(400, 3, generator=gen, dtype=torch.float64)
    d[200:] = torch.rand(200, 3, generator=gen, dtype=torch.float64) * 0.8 - 0.4 - o[200:]  # aimed at the box
    d[:20, 0] = 0.0  # axis-parallel rays
    d[20:30, :2] = 0.0
    d = d / d.norm(dim=-1, keepdim=True)
    box = (-0.5, -1.0, -0.25, 0.5, 1.0, 0.75)
    near, far, hit = ray_aabb(o, d, box)
    hits = 0
    for i in range(400):
        want = _naive_slab(o[i].numpy(), d[i].numpy(), box[:3], box[3:])
        assert bool(hit[i]) == (want is not None), i
        if want is not None:
            hits += 1
            assert float(near[i]) == pytest.approx(max(want[0], 0.0), abs=1e-9)
            assert float(far[i]) == pytest.approx(want[1], abs=1e-9)
            for t in (float(near[i]), float(far[i])):  # the entry / exit points lie on the box
                p = (o[i] + t * d[i]).numpy()
                assert np.all(p >= np.array(box[:3]) - 1e-9) and np.all(p <= np.array(box[3:]) + 1e-9)
        else:
            assert float(near[i]) == float(far[i])
    assert 150 < hits < 400


def test_stratified_samples_bins_and_seed():
    near = torch.tensor([0.5, 1.0, 2.0])
    far = torch.tensor([1.5, 3.0, 2.0])
    t, deltas = stratified_samples(near, far, 8)
    width = ((far - near) / 8)[:, None]
    torch.testing.assert_close(t, near[:, None] + (torch.arange(8) + 0.5) * width)
    torch.testing.assert_close(deltas, width.expand(3, 8))
    t1, _ = stratified_samples(near, far, 8, perturb=True, generator=torch.Generator().manual_seed(3))
    t2, _ = stratified_samples(near, far, 8, perturb=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2)
    bins = near[:, None] + torch.arange(8) * width
    assert torch.all(t1 >= bins) and torch.all(t1 <= bins + width)
    assert not torch.equal(t1[:2], t[:2])


def _naive_composite(sigma, rgb, delta, t, bg, stop):
    """Instant-NGP's march: composite sample, update T, stop once T < stop."""
    out_rgb, depth, opacity, trans = np.zeros(3), 0.0, 0.0, 1.0
    for i in range(len(sigma)):
        alpha = 1.0 - math.exp(-sigma[i] * delta[i])
        w = trans * alpha
        out_rgb += w * rgb[i]
        depth += w * t[i]
        opacity += w
        trans *= 1.0 - alpha
        if trans < stop:
            break
    return out_rgb + (1 - opacity) * bg, depth, opacity


def test_composite_matches_naive_loop_with_early_termination():
    gen = torch.Generator().manual_seed(1)
    rays, samples = 40, 48
    sigma = torch.rand(rays, samples, generator=gen, dtype=torch.float64) * 12
    sigma[:10] *= 0.05  # thin rays that never terminate
    sigma[10:20, 5:8] = 500.0  # opaque walls: terminate early
    rgb = torch.rand(rays, samples, 3, generator=gen, dtype=torch.float64)
    t, delta = stratified_samples(torch.full((rays,), 1.0, dtype=torch.float64),
                                  torch.full((rays,), 3.0, dtype=torch.float64), samples)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    out = composite(sigma, rgb, delta, t, background=bg, early_stop=1e-4)
    for r in range(rays):
        want = _naive_composite(sigma[r].numpy(), rgb[r].numpy(), delta[r].numpy(), t[r].numpy(), bg.numpy(), 1e-4)
        np.testing.assert_allclose(out["rgb"][r].numpy(), want[0], atol=1e-12)
        assert float(out["depth"][r]) == pytest.approx(want[1], abs=1e-12)
        assert float(out["opacity"][r]) == pytest.approx(want[2], abs=1e-12)
    # termination drops at most the last 1e-4 of transmittance
    full = composite(sigma, rgb, delta, t, background=bg, early_stop=0.0)
    assert float((full["rgb"] - out["rgb"]).abs().max()) < 1e-4
    assert float((full["rgb"] - out["rgb"]).abs().max()) > 0  # it did terminate some rays
    # a mask equals zero density there
    mask = torch.rand(rays, samples, generator=gen) > 0.3
    masked = composite(sigma, rgb, delta, t, mask=mask, background=bg)
    zeroed = composite(sigma * mask, rgb, delta, t, background=bg)
    torch.testing.assert_close(masked["rgb"], zeroed["rgb"])


def test_composite_gradcheck():
    gen = torch.Generator().manual_seed(2)
    sigma = (torch.rand(3, 6, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    rgb = torch.rand(3, 6, 3, generator=gen, dtype=torch.float64).requires_grad_()
    t, delta = stratified_samples(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 6)

    def fn(s, c):
        out = composite(s, c, delta, t, background=0.5, early_stop=0.0)
        return out["rgb"], out["depth"]

    assert torch.autograd.gradcheck(fn, (sigma, rgb))
    # zero density still has a finite gradient (no cumprod-through-zero NaN)
    zero = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    composite(zero, torch.rand(2, 4, 3, dtype=torch.float64), delta[:2, :4], t[:2, :4])["rgb"].sum().backward()
    assert torch.isfinite(zero.grad).all()


def _block_density(points: torch.Tensor) -> torch.Tensor:
    """sigma = 40 inside the cell-aligned block [-0.5, 0.5) x [-0.25, 0.5) x [-0.5, 0.25) of an 8^3 grid on
    [-1, 1]^3, 0 elsewhere."""
    inside = ((points[:, 0] >= -0.5) & (points[:, 0] < 0.5) & (points[:, 1] >= -0.25) & (points[:, 1] < 0.5)
              & (points[:, 2] >= -0.5) & (points[:, 2] < 0.25))
    return inside.to(points.dtype) * 40.0


def test_occupancy_update_and_ema():
    grid = OccupancyGrid(resolution=8, threshold=1.0)
    assert grid.occupancy_ratio() == 1.0  # unknown = occupied
    grid.update(_block_density, jitter=False)
    assert grid.occupied.sum() == 4 * 3 * 3
    assert bool(grid.occupied[2:6, 3:6, 2:5].all())
    # EMA: density = max(old * decay, new)
    grid.update(lambda p: torch.zeros(p.shape[0]), decay=0.5, jitter=False)
    assert float(grid.density.max()) == pytest.approx(20.0)
    grid.update(lambda p: torch.zeros(p.shape[0]), decay=0.5, jitter=True, generator=torch.Generator().manual_seed(0))
    assert float(grid.density.max()) == pytest.approx(10.0)
    assert grid.occupied.sum() == 36  # threshold is min(mean, 1.0): still the block
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9], [1.5, 0.0, 0.0]])
    assert grid.query(pts).tolist() == [True, False, False]


def test_occupancy_skipping_gives_same_image():
    grid = OccupancyGrid(resolution=8, threshold=1.0)
    grid.update(_block_density, jitter=False)
    pose = _pose(0.5, "y", [1.2, 0.3, 2.8])
    origins, dirs = camera_rays(pose.float(), 20.0, 20.0, 12.0, 12.0, 24, 24)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    near, far, hit = ray_aabb(origins, dirs, (-1, -1, -1, 1, 1, 1))
    t, delta = stratified_samples(near, far, 64)
    points = origins[:, None] + dirs[:, None] * t[..., None]
    flat = points.reshape(-1, 3)
    sigma = _block_density(flat).view(t.shape)
    rgb = (flat * 0.5 + 0.5).clamp(0, 1).view(*t.shape, 3)
    live = grid.query(points) & hit[:, None]
    assert 0.005 < live.float().mean() < 0.5  # skipping removes most samples
    skipped_sigma = torch.where(live, sigma, torch.full_like(sigma, float("nan")))  # never read
    skipped = composite(torch.nan_to_num(skipped_sigma, nan=0.0), rgb * live[..., None], delta, t, mask=live,
                        background=1.0)
    dense = composite(sigma, rgb, delta, t, background=1.0)
    torch.testing.assert_close(skipped["rgb"], dense["rgb"], rtol=0, atol=1e-6)
    torch.testing.assert_close(skipped["depth"], dense["depth"], rtol=0, atol=1e-5)
    assert float(dense["opacity"].max()) > 0.99  # the block is visible


def test_errors():
    with pytest.raises(ValueError, match="camera-to-world"):
        camera_rays(torch.eye(3), 1, 1, 0, 0, 2, 2)
    with pytest.raises(ValueError, match=r"\(R, S\)"):
        composite(torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3))
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid(aabb=(0, 0, 0, 1, 1, -1))


def test_occupancy_partial_update_touches_only_its_cells():
    grid = OccupancyGrid(resolution=8, threshold=1.0)
    grid.update(_block_density, jitter=False)
    before = grid.density.clone()
    grid.update(lambda p: torch.full((p.shape[0],), 100.0), decay=0.5, jitter=False, fraction=0.25,
                generator=torch.Generator().manual_seed(0))
    changed = grid.density != before
    assert int(changed.sum()) == 128  # a quarter of the 512 cells
    assert torch.all(grid.density[changed] == 100.0) and torch.all(grid.density[~changed] == before[~changed])
    fresh = OccupancyGrid(resolution=4)
    fresh.update(lambda p: torch.zeros(p.shape[0]), fraction=0.5, generator=torch.Generator().manual_seed(1))
    assert int(fresh.occupied.sum()) == 32  # the 32 cells never seen stay occupied (unknown)
    with pytest.raises(ValueError, match="fraction"):
        grid.update(_block_density, fraction=0.0)
