"""singer_core.face.render against independent references: a float64 per-pixel point-in-triangle +
depth-test loop, closed-form spherical-harmonics shading of a ray-traced sphere, float64 landmark
projection, and OpenCV's frontal-face Haar cascade on the rendered procedural head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from singer_core.face.morphable import (
    COEFF_SLICES,
    EXPRESSION_UNITS,
    Camera,
    to_camera,
    vertex_normals,
    zero_coeffs,
)
from singer_core.face.procedural import procedural_model
from singer_core.face.render import (
    RenderOutput,
    default_lighting,
    interpolate,
    rasterize,
    render_coeffs,
    render_mesh,
    sh_irradiance,
    shade,
)
from tests.references import rotation_f64

BACKENDS = ["numba", "torch"]


@pytest.fixture(scope="module")
def model():
    return procedural_model(seed=0)


# ----------------------------------------------------------------------------- float64 reference


def _reference_raster(pix: np.ndarray, depth: np.ndarray, tris: np.ndarray, size: int, cull: bool = True):
    """Per-pixel loop: the nearest covering triangle (ties to the smaller id), perspective-correct
    barycentrics, and a map of pixels whose answer is numerically ambiguous (on an edge, or two
    depths within 1e-6)."""
    ids = np.full((size, size), -1)
    bary = np.zeros((size, size, 3))
    zbuf = np.full((size, size), np.inf)
    ambiguous = np.zeros((size, size), bool)

    def cross(a, b):
        return a[0] * b[1] - a[1] * b[0]

    for y in range(size):
        for x in range(size):
            point = np.array([x, y], float)
            hits = []
            for t, (i0, i1, i2) in enumerate(tris):
                p0, p1, p2 = pix[i0], pix[i1], pix[i2]
                area = cross(p1 - p0, p2 - p0)
                if abs(area) < 1e-12 or (cull and area >= 0) or min(depth[[i0, i1, i2]]) <= 1e-3:
                    continue
                lam = np.array([cross(p2 - p1, point - p1), cross(p0 - p2, point - p2),
                                cross(p1 - p0, point - p0)]) / area
                if abs(lam.min()) < 1e-5:
                    ambiguous[y, x] = True
                if lam.min() < 0:
                    continue
                weights = lam / depth[[i0, i1, i2]]
                hits.append((1.0 / weights.sum(), t, weights / weights.sum()))
            if hits:
                hits.sort(key=lambda hit: (hit[0], hit[1]))
                zbuf[y, x], ids[y, x], bary[y, x] = hits[0]
                if len(hits) > 1 and hits[1][0] - hits[0][0] < 1e-6 * hits[0][0]:
                    ambiguous[y, x] = True
    return ids, bary, zbuf, ambiguous


def _random_mesh(seed: int, size: int, vertices: int = 14, triangles: int = 12):
    rng = np.random.default_rng(seed)
    pix = rng.uniform(-3, size + 3, size=(vertices, 2))
    depth = rng.uniform(1.0, 5.0, size=vertices)
    tris = np.stack([rng.choice(vertices, 3, replace=False) for _ in range(triangles)])
    return pix, depth, tris


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cull", [True, False])
def test_rasterizer_matches_float64_loop(backend, seed, cull):
    size = 20
    pix, depth, tris = _random_mesh(seed, size)
    ids_ref, bary_ref, z_ref, ambiguous = _reference_raster(pix, depth, tris, size, cull)
    colours = np.random.default_rng(seed + 10).uniform(size=(len(pix), 3))
    pix_t = torch.tensor(pix[None], dtype=torch.float32)
    depth_t = torch.tensor(depth[None], dtype=torch.float32)
    fragments = rasterize(pix_t, depth_t, torch.tensor(tris), size, cull_backfaces=cull, backend=backend)
    ids = fragments.triangle_ids[0].numpy()
    differ = ids != ids_ref
    assert not np.any(differ & ~ambiguous), f"{int((differ & ~ambiguous).sum())} unambiguous pixels differ"
    assert differ.mean() < 0.02
    assert (ids_ref >= 0).sum() > 50  # the meshes cover something
    same = (ids == ids_ref) & (ids >= 0)
    np.testing.assert_allclose(fragments.depth[0].numpy()[same], z_ref[same], rtol=1e-4)
    np.testing.assert_allclose(fragments.bary[0].numpy()[same], bary_ref[same], atol=2e-4)
    assert np.all(np.isinf(fragments.depth[0].numpy()[ids < 0]))
    image = interpolate(torch.tensor(colours[None], dtype=torch.float32), torch.tensor(tris), fragments)
    image = image[0].numpy()
    expected = np.einsum("hwk,hwkc->chw", bary_ref, colours[tris[np.maximum(ids_ref, 0)]])
    np.testing.assert_allclose(image[:, same], expected[:, same], atol=2e-4)
    assert np.all(image[:, ids < 0] == 0)


def test_backends_agree_exactly(model):
    for seed in range(4):
        pix, depth, tris = _random_mesh(seed, 48, vertices=40, triangles=60)
        args = (torch.tensor(pix[None], dtype=torch.float32), torch.tensor(depth[None], dtype=torch.float32),
                torch.tensor(tris), 48)
        fast, slow = rasterize(*args, backend="numba"), rasterize(*args, backend="torch")
        assert torch.equal(fast.triangle_ids, slow.triangle_ids)
    coeffs = zero_coeffs(3)
    coeffs[1, 80 + EXPRESSION_UNITS["jaw_open"]] = 1.0
    coeffs[2, 224:227] = torch.tensor([0.2, 0.5, -0.1])
    coeffs[:, 227:254] = default_lighting()
    fast = render_coeffs(model, coeffs, image_size=96, backend="numba")
    slow = render_coeffs(model, coeffs, image_size=96, backend="torch")
    assert torch.equal(fast.triangle_ids, slow.triangle_ids)
    np.testing.assert_allclose(fast.images.numpy(), slow.images.numpy(), atol=2e-6)
    np.testing.assert_allclose(fast.depth.numpy(), slow.depth.numpy(), atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_edges_leave_no_cracks(backend):
    # a 6 x 6 grid of quads whose vertices sit on pixel centres: many centres lie exactly on edges
    size, step, origin = 32, 4, 3.0
    coords = [(origin + step * i, origin + step * j) for j in range(7) for i in range(7)]
    pix = torch.tensor([coords], dtype=torch.float32)
    rng = np.random.default_rng(0)
    tris = []
    for j in range(6):
        for i in range(6):
            a, b, c, d = j * 7 + i, j * 7 + i + 1, (j + 1) * 7 + i, (j + 1) * 7 + i + 1
            # clockwise in pixels (y down) = counter-clockwise in the y-up model frame
            tris += [[a, c, b], [b, c, d]] if (i + j) % 2 else [[a, c, d], [a, d, b]]
    depth = torch.full((1, 49), 2.0)
    ids = rasterize(pix, depth, torch.tensor(tris), size, backend=backend).triangle_ids[0]
    inside = ids[3:28, 3:28]  # rows/columns 3 .. 27 are on or inside the grid
    assert bool((inside >= 0).all())
    assert bool((ids[:3] < 0).all()) and bool((ids[28:] < 0).all())
    # jitter the shared vertices: still no cracks
    pix_jitter = pix + torch.tensor(rng.uniform(-1.2, 1.2, (1, 49, 2)), dtype=torch.float32)
    border = [k for k in range(49) if k % 7 in (0, 6) or k // 7 in (0, 6)]
    pix_jitter[0, border] = pix[0, border]
    ids = rasterize(pix_jitter, depth, torch.tensor(tris), size, backend=backend).triangle_ids[0]
    assert bool((ids[3:28, 3:28] >= 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_back_faces_are_culled(backend):
    pix = torch.tensor([[[2.0, 2.0], [12.0, 3.0], [4.0, 13.0]]])
    depth = torch.full((1, 3), 3.0)
    front = torch.tensor([[0, 2, 1]])  # clockwise in pixels: front-facing
    back = torch.tensor([[0, 1, 2]])
    assert (rasterize(pix, depth, front, 16, backend=backend).triangle_ids >= 0).sum() > 20
    assert (rasterize(pix, depth, back, 16, backend=backend).triangle_ids >= 0).sum() == 0
    drawn = rasterize(pix, depth, back, 16, cull_backfaces=False, backend=backend).triangle_ids
    assert torch.equal(drawn >= 0, rasterize(pix, depth, front, 16, backend=backend).triangle_ids >= 0)
    behind = rasterize(pix, torch.full((1, 3), -1.0), front, 16, backend=backend).triangle_ids
    assert (behind >= 0).sum() == 0  # behind the camera


# ----------------------------------------------------------------------------- shading


def _sh_closed_form(normal: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's shading written from its definition: Lambertian SH with
    a = (pi, 2 pi / sqrt 3, 2 pi / sqrt 8), c = (1/sqrt(4 pi), sqrt 3/sqrt(4 pi), 3 sqrt 5/sqrt(12 pi)),
    initial light 0.8 on the constant band."""
    a = [math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)]
    c = [1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi),
         3 * math.sqrt(5) / math.sqrt(12 * math.pi)]
    x, y, z = normal[..., 0], normal[..., 1], normal[..., 2]
    basis = np.stack([
        np.full_like(x, a[0] * c[0]), -a[1] * c[1] * y, a[1] * c[1] * z, -a[1] * c[1] * x,
        a[2] * c[2] * x * y, -a[2] * c[2] * y * z, 0.5 * a[2] * c[2] / math.sqrt(3) * (3 * z * z - 1),
        -a[2] * c[2] * x * z,
        0.5 * a[2] * c[2] * (x * x - y * y)], -1)
    lit = gamma.reshape(3, 9).copy()
    lit[:, 0] += 0.8
    return basis @ lit.T


