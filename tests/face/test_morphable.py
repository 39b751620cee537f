"""singer_core.face.morphable / procedural / bfm against independent references: float64 closed-form
rotations, hand-computed projections, Deep3DFaceRecon's formulas written out in numpy for a synthetic
BFM_model_front.mat, and geometric checks of the procedural head's expression units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from singer_core.face.morphable import (
    COEFF_SLICES,
    EXPRESSION_UNITS,
    NUM_COEFFS,
    Camera,
    MorphableModel,
    euler_to_rotation,
    join_coeffs,
    project,
    split_coeffs,
    to_camera,
    transform,
    vertex_normals,
    zero_coeffs,
)
from singer_core.face.procedural import procedural_model
from tests.references import rotation_f64


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return procedural_model(seed=0)


def _random(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- coefficients


def test_layout_is_deep3dfacerecon():
    sizes = {name: part.stop - part.start for name, part in COEFF_SLICES.items()}
    assert sizes == {"id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27, "trans": 3}
    starts = [part.start for part in COEFF_SLICES.values()]
    assert starts == [0, 80, 144, 224, 227, 254] and NUM_COEFFS == 257


def test_split_join_round_trip():
    coeffs = _random((2, 5, 257))
    parts = split_coeffs(coeffs)
    assert parts["exp"].shape == (2, 5, 64)
    assert torch.equal(parts["trans"], coeffs[..., 254:])
    assert torch.equal(join_coeffs(**parts), coeffs)


def test_join_errors():
    parts = split_coeffs(_random((3, 257)))
    with pytest.raises(TypeError):
        join_coeffs(**{k: v for k, v in parts.items() if k != "gamma"})
    with pytest.raises(ValueError, match="'exp' must be shaped"):
        join_coeffs(**{**parts, "exp": torch.zeros(3, 63)})
    with pytest.raises(ValueError, match="leading shape"):
        join_coeffs(**{**parts, "id": torch.zeros(80)})
    with pytest.raises(ValueError, match="257"):
        split_coeffs(torch.zeros(2, 256))


def test_model_rejects_wrong_coefficient_shapes(model):
    with pytest.raises(ValueError, match=r"id_coeff must be shaped \(B, 80\)"):
        model.vertices(torch.zeros(1, 79), torch.zeros(1, 64))
    with pytest.raises(ValueError, match="exp_coeff"):
        model.vertices(torch.zeros(1, 80), torch.zeros(64))
    with pytest.raises(ValueError, match="tex_coeff"):
        model.albedo(torch.zeros(2, 81))
    with pytest.raises(ValueError, match=r"angles must be shaped \(B, 3\)"):
        euler_to_rotation(torch.zeros(3))


# ----------------------------------------------------------------------------- pose and camera



def test_rotation_matches_closed_form_and_is_orthonormal():
    angles = _random((16, 3), seed=1, dtype=torch.float64) * 1.5
    rotation = euler_to_rotation(angles)
    for k in range(16):
        expected = rotation_f64(*angles[k].tolist())
        np.testing.assert_allclose(rotation[k].numpy(), expected, atol=1e-14)
    eye = rotation @ rotation.transpose(1, 2)
    np.testing.assert_allclose(eye.numpy(), np.broadcast_to(np.eye(3), eye.shape), atol=1e-13)
    np.testing.assert_allclose(torch.linalg.det(rotation).numpy(), 1.0, atol=1e-13)
    single = euler_to_rotation(angles.float())
    np.testing.assert_allclose(single.numpy(), rotation.numpy(), atol=2e-6)


def test_rotation_senses():
    nose = torch.tensor([[[0.0, 0.0, 1.0]]])
    zero = torch.zeros(1, 3)
    yawed = transform(nose, torch.tensor([[0.0, 0.3, 0.0]]), zero)[0, 0]
    pitched = transform(nose, torch.tensor([[0.3, 0.0, 0.0]]), zero)[0, 0]
    rolled = transform(torch.tensor([[[1.0, 0.0, 0.0]]]), torch.tensor([[0.0, 0.0, 0.3]]), zero)[0, 0]
    assert yawed[0] > 0.29  # nose turns to the image right
    assert pitched[1] < -0.29  # nose goes down
    assert rolled[1] > 0.29  # x axis turns up: counter-clockwise in the image


def test_transform_is_deep3dfacerecon_row_vector_form():
    points = _random((2, 7, 3), seed=2, dtype=torch.float64)
    angles = _random((2, 3), seed=3, dtype=torch.float64)
    trans = _random((2, 3), seed=4, dtype=torch.float64)
    out = transform(points, angles, trans)
    for k in range(2):
        rot_t = rotation_f64(*angles[k].tolist()).T  # what Deep3DFaceRecon's compute_rotation returns
        np.testing.assert_allclose(out[k].numpy(), points[k].numpy() @ rot_t + trans[k].numpy(), atol=1e-13)


def test_projection_by_hand():
    points = torch.tensor([[[1.0, 0.5, 0.0], [0.0, 0.0, 2.0], [-0.4, -0.2, 1.0]]], dtype=torch.float64)
    pixels, depth = project(points, Camera(), 224)
    # depth 10 - z; u = 1015 x / depth + 111.5; v = 111.5 - 1015 y / depth
    np.testing.assert_allclose(depth[0].numpy(), [10.0, 8.0, 9.0])
    np.testing.assert_allclose(pixels[0].numpy(), [[213.0, 60.75], [111.5, 111.5],
                                                   [111.5 - 406.0 / 9.0, 111.5 + 203.0 / 9.0]], atol=1e-12)
    # at 448 px the focal length doubles: 2030 x / depth + 223.5
    pixels, _ = project(points, Camera(), 448)
    np.testing.assert_allclose(pixels[0, 0].numpy(), [426.5, 122.0], atol=1e-12)
    camera = Camera(focal=500.0, image_size=100, distance=5.0)
    pixels, depth = project(points[:, :1], camera, 100)
    np.testing.assert_allclose(depth[0].numpy(), [5.0])
    np.testing.assert_allclose(pixels[0, 0].numpy(), [100.0 + 49.5, 49.5 - 50.0], atol=1e-12)
    np.testing.assert_allclose(to_camera(points, camera)[0, 1].numpy(), [0.0, 0.0, 3.0])


def test_camera_json_round_trip():
    camera = Camera(focal=900.0, image_size=256, distance=12.0)
    assert Camera.from_json(camera.to_json()) == camera
    with pytest.raises(ValueError, match="unknown keys"):
        Camera.from_json('{"focal": 1, "fov": 3}')
    with pytest.raises(ValueError, match="positive"):
        Camera(focal=-1.0)


def test_vertex_normals_of_a_cube_and_numba_matches_torch():
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    index = {tuple(c.int().tolist()): i for i, c in enumerate(corners)}
    faces = []  # two outward counter-clockwise triangles per face
    for axis in range(3):
        for side in (-1, 1):
            u, v = [a for a in range(3) if a != axis]
            quad = []
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                point = [0, 0, 0]
                point[axis], point[u], point[v] = side, du, dv
                quad.append(index[tuple(point)])
            normal = np.cross(corners[quad[1]] - corners[quad[0]], corners[quad[2]] - corners[quad[0]])
            if normal[axis] * side < 0:
                quad = quad[::-1]
            faces += [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
    triangles = torch.tensor(faces)
    normals = vertex_normals(corners[None], triangles)[0]
    # every corner touches three faces; its normal points along the diagonal (outwards)
    cosine = (normals * corners / corners.norm(dim=-1, keepdim=True)).sum(-1)
    assert cosine.min() > 0.9
    with torch.enable_grad():
        grad_path = vertex_normals(corners[None].clone().requires_grad_(True), triangles)[0]
    np.testing.assert_allclose(grad_path.detach().numpy(), normals.numpy(), atol=1e-6)


def test_vertex_normals_numba_and_torch_agree_on_the_head(model):
    exp = torch.zeros(3, 64)
    exp[1, EXPRESSION_UNITS["jaw_open"]] = 0.7
    exp[2, EXPRESSION_UNITS["blink"]] = 1.0  # collapsed eyelids: slivers
    shape = model.vertices(_random((3, 80), 11) * 0.7, exp)
    fast = vertex_normals(shape, model.triangles)
    with torch.enable_grad():
        reference = vertex_normals(shape.clone().requires_grad_(True), model.triangles).detach()
    assert float((fast - reference).norm(dim=-1).max()) < 0.01
    lengths = fast.norm(dim=-1)
    assert float((lengths - 1).abs().quantile(0.95)) < 1e-5  # unit almost everywhere


# ----------------------------------------------------------------------------- procedural model


def test_procedural_model_shapes_and_determinism(model):
    count = model.num_vertices
    assert model.mean_shape.shape == (count, 3) and model.id_basis.shape == (count, 3, 80)
    assert model.exp_basis.shape == (count, 3, 64) and model.tex_basis.shape == (count, 3, 80)
    assert model.triangles.dtype == torch.int64 and model.landmarks68.shape == (68,)
    assert float(model.mean_tex.min()) >= 0.0 and float(model.mean_tex.max()) <= 1.0
    again = procedural_model(seed=0)
    for field in ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis", "triangles", "landmarks68"):
        assert torch.equal(getattr(again, field), getattr(model, field)), field
    other = procedural_model(seed=1)
    assert torch.equal(other.mean_shape, model.mean_shape)  # the mean face does not depend on the seed
    assert torch.equal(other.exp_basis[..., :6], model.exp_basis[..., :6])  # nor do the named units
    assert not torch.equal(other.exp_basis[..., 6:], model.exp_basis[..., 6:])
    assert not torch.equal(other.id_basis, model.id_basis)
    with pytest.raises(ValueError, match="detail"):
        procedural_model(detail=0)


def test_model_to_dtype_and_zero_coefficients(model):
    double = model.to(dtype=torch.float64)
    assert double.mean_shape.dtype == torch.float64 and double.triangles.dtype == torch.int64
    shape = double.vertices(torch.zeros(1, 80, dtype=torch.float64), torch.zeros(1, 64, dtype=torch.float64))
    np.testing.assert_allclose(shape[0].numpy(), model.mean_shape.double().numpy(), atol=1e-7)
    coeffs = zero_coeffs(4, 2)
    assert coeffs.shape == (4, 2, 257) and not coeffs.any()


def test_vertices_and_albedo_are_the_linear_model(model):
    ids, exps, texs = _random((2, 80), 5), _random((2, 64), 6), _random((2, 80), 7) * 20
    shape = model.vertices(ids, exps).double()
    expected = (model.mean_shape.double()[None]
                + torch.einsum("vck,bk->bvc", model.id_basis.double(), ids.double())
                + torch.einsum("vck,bk->bvc", model.exp_basis.double(), exps.double()))
    np.testing.assert_allclose(shape.numpy(), expected.numpy(), atol=2e-5)
    albedo = model.albedo(texs)
    raw = model.mean_tex.double()[None] + torch.einsum("vck,bk->bvc", model.tex_basis.double(), texs.double())
    np.testing.assert_allclose(albedo.double().numpy(), raw.clamp(0, 1).numpy(), atol=2e-5)
    assert float(raw.max()) > 1.0 and float(raw.min()) < 0.0  # the clamp was exercised


def _landmarks2d(model, exp=None, size=320):  # 320 = 224 / HEAD_SCALE (0.7) px
    exp = torch.zeros(1, 64) if exp is None else exp
    shape = model.vertices(torch.zeros(1, 80), exp)
    pixels, _ = project(shape, Camera(), size)
    return pixels[0, model.landmarks68].double()


def _unit(name, value=1.0):
    exp = torch.zeros(1, 64)
    exp[0, EXPRESSION_UNITS[name]] = value
    return exp


def test_landmark_layout_is_ibug(model):
    marks = _landmarks2d(model)
    x, y = marks[:, 0], marks[:, 1]
    assert torch.all(torch.diff(x[0:9]) > 0) and torch.all(torch.diff(x[8:17]) > 0)  # jaw left -> right
    assert y[8] == y[0:17].max()  # chin lowest
    assert torch.all(torch.diff(x[17:27]) > 0)  # brows left -> right
    assert torch.all(torch.diff(y[27:31]) > 0)  # nose bridge top -> tip
    assert torch.all(torch.diff(x[31:36]) > 0)
    assert x[36] < x[39] < x[42] < x[45] and x[48] < x[51] < x[54]
    assert y[19] < y[37] < y[41] < y[30] < y[51] < y[57] < y[8]  # brow above eye above nose above mouth
    centre = (x[39] + x[42]) / 2
    for left, right in ((0, 16), (36, 45), (39, 42), (48, 54), (31, 35), (17, 26)):
        assert abs((x[left] + x[right]) / 2 - centre) < 1.0 and abs(y[left] - y[right]) < 1.0
    # mouth closed at rest: inner lips coincide
    assert float((marks[62] - marks[66]).norm()) < 0.1


def test_jaw_open_opens_the_mouth(model):
    rest, open_ = _landmarks2d(model), _landmarks2d(model, _unit("jaw_open"))
    gap = float((open_[66] - open_[62]).norm())
    assert 20.0 < gap < 45.0  # a wide-open mouth: about 25-35 % of the face width at 224 px
    assert open_[8, 1] - rest[8, 1] > 15.0  # the chin drops
    assert float((open_[17:48] - rest[17:48]).norm(dim=-1).max()) < 0.5  # brows, nose, eyes stay
    half = _landmarks2d(model, _unit("jaw_open", 0.5))
    assert abs(float((half[66] - half[62]).norm()) - gap / 2) < 0.5  # linear in the coefficient


def test_lip_units_change_mouth_width(model):
    def width(marks):
        return float(marks[54, 0] - marks[48, 0])

    rest = width(_landmarks2d(model))
    assert width(_landmarks2d(model, _unit("lip_round"))) < rest - 4.0
    assert width(_landmarks2d(model, _unit("lip_spread"))) > rest + 4.0
    rounded = _landmarks2d(model, _unit("lip_round"))
    assert float((rounded[66] - rounded[62]).norm()) > 3.0  # small round opening


def test_smile_raises_the_mouth_corners(model):
    rest, smile = _landmarks2d(model), _landmarks2d(model, _unit("smile"))
    corner_rise = rest[[48, 54], 1] - smile[[48, 54], 1]
    centre_rise = rest[[51, 57], 1] - smile[[51, 57], 1]
    assert corner_rise.min() > 5.0 and corner_rise.min() > centre_rise.max() + 4.0
    assert smile[54, 0] - smile[48, 0] > rest[54, 0] - rest[48, 0]


def test_brow_raise_lifts_only_the_brows(model):
    rest, raised = _landmarks2d(model), _landmarks2d(model, _unit("brow_raise"))
    lift = rest[17:27, 1] - raised[17:27, 1]
    assert lift.min() > 4.0
    others = torch.cat([torch.arange(0, 17), torch.arange(27, 36), torch.arange(48, 68)])
    assert float((raised[others] - rest[others]).norm(dim=-1).max()) < 0.5


def test_blink_closes_the_eyelids(model):
    rest, closed = _landmarks2d(model), _landmarks2d(model, _unit("blink"))
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert float(rest[lower, 1] - rest[upper, 1]) > 6.0  # open at rest
        assert abs(float(closed[lower, 1] - closed[upper, 1])) < 0.5  # closed
    assert float((closed[:36] - rest[:36]).norm(dim=-1).max()) < 0.5
    assert float((closed[48:] - rest[48:]).norm(dim=-1).max()) < 0.5


def test_identity_and_texture_coefficients_stay_plausible(model):
    ids = (_random((16, 80), 8) * 0.7).clamp(-2, 2)
    shape = model.vertices(ids, torch.zeros(16, 64))
    displacement = (shape - model.mean_shape).norm(dim=-1)
    assert 0.01 < float(displacement.mean()) < 0.1 and float(displacement.max()) < 0.5
    albedo = model.albedo((_random((16, 80), 9) * 0.7).clamp(-2, 2))
    skin = albedo[:, model.landmarks68[30]]  # nose tip
    assert torch.all(skin[:, 0] > skin[:, 1]) and torch.all(skin[:, 1] > skin[:, 2])  # stays skin-toned


# ----------------------------------------------------------------------------- BFM loader


def _write_bfm(path, count=30, faces=40, seed=0, drop=None, **overrides):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    data = {
        "meanshape": rng.normal(size=(1, 3 * count)) + 0.5,
        "idBase": rng.normal(size=(3 * count, 80)) * 0.01,
        "exBase": rng.normal(size=(3 * count, 64)) * 0.01,
        "meantex": rng.uniform(60, 200, size=(1, 3 * count)),
        "texBase": rng.normal(size=(3 * count, 80)) * 5,
        "tri": rng.integers(1, count + 1, size=(faces, 3)).astype(np.float64),  # MATLAB stores doubles
        "keypoints": rng.integers(1, count + 1, size=(1, 68)).astype(np.float64),
        "point_buf": rng.integers(1, faces + 1, size=(count, 8)).astype(np.float64),
    }
    data.update(overrides)
    if drop:
        for key in drop:
            data.pop(key)
    savemat(str(path), data)
    return data


def test_bfm_loader_matches_deep3dfacerecon_formulas(tmp_path):
    from singer_core.face.bfm import load_bfm_mat

    data = _write_bfm(tmp_path / "BFM_model_front.mat")
    model = load_bfm_mat(tmp_path / "BFM_model_front.mat", dtype=torch.float64)
    assert model.name == "BFM_model_front" and model.num_vertices == 30
    # Deep3DFaceRecon: mean shape re-centred; shape = idBase @ id + exBase @ exp + mean, reshaped (V, 3)
    mean = data["meanshape"].reshape(-1, 3)
    mean = (mean - mean.mean(0, keepdims=True)).reshape(-1)
    rng = np.random.default_rng(1)
    ids, exps, texs = rng.normal(size=(2, 80)), rng.normal(size=(2, 64)), rng.normal(size=(2, 80))
    expected = (ids @ data["idBase"].T + exps @ data["exBase"].T + mean).reshape(2, -1, 3)
    got = model.vertices(torch.from_numpy(ids), torch.from_numpy(exps))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    texture = ((texs @ data["texBase"].T + data["meantex"]) / 255.0).reshape(2, -1, 3)
    albedo = model.albedo(torch.from_numpy(texs))
    np.testing.assert_allclose(albedo.numpy(), np.clip(texture, 0, 1), atol=1e-12)
    np.testing.assert_array_equal(model.triangles.numpy(), data["tri"].astype(np.int64) - 1)
    keypoints = data["keypoints"].reshape(-1).astype(np.int64) - 1
    np.testing.assert_array_equal(model.landmarks68.numpy(), keypoints)
    np.testing.assert_allclose(model.mean_shape.mean(0).numpy(), 0.0, atol=1e-12)
    raw = load_bfm_mat(tmp_path / "BFM_model_front.mat", recenter=False)
    np.testing.assert_allclose(raw.mean_shape.numpy(), data["meanshape"].reshape(-1, 3), rtol=1e-6)


def test_bfm_loader_errors(tmp_path):
    from singer_core.face.bfm import load_bfm_mat

    _write_bfm(tmp_path / "missing.mat", drop=("exBase", "keypoints"))
    with pytest.raises(ValueError, match=r"lacks the keys \['exBase', 'keypoints'\]"):
        load_bfm_mat(tmp_path / "missing.mat")
    _write_bfm(tmp_path / "narrow.mat", idBase=np.zeros((90, 40)))
    with pytest.raises(ValueError, match=r"idBase must be shaped \(3V = 90, 80\)"):
        load_bfm_mat(tmp_path / "narrow.mat")
    _write_bfm(tmp_path / "badtri.mat", tri=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="tri holds vertex ids outside"):
        load_bfm_mat(tmp_path / "badtri.mat")
    (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        load_bfm_mat(tmp_path / "garbage.mat")
    with pytest.raises(FileNotFoundError, match="BFM_model_front.mat"):
        load_bfm_mat(tmp_path / "absent.mat")
