"""nerf task: subject format (cameras reproduce the rendered landmarks), bad inputs, a tiny run whose
out/final loads and renders, exact resume, and the eval CLI."""

import json
import shutil

import pytest
import torch

from singer_core.face.procedural import procedural_model
from singer_core.io.checkpoint import load_tensors
from singer_core.nerf.data import SYNTH_CENTRE, SYNTH_SCALE, load_subject, make_synthsinger_subject
from singer_core.nerf.subject import NerfSubjectModel
from singer_core.ops.volume import camera_rays, pixel_rays
from singer_core.train.loop import train

TINY = {"steps": 6, "num_rays": 64, "num_samples": 8, "occupancy_start": 2, "occupancy_every": 2,
        "occupancy_resolution": 8, "fine_start": 4, "patch_size": 8, "checkpoint_every": 3, "log_every": 1,
        "num_levels": 4, "log2_table_size": 8, "fusion_window": 4}


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_synthsinger_subject(tmp_path_factory.mktemp("nerf") / "subject", seconds=1.0, size=32, seed=3)


def test_cameras_reproduce_rendered_landmarks(subject):
    """Project the 3DMM landmark vertices (head frame -> canonical) with each transforms camera, in float64,
    with a plain pinhole written here; compare with the landmarks the rasteriser projected for the clip."""
    train_split, val_split = load_subject(subject, "train"), load_subject(subject, "val")
    assert len(train_split) + len(val_split) == 25 and len(val_split) == 2  # last ~10 % held out
    assert int(val_split.img_ids.min()) == len(train_split)
    truth = load_tensors(subject / "landmarks.safetensors")
    model = procedural_model(0)
    frames = truth["exp"].shape[0]
    verts = model.vertices(truth["id"][None].expand(frames, -1), truth["exp"])[:, model.landmarks68.long()]
    for split in (train_split, val_split):
        for k in range(len(split)):
            i = int(split.img_ids[k])
            points = (verts[i].double() - torch.tensor(SYNTH_CENTRE, dtype=torch.float64)) * SYNTH_SCALE
            c2w = split.poses[k].double()
            cam = (points - c2w[:3, 3]) @ c2w[:3, :3]          # world -> camera (OpenGL: looks down -z)
            x = split.cx + split.fl_x * cam[:, 0] / -cam[:, 2] - 0.5   # clip landmarks: pixel centres at integers
            y = split.cy - split.fl_y * cam[:, 1] / -cam[:, 2] - 0.5
            err = (torch.stack([x, y], -1) - truth["landmarks"][i].double()).abs().max()
            assert err < 1e-3, (split, k, float(err))
            assert torch.equal(split.landmarks[k], truth["landmarks"][i])


def test_pixel_rays_match_camera_rays(subject):
    split = load_subject(subject, "val")
    origins, directions = camera_rays(split.poses[0], split.fl_x, split.fl_y, split.cx, split.cy, 32, 32)
    rows, cols = torch.tensor([0, 5, 31]), torch.tensor([3, 17, 31])
    o, d = pixel_rays(split.poses[0], rows, cols, split.fl_x, split.fl_y, split.cx, split.cy)
    torch.testing.assert_close(d, directions[rows, cols])
    torch.testing.assert_close(o, origins[rows, cols])


def test_bad_subjects_give_clear_errors(subject, tmp_path):
    with pytest.raises(FileNotFoundError, match="transforms_train.json"):
        load_subject(tmp_path, "train")
    broken = tmp_path / "broken"
    shutil.copytree(subject, broken)
    meta = json.loads((broken / "transforms_val.json").read_text())
    meta["frames"][-1]["aud_id"] = 999
    (broken / "transforms_val.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="frame/feature count mismatch"):
        load_subject(broken, "val")
    meta["num_frames"] = 30
    meta["frames"][-1]["aud_id"] = 1
    (broken / "transforms_val.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="features have 25 frames but the video has num_frames=30"):
        load_subject(broken, "val")


def _run(subject, out, **kwargs):
    return train("nerf", preset="tiny", config=dict(TINY), data=subject, out=out, device="cpu", quiet=True,
                 **kwargs)


def test_tiny_run_exports_renders_and_resumes_exactly(subject, tmp_path, capsys):
    final = _run(subject, tmp_path / "a")
    assert final == tmp_path / "a" / "final"
    model = NerfSubjectModel.from_pretrained(final)
    assert model.occupancy.occupancy_ratio() < 1.0 or bool((model.occupancy.density >= 0).all())  # grid updated
    val = load_subject(subject, "val")
    codes = model.audio_codes(val.content, val.dynamic)
    assert codes.shape == (25, 64)
    image = model.render_frame(codes[int(val.aud_ids[0])], val.poses[0])
    assert image.shape == (32, 32, 3) and bool(torch.isfinite(image).all())
    # 3 + 3 steps (stop, resume) == 6 steps: every tensor bit-identical, the occupancy grid included
    _run(subject, tmp_path / "b", max_steps=3)
    _run(subject, tmp_path / "b", resume=True)
    a = load_tensors(final / "model.safetensors")
    b = load_tensors(tmp_path / "b" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and "occupancy.density" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the eval CLI prints the held-out scores
    from singer_core.eval.__main__ import main

    capsys.readouterr()
    assert main(["nerf", "--checkpoint", str(final), "--data", str(subject)]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed and "mouth PSNR" in printed
    psnr_value = float(printed.split("PSNR")[1].split()[0])
    assert 5.0 < psnr_value < 60.0