def test_sh_irradiance_values():
    normals = torch.randn(1, 50, 3, generator=torch.Generator().manual_seed(0))
    normals = torch.nn.functional.normalize(normals, dim=-1)
    gamma = torch.randn(1, 27, generator=torch.Generator().manual_seed(1)) * 0.3
    got = sh_irradiance(normals.double(), gamma.double())[0].numpy()
    expected = _sh_closed_form(normals[0].double().numpy(), gamma[0].double().numpy())
    np.testing.assert_allclose(got, expected, atol=1e-12)
    flat = sh_irradiance(normals, torch.zeros(1, 27))
    np.testing.assert_allclose(flat.numpy(), 0.8 * math.pi / math.sqrt(4 * math.pi), rtol=1e-6)  # 0.709
    albedo = torch.rand(1, 50, 3)
    np.testing.assert_allclose(shade(albedo, normals, gamma, ambient=0.1).numpy(),
                               (albedo * (sh_irradiance(normals, gamma) + 0.1)).numpy(), rtol=1e-6)


def _uv_sphere(rings: int = 48, segments: int = 96, radius: float = 1.0):
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    sin_t, cos_t = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([sin_t * np.sin(phi)[None], cos_t * np.ones_like(phi)[None], sin_t * np.cos(phi)[None]],
                    -1)
    ring = ring.reshape(-1, 3)
    points = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius
    tris = []
    for r in range(rings - 2):
        for s in range(segments):
            a, b = 1 + r * segments + s, 1 + r * segments + (s + 1) % segments
            c, d = a + segments, b + segments
            tris += [[a, c, d], [a, d, b]]
    for s in range(segments):
        tris.append([0, 1 + s, 1 + (s + 1) % segments])
        last = 1 + (rings - 2) * segments
        tris.append([len(points) - 1, last + (s + 1) % segments, last + s])
    tris = np.array(tris)
    normals = vertex_normals(torch.tensor(points[None]), torch.tensor(tris))[0].numpy()
    if (normals * points).sum(-1).mean() < 0:  # make the winding outward counter-clockwise
        tris = tris[:, ::-1].copy()
    return torch.tensor(points, dtype=torch.float32), torch.tensor(tris)


