"""singer_core.nerf: SH basis against scipy's closed-form spherical harmonics, the field's equations against a
float64 re-computation, and the renderer against a naive per-pixel march."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from singer_core.nerf.field import AudioConditionedField, AudioFieldConfig, spherical_harmonics
from singer_core.nerf.renderer import render, render_rays
from singer_core.ops.volume import OccupancyGrid, PinholeCamera

TINY = AudioFieldConfig(num_levels=3, base_resolution=4, max_resolution=16, log2_table_size=6, audio_dim=8,
                        hidden_dim=16, geo_feat_dim=8, color_hidden_dim=16, num_frames=3)


def _real_sh(band: int, m: int, dirs: np.ndarray) -> np.ndarray:
    special = pytest.importorskip("scipy.special")
    polar = np.arccos(np.clip(dirs[:, 2], -1, 1))
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    y = special.sph_harm_y(band, abs(m), polar, azimuth)  # complex, Condon-Shortley phase included
    if m < 0:
        return math.sqrt(2) * y.imag
    if m > 0:
        return math.sqrt(2) * y.real
    return y.real


def test_spherical_harmonics_match_closed_form():
    dirs = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    got = spherical_harmonics(dirs, 4).numpy()
    assert got.shape == (500, 16)
    for band in range(4):
        for m in range(-band, band + 1):
            np.testing.assert_allclose(got[:, band * band + band + m], _real_sh(band, m, dirs.numpy()),
                                       atol=1e-12, err_msg=f"l={band} m={m}")
    # orthonormal on the sphere: Monte-Carlo Gram matrix ~ identity / (4 pi)
    many = torch.randn(200000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    basis = spherical_harmonics(many / many.norm(dim=-1, keepdim=True), 4)
    gram = (basis.T @ basis / many.shape[0] * 4 * math.pi).numpy()
    np.testing.assert_allclose(gram, np.eye(16), atol=0.02)
    assert spherical_harmonics(dirs, 2).shape == (500, 4)


def _mlp(x: np.ndarray, module) -> np.ndarray:
    layers = list(module.net)
    for i, layer in enumerate(layers):
        x = x @ layer.weight.detach().double().numpy().T
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def test_field_equations_float64():
    torch.manual_seed(0)
    field = AudioConditionedField(AudioFieldConfig(**{**TINY.__dict__, "eye_dim": 1})).double()
    field.encoder.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        for enc in (field.encoder.encoder_xy, field.encoder.encoder_yz, field.encoder.encoder_xz):
            enc.embeddings.mul_(1e3)
    gen = torch.Generator().manual_seed(2)
    pts = torch.rand(30, 3, generator=gen, dtype=torch.float64) * 1.8 - 0.9
    dirs = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    audio = torch.randn(8, generator=gen, dtype=torch.float64)
    eye = torch.tensor([0.3], dtype=torch.float64)
    sigma, rgb = field(pts, dirs, audio, 2, eye=eye)
    # re-computation from the module docstring's equations
    enc = field.encoder(pts).detach().numpy()
    a = audio.numpy()[None] * _mlp(enc, field.aud_ch_att_net)
    e = 0.3 / (1 + np.exp(-_mlp(enc, field.eye_att_net)))
    h = _mlp(np.concatenate([enc, a, e], axis=1), field.sigma_net)
    np.testing.assert_allclose(sigma.detach().numpy(), np.exp(h[:, 0]), rtol=1e-10)
    code = field.individual_codes[2].detach().numpy()
    colour_in = np.concatenate([spherical_harmonics(dirs).numpy(), h[:, 1:], np.repeat(code[None], 30, 0)], axis=1)
    want = 1 / (1 + np.exp(-_mlp(colour_in, field.color_net))) * (1 + 2e-3) - 1e-3
    np.testing.assert_allclose(rgb.detach().numpy(), want, rtol=1e-10)
    # parameter names follow ER-NeRF
    names = set(dict(field.named_parameters()))
    assert {"encoder.encoder_xy.embeddings", "sigma_net.net.0.weight", "color_net.net.1.weight",
            "aud_ch_att_net.net.0.weight", "individual_codes"} <= names
    with pytest.raises(ValueError, match="frame_index"):
        field(pts, dirs, audio, 3, eye=eye)
    with pytest.raises(ValueError, match="audio"):
        field(pts, dirs, torch.zeros(7, dtype=torch.float64), 0, eye=eye)


def test_er_nerf_default_sizes():
    field = AudioConditionedField()
    assert field.encoder.output_dim == 36
    assert field.sigma_net.net[0].weight.shape == (64, 36 + 64)
    assert field.sigma_net.net[-1].weight.shape == (65, 64) and len(field.sigma_net.net) == 3
    assert field.color_net.net[0].weight.shape == (64, 16 + 64 + 4)


def test_save_load_round_trip(tmp_path):
    field = AudioConditionedField(TINY)
    field.save_pretrained(tmp_path / "nerf")
    loaded = AudioConditionedField.from_pretrained(tmp_path / "nerf")
    assert loaded.config == TINY
    pts = torch.rand(5, 3) - 0.5
    dirs = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    audio = torch.randn(8)
    for a, b in zip(field(pts, dirs, audio, 1), loaded(pts, dirs, audio, 1), strict=True):
        torch.testing.assert_close(a, b)


def _camera(size: int = 6) -> PinholeCamera:
    pose = torch.eye(4)
    pose[2, 3] = 2.5
    return PinholeCamera(pose, 1.2 * size, 1.2 * size, size / 2, size / 2, size, size)


def test_render_matches_naive_march():
    torch.manual_seed(3)
    field = AudioConditionedField(TINY).double()
    with torch.no_grad():
        field.sigma_net.net[-1].weight[0] += 0.4  # a denser head, so the rays see something
    cam = _camera()
    audio = torch.randn(8, dtype=torch.float64)
    with torch.no_grad():
        out = render(field, cam, audio, 1, num_samples=24, background=0.25, chunk=7)
    assert out["rgb"].shape == (6, 6, 3) and out["depth"].shape == (6, 6) and out["alpha"].shape == (6, 6)
    assert 0.05 < float(out["alpha"].mean()) < 0.999
    for v, u in [(0, 0), (2, 3), (5, 1), (3, 3)]:
        d = np.array([(u + 0.5 - 3) / 7.2, -(v + 0.5 - 3) / 7.2, -1.0])
        d /= np.linalg.norm(d)
        o = np.array([0.0, 0.0, 2.5])
        ts = [(o[a] - s) / -d[a] if d[a] else np.inf for a in range(3) for s in (-1, 1)]
        near = max(min(ts[2 * a], ts[2 * a + 1]) for a in range(3))
        far = min(max(ts[2 * a], ts[2 * a + 1]) for a in range(3))
        colour, trans, depth = np.zeros(3), 1.0, 0.0
        step = (far - near) / 24
        for i in range(24):
            t = near + (i + 0.5) * step
            p = torch.tensor(o + t * d)[None]
            with torch.no_grad():
                sigma, rgb = field(p, torch.tensor(d)[None], audio, 1)
            alpha = 1 - math.exp(-float(sigma) * step)
            colour += trans * alpha * rgb[0].numpy()
            depth += trans * alpha * t
            trans *= 1 - alpha
            if trans < 1e-4:
                break
        np.testing.assert_allclose(out["rgb"][v, u].numpy(), colour + trans * 0.25, atol=1e-9)
        assert float(out["depth"][v, u]) == pytest.approx(depth, abs=1e-9)


class _BlockField(torch.nn.Module):
    """A field with sigma = 30 in a cell-aligned block and 0 elsewhere (exact for the occupancy grid)."""

    aabb = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = 0

    def density(self, points, audio, eye=None):
        self.calls += points.shape[0]
        inside = ((points >= -0.5) & (points < 0.25)).all(dim=-1)
        return inside.float() * 30.0 * self.scale, points

    def color(self, directions, geo, frame_index):
        return (geo * 0.5 + 0.5).clamp(0, 1)


def test_renderer_occupancy_skipping_same_image_fewer_evaluations():
    field = _BlockField()
    grid = OccupancyGrid(resolution=8, threshold=1.0)
    grid.update(lambda p: field.density(p, None)[0], jitter=False)
    cam = _camera(16)
    cam = PinholeCamera(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy, 16, 16)
    field.calls = 0
    full = render(field, cam, torch.zeros(1), num_samples=48)
    calls_full, field.calls = field.calls, 0
    skipped = render(field, cam, torch.zeros(1), num_samples=48, occupancy=grid)
    assert field.calls < calls_full / 3
    for key in ("rgb", "depth", "alpha"):
        torch.testing.assert_close(skipped[key], full[key], rtol=0, atol=1e-6)
    assert float(full["alpha"].detach().max()) > 0.99


def test_render_rays_gradients_and_progress():
    field = AudioConditionedField(TINY)
    cam = _camera()
    origins, dirs = cam.rays()
    out = render_rays(field, origins.reshape(-1, 3), dirs.reshape(-1, 3), torch.randn(8), 0, num_samples=16,
                      perturb=True, generator=torch.Generator().manual_seed(0))
    out["rgb"].sum().backward()
    for name in ("encoder.encoder_xy.embeddings", "sigma_net.net.0.weight", "color_net.net.0.weight",
                 "individual_codes"):
        grad = dict(field.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert float(field.individual_codes.grad[1:].abs().sum()) == 0  # only frame 0 was rendered
    seen = []
    with torch.no_grad():
        a = render(field, cam, torch.randn(8, generator=torch.Generator().manual_seed(1)), 0, num_samples=8,
                   chunk=10, progress=lambda done, total: seen.append((done, total)), image_size=(4, 5))
    assert a["rgb"].shape == (4, 5, 3) and seen[-1] == (20, 20) and len(seen) == 2

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(field, cam, torch.randn(8), 0, num_samples=4, chunk=4, progress=stop)


class _BallField(_BlockField):
    """sigma = 30 inside the ball of radius 0.8: rays that hit it become opaque after ~0.3."""

    def density(self, points, audio, eye=None):
        self.calls += points.shape[0]
        return (points.norm(dim=-1) < 0.8).float() * 30.0 * self.scale, points


def test_early_termination_skips_work_not_pixels():
    field = _BallField()
    cam = _camera(12)
    with torch.no_grad():
        field.calls = 0
        once = render(field, cam, torch.zeros(1), num_samples=64, march_group=None)
        calls_once, field.calls = field.calls, 0
        grouped = render(field, cam, torch.zeros(1), num_samples=64, march_group=4)
    assert field.calls < 0.75 * calls_once
    for key in ("rgb", "depth", "alpha"):
        torch.testing.assert_close(grouped[key], once[key], rtol=0, atol=1e-6)
    assert float(once["alpha"].max()) > 0.999
