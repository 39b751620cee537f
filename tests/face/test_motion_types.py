"""SINGER_MOTION and FaceIdentity: validation, save/load, the 257-coefficient layout."""

from __future__ import annotations

import pytest
import torch

from singer_core.face.motion_types import FaceIdentity, SingerMotion


def _motion(frames=10, fps=25.0):
    generator = torch.Generator().manual_seed(0)
    return SingerMotion(exp=torch.randn(frames, 64, generator=generator),
                        angle=0.1 * torch.randn(frames, 3, generator=generator),
                        trans=0.1 * torch.randn(frames, 3, generator=generator), fps=fps, source="test")


def test_save_load_round_trip(tmp_path):
    motion = _motion()
    loaded = SingerMotion.load(motion.save(tmp_path / "m.safetensors"))
    for name in ("exp", "angle", "trans"):
        torch.testing.assert_close(getattr(loaded, name), getattr(motion, name), rtol=0, atol=0)
    assert loaded.fps == 25.0 and loaded.source == "test" and loaded.frames == 10 and loaded.seconds == 0.4
    assert not list(tmp_path.glob("*.tmp"))


def test_load_refuses_foreign_and_truncated_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a SINGER motion file"):
        SingerMotion.load(tmp_path / "other.safetensors")
    data = _motion().save(tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        SingerMotion.load(tmp_path / "cut.safetensors")


@pytest.mark.parametrize("change, message", [
    (dict(exp=torch.zeros(10, 63)), r"exp must have shape \(T, 64\)"),
    (dict(angle=torch.zeros(9, 3)), r"angle must have shape \(10, 3\)"),
    (dict(trans=torch.full((10, 3), float("nan"))), "NaN"),
    (dict(fps=0.0), "fps must be a positive number"),
])
def test_bad_motion_is_refused(change, message):
    base = _motion()
    fields = dict(exp=base.exp, angle=base.angle, trans=base.trans, fps=base.fps) | change
    with pytest.raises(ValueError, match=message):
        SingerMotion(**fields)


def test_slice_keeps_fps_and_frames():
    part = _motion(10).slice(2, 7)
    assert part.frames == 5 and part.fps == 25.0
    torch.testing.assert_close(part.exp, _motion(10).exp[2:7])


def test_identity_coefficients_follow_the_deep3dfacerecon_layout():
    motion = _motion(4)
    identity = FaceIdentity(id=torch.arange(80.0), tex=-torch.arange(80.0), gamma=torch.linspace(0, 1, 27))
    coeffs = identity.coefficients(motion)
    assert coeffs.shape == (4, 257)
    # Deep3DFaceRecon: id 0:80, exp 80:144, tex 144:224, angle 224:227, gamma 227:254, trans 254:257
    torch.testing.assert_close(coeffs[:, 0:80], identity.id.expand(4, -1))
    torch.testing.assert_close(coeffs[:, 80:144], motion.exp)
    torch.testing.assert_close(coeffs[:, 144:224], identity.tex.expand(4, -1))
    torch.testing.assert_close(coeffs[:, 224:227], motion.angle)
    torch.testing.assert_close(coeffs[:, 227:254], identity.gamma.expand(4, -1))
    torch.testing.assert_close(coeffs[:, 254:257], motion.trans)
    with pytest.raises(ValueError, match="background"):
        FaceIdentity(id=torch.zeros(80), tex=torch.zeros(80), gamma=torch.zeros(27), background=(2.0, 0, 0))