@pytest.mark.parametrize("mode", ["pixel", "vertex"])
def test_sphere_shading_matches_closed_form(mode):
    size, camera = 96, Camera(focal=340.0, image_size=96)  # sphere radius ~34 px
    points, tris = _uv_sphere()
    normals = vertex_normals(points[None], tris)
    assert float((normals[0] * points).sum(-1).min()) > 0.99  # outward winding
    gamma = torch.randn(1, 27, generator=torch.Generator().manual_seed(3)) * 0.15
    albedo = torch.tensor([0.6, 0.5, 0.4]).expand(1, len(points), 3)
    if mode == "pixel":
        def shader(color_img, normal_img):
            flat = shade(color_img.flatten(2).transpose(1, 2), normal_img.flatten(2).transpose(1, 2), gamma)
            return flat.transpose(1, 2).reshape(color_img.shape)

        colors = albedo
    else:
        colors, shader = shade(albedo, normals, gamma).clamp(0, 1), None
    out = render_mesh(to_camera(points[None], camera), colors, tris, image_size=size, camera=camera,
                      normals=normals, pixel_shader=shader)
    # ray-trace the exact sphere (centre at camera depth 10, radius 1)
    focal, centre = camera.focal_pixels(size), (size - 1) / 2
    v, u = np.mgrid[0:size, 0:size].astype(float)
    direction = np.stack([(u - centre) / focal, -(v - centre) / focal, np.ones_like(u)], -1)
    dd = (direction**2).sum(-1)
    b = direction[..., 2] * 10.0
    disc = b * b - dd * (100.0 - 1.0)
    hit = disc > 0
    t = (b - np.sqrt(np.where(hit, disc, 0))) / dd
    p = direction * t[..., None]
    normal_cam = p - np.array([0, 0, 10.0])
    normal_world = normal_cam * np.array([1, 1, -1])  # camera z = distance - world z
    irradiance = _sh_closed_form(normal_world, gamma[0].double().numpy())
    expected = np.clip(np.array([0.6, 0.5, 0.4]) * irradiance, 0, 1)
    mask = out.mask[0, 0].numpy() > 0
    interior = hit & (disc > 0.1 * disc.max())  # away from the silhouette
    assert np.array_equal(mask[interior], np.ones(interior.sum(), bool)) and mask.sum() > 0.25 * size * size
    assert abs(int(mask.sum()) - int(hit.sum())) < 0.02 * hit.sum()
    error = np.abs(out.images[0].permute(1, 2, 0).numpy() - expected)[interior]
    assert error.max() < (0.003 if mode == "pixel" else 0.006), error.max()


