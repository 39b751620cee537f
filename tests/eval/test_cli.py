"""evaluate_motion and `python -m singer_core.eval motion` on a tiny SynthSinger dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from singer_core.eval import __main__ as cli
from singer_core.eval import evaluate as evaluation


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from singer_core.data.synthetic import SynthSingerConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, SynthSingerConfig(clips=2, size=64, seconds=2.0, test_fraction=0.5, seed=0))
    return root


class _Oracle:
    """Returns each test clip's ground-truth motion, in the order evaluate_motion visits the clips."""

    class config:  # noqa: N801 -- mimics MotionModel.config
        audio_encoder = MEL_ENCODER_NAME

    def __init__(self, root, clip_ids):
        from singer_core.data.format import read_clip

        self.clips = [read_clip(root / clip_id) for clip_id in clip_ids]
        self.calls = 0

    def generate(self, features, *, steps, eta, seed):
        from singer_core.face.motion_types import SingerMotion

        coeffs = self.clips[self.calls].coeffs
        self.calls += 1
        return SingerMotion(exp=coeffs["exp"], angle=coeffs["angle"], trans=coeffs["trans"], fps=features.fps)


def test_ground_truth_motion_scores_like_the_ground_truth(dataset):
    from singer_core.data.format import read_clip, read_index

    index = read_index(dataset)
    result = evaluation.evaluate_motion(_Oracle(dataset, index.test), dataset, steps=1)
    assert result["clips"] == len(index.test) == 1
    model, reference = result["model"], result["ground_truth"]
    # projected landmarks of the true coefficients are the renderer's landmarks stored in the clip
    assert model["lmd"] < 1e-3 and model["lmd_face"] < 1e-4
    assert model["exp_l1"] == model["angle_l1"] == model["trans_l1"] == 0.0
    for key in ("mouth_energy_corr", "diversity_pose", "diversity_landmarks", "beat_align"):
        assert model[key] == pytest.approx(reference[key])
    # independent checks of two entries: BAS from the stored landmarks and beats, pose diversity in degrees
    clip = read_clip(dataset / index.test[0])
    landmarks = clip.landmarks["landmarks"].double().numpy()
    from singer_core.eval.metrics import beat_align_score

    assert reference["beat_align"] == pytest.approx(
        beat_align_score(landmarks, beat_frames=clip.meta.extra["beat_frames"]))
    angles = np.degrees(clip.coeffs["angle"].double().numpy())
    assert reference["diversity_pose"] == pytest.approx(angles.std(axis=0).mean(), rel=1e-5)
    assert 0.0 < model["mouth_energy_corr"] <= 1.0  # the synthetic jaw follows the voice


def test_frame_energy_is_rms_per_frame():
    waveform = torch.zeros(1, 1600)
    waveform[0, 640:1280] = 0.5  # frame 1 of 25 fps at 16 kHz (640 samples per frame)
    np.testing.assert_allclose(evaluation.frame_energy(waveform, 16000, 25.0, 3), [0.0, 0.5, 0.0])


def _tiny_checkpoints(tmp_path):
    from singer_core.motion.generator import MotionModel, MotionModelConfig
    from singer_core.motion.lip_expert import LipExpert, LipExpertConfig

    torch.manual_seed(0)
    model = MotionModel(MotionModelConfig(width=32, layers=1, heads=2, time_dim=16, frames=25,
                                          diffusion_steps=50))
    expert = LipExpert(LipExpertConfig(mouth_vertices=24, hidden=16, embedding=8, layers=1))
    model.save_pretrained(tmp_path / "motion")
    expert.save_pretrained(tmp_path / "expert")
    return tmp_path / "motion", tmp_path / "expert"


def test_cli_motion_prints_the_table_and_writes_json(dataset, tmp_path, capsys):
    motion_dir, expert_dir = _tiny_checkpoints(tmp_path)
    out = tmp_path / "result.json"
    code = cli.main(["motion", "--checkpoint", str(motion_dir), "--data", str(dataset), "--steps", "2",
                     "--lip-expert", str(expert_dir), "--max-offset", "3", "--json", str(out), "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    for label in ("LMD mouth (px)", "lip-expert sync cosine", "Beat Align Score", "exp L1", "ground truth"):
        assert label in table
    result = json.loads(out.read_text())
    assert result["clips"] == 1 and result["steps"] == 2 and result["checkpoint"] == str(motion_dir)
    model, reference = result["model"], result["ground_truth"]
    assert model["lmd"] > 0 and math.isfinite(model["exp_l1"])
    for scores in (model, reference):
        assert -1.0 <= scores["sync_cosine"] <= 1.0 and scores["sync_confidence"] >= 0.0
        assert -3 <= scores["sync_offset"] <= 3
    # the same seed gives the same numbers; --json - prints only JSON
    assert cli.main(["motion", "--checkpoint", str(motion_dir), "--data", str(dataset), "--steps", "2",
                     "--json", "-", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["model"]["lmd"] == pytest.approx(model["lmd"])
    assert "sync_cosine" not in again["model"]


def test_cli_errors(dataset, tmp_path, capsys):
    assert cli.main(["fvd-of-nothing"]) == 2
    assert "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["motion", "--checkpoint", str(tmp_path), "--data", str(dataset), "--steps", "0"])
    assert cli.main(["motion", "--checkpoint", str(tmp_path / "none"), "--data", str(dataset), "--quiet"]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_evaluate_motion_refuses_an_empty_split_and_a_foreign_encoder(dataset):
    class _Model:
        class config:  # noqa: N801
            audio_encoder = "facebook/wav2vec2-base-960h"

    with pytest.raises(ValueError, match="encoder="):
        evaluation.evaluate_motion(_Model(), dataset)
    with pytest.raises(ValueError, match="no clips"):
        evaluation.evaluate_motion(_Model(), dataset, max_clips=0)