# ----------------------------------------------------------------------------- rendering the face



def test_landmarks_mask_and_depth_are_consistent(model):
    rng = torch.Generator().manual_seed(4)
    coeffs = zero_coeffs(2)
    coeffs[:, :80] = torch.randn(2, 80, generator=rng) * 0.7
    coeffs[:, 80:144] = torch.randn(2, 64, generator=rng) * 0.2
    coeffs[:, 224:227] = torch.tensor([[0.05, 0.15, -0.05], [-0.1, -0.2, 0.1]])
    coeffs[:, 254:257] = torch.tensor([[0.05, -0.03, 0.2], [-0.04, 0.02, -0.3]])
    size = 160
    out = render_coeffs(model, coeffs, image_size=size, background=(0.2, 0.4, 0.6))
    assert isinstance(out, RenderOutput)
    for k in range(2):
        c = coeffs[k].double().numpy()
        shape = (model.mean_shape.double().numpy() + model.id_basis.double().numpy() @ c[:80]
                 + model.exp_basis.double().numpy() @ c[80:144])
        world = shape @ rotation_f64(*c[224:227]).T + c[254:257]
        depth = 10.0 - world[:, 2]
        focal = 1015.0 * size / 224
        centre = (size - 1) / 2
        pixels = np.stack([focal * world[:, 0] / depth + centre, centre - focal * world[:, 1] / depth], -1)
        landmarks = pixels[model.landmarks68.numpy()]
        np.testing.assert_allclose(out.landmarks[k].double().numpy(), landmarks, atol=2e-3)
        np.testing.assert_allclose(out.vertices2d[k].double().numpy(), pixels, atol=2e-3)
        mask = out.mask[k, 0].numpy()
        assert np.array_equal(mask > 0, out.triangle_ids[k].numpy() >= 0)
        # inner landmarks (brows, nose, eyes, mouth) lie on the rendered face
        inner = np.round(pixels[model.landmarks68.numpy()[17:]]).astype(int)
        assert mask[inner[:, 1], inner[:, 0]].all()
        # the visible depth at the nose tip is the nose tip's depth
        tip = model.landmarks68[30].item()
        col, row = np.round(pixels[tip]).astype(int)
        assert abs(float(out.depth[k, 0, row, col]) - depth[tip]) < 0.02
        # the face is everything visible: background elsewhere
        background = ~(mask > 0)
        shown = out.images[k].permute(1, 2, 0).numpy()[background]
        np.testing.assert_allclose(shown, np.broadcast_to([0.2, 0.4, 0.6], shown.shape), atol=1e-6)
        assert np.isinf(out.depth[k, 0].numpy()[background]).all()
        covered_rows = np.flatnonzero(mask.any(1))
        assert covered_rows.min() <= pixels[:, 1].max() and covered_rows.max() >= 0


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_sizes(model, size):
    out = render_coeffs(model, zero_coeffs(1), image_size=size)
    assert out.images.shape == (1, 3, size, size) and out.mask.shape == (1, 1, size, size)
    assert out.depth.shape == (1, 1, size, size) and out.landmarks.shape == (1, 68, 2)
    assert out.images.dtype == torch.float32 and float(out.images.min()) >= 0 and float(out.images.max()) <= 1
    reference = render_coeffs(model, zero_coeffs(1), image_size=224)
    # (pixel + 0.5) / size is independent of the size (focal and principal point scale together)
    relative, expected = (out.landmarks + 0.5) / size, (reference.landmarks + 0.5) / 224
    np.testing.assert_allclose(relative.numpy(), expected.numpy(), atol=1e-5)
    assert abs(float(out.mask.mean()) - float(reference.mask.mean())) < 0.02


def test_backgrounds_and_errors(model):
    coeffs = zero_coeffs(2)
    black = render_coeffs(model, coeffs, image_size=64)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    textured = render_coeffs(model, coeffs, image_size=64, background=image)
    per_frame = render_coeffs(model, coeffs, image_size=64, background=image.expand(2, 3, 64, 64))
    assert torch.equal(textured.images, per_frame.images)
    outside = black.mask[:, :1] == 0
    assert torch.all(black.images.masked_select(outside.expand(-1, 3, -1, -1)) == 0)
    np.testing.assert_allclose(textured.images[0][outside[0].expand(3, -1, -1)].numpy(),
                               image[0][outside[0].expand(3, -1, -1)].numpy())
    face = black.mask[:, :1] > 0
    assert torch.equal(textured.images[face.expand(-1, 3, -1, -1)], black.images[face.expand(-1, 3, -1, -1)])
    with pytest.raises(ValueError, match=r"\(B=2 or 1, 3, 64, 64\)"):
        render_coeffs(model, coeffs, image_size=64, background=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="RGB triple"):
        render_coeffs(model, coeffs, image_size=64, background="white")
    with pytest.raises(ValueError, match=r"\(B, 257\)"):
        render_coeffs(model, torch.zeros(2, 256))
    with pytest.raises(ValueError, match=r"\(B, 257\)"):
        render_coeffs(model, torch.zeros(257))
    with pytest.raises(ValueError, match="image_size"):
        render_coeffs(model, coeffs, image_size=8)
    with pytest.raises(ValueError, match="antialias"):
        render_coeffs(model, coeffs, image_size=64, antialias=0)
    with pytest.raises(ValueError, match="shading"):
        render_coeffs(model, coeffs, image_size=64, shading="phong")
    with pytest.raises(ValueError, match=r"colors must be shaped \(B, V, 3\)"):
        render_mesh(torch.ones(1, 3, 3), torch.ones(1, 3, 4), torch.tensor([[0, 1, 2]]), image_size=32)


def test_antialiasing_is_supersampling(model):
    coeffs = zero_coeffs(1)
    coeffs[:, 227:254] = default_lighting()
    smooth = render_coeffs(model, coeffs, image_size=64, antialias=2, background=(0.3, 0.3, 0.3))
    big = render_coeffs(model, coeffs, image_size=128, background=(0.3, 0.3, 0.3))
    pooled = torch.nn.functional.avg_pool2d(big.images, 2)
    np.testing.assert_allclose(smooth.images.numpy(), pooled.numpy(), atol=1e-5)
    pooled_mask = torch.nn.functional.avg_pool2d(big.mask, 2)
    np.testing.assert_allclose(smooth.mask.numpy(), pooled_mask.numpy(), atol=1e-6)
    fractional = ((smooth.mask > 0) & (smooth.mask < 1)).sum()
    assert fractional > 20  # soft silhouette
    sharp = render_coeffs(model, coeffs, image_size=64)
    np.testing.assert_allclose(smooth.landmarks.numpy(), sharp.landmarks.numpy())


def test_rendering_is_deterministic_and_differentiable(model):
    coeffs = zero_coeffs(2)
    coeffs[:, 227:254] = default_lighting()
    coeffs[1, 80] = 0.7
    first = render_coeffs(model, coeffs, image_size=96)
    second = render_coeffs(model, coeffs, image_size=96)
    for field in ("images", "mask", "landmarks", "depth", "triangle_ids"):
        assert torch.equal(getattr(first, field), getattr(second, field)), field
    leaf = coeffs.clone().requires_grad_(True)
    out = render_coeffs(model, leaf, image_size=64)
    no_grad = render_coeffs(model, coeffs, image_size=64)  # the numba fast path
    np.testing.assert_allclose(out.images.detach().numpy(), no_grad.images.numpy(), atol=1e-5)
    (out.images.sum() + out.landmarks.sum()).backward()
    grad = leaf.grad
    assert torch.isfinite(grad).all()
    for name, part in COEFF_SLICES.items():
        assert float(grad[:, part].abs().sum()) > 0, name


def _luma(out, k=0):
    return (out.images[k] * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)


def test_expressions_show_in_the_image(model):
    coeffs = zero_coeffs(3)
    coeffs[:, 227:254] = default_lighting()
    coeffs[1, 80 + EXPRESSION_UNITS["jaw_open"]] = 1.0
    coeffs[2, 80 + EXPRESSION_UNITS["blink"]] = 1.0
    out = render_coeffs(model, coeffs, image_size=272)  # the face ~130 px wide
    rest, opened, blink = _luma(out, 0), _luma(out, 1), _luma(out, 2)
    mid = ((out.landmarks[1, 62] + out.landmarks[1, 66]) / 2).round().long()
    assert float(opened[mid[1], mid[0]]) < 0.15  # a dark mouth interior between the lips
    assert float(rest[mid[1], mid[0]]) > 0.3  # closed: lips and skin there
    for eye in ((37, 38, 40, 41), (43, 44, 46, 47)):
        centre = out.landmarks[0, list(eye)].mean(0).round().long()
        window = (slice(centre[1] - 2, centre[1] + 3), slice(centre[0] - 2, centre[0] + 3))
        assert float(rest[window].min()) < 0.15  # pupil
        assert float(blink[window].min()) > float(rest[window].min()) + 0.25  # lid skin covers it


def _textured_background(size: int) -> torch.Tensor:
    rng = np.random.default_rng(3)
    coarse = torch.from_numpy(rng.uniform(0, 1, (1, 3, 9, 9))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((rows // (size // 16) + cols // (size // 16)) % 2).float()
    return (0.7 * smooth + 0.3 * checker).clamp(0, 1)


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("background", ["plain", "textured"])
@pytest.mark.parametrize("lighting", ["default", "key light"])
def test_haar_cascade_detects_the_neutral_face(model, size, background, lighting):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Haar cascade (removed in OpenCV 5)")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty()
    coeffs = zero_coeffs(1)
    if lighting == "key light":
        coeffs[:, 227:254] = default_lighting()
    back = (0.5, 0.5, 0.5) if background == "plain" else _textured_background(size)
    out = render_coeffs(model, coeffs, image_size=size, background=back)
    rgb = (out.images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    faces = cascade.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), scaleFactor=1.1, minNeighbors=5)
    assert len(faces) >= 1
    x, y, w, h = max(faces, key=lambda box: box[2] * box[3])
    nose = out.landmarks[0, 30].numpy()
    assert x < nose[0] < x + w and y < nose[1] < y + h
    assert 0.4 * size < w <= size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model):
    coeffs = zero_coeffs(2)
    coeffs[1, 80] = 1.0
    coeffs[:, 227:254] = default_lighting()
    cpu = render_coeffs(model, coeffs, image_size=128)
    gpu = render_coeffs(model.to("cuda"), coeffs.cuda(), image_size=128)
    assert (gpu.triangle_ids.cpu() != cpu.triangle_ids).float().mean() < 1e-3
    np.testing.assert_allclose(gpu.images.cpu().numpy(), cpu.images.numpy(), atol=1e-3)
