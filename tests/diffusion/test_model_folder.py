"""singer_core.diffusion.model_folder: the typed singer_training.json (SingerTrainingInfo) reads the files the
previous dict-writing code left on disk, writes the same JSON back, and names the field that is missing or wrong;
load_model_folder takes clip length, audio encoder and noise schedule from it."""

from __future__ import annotations

import json

import pytest

from singer_core.demo.singer_stack import build_tiny_stack
from singer_core.diffusion.model_folder import (
    TINY_SAMPLING,
    TRAINING_INFO,
    SamplingSettings,
    SingerTrainingInfo,
    TrainingAudio,
    load_model_folder,
    read_training_info,
)
from singer_core.ops.noise_schedule import NoiseSchedule

# what the previous code wrote: train/singer.py's export dict (schedule of the SINGER-only NoiseSchedule that
# came before ops/noise_schedule.py: six keys), plus the demo's {"sampling": ...}; written here as literals
OLD_SCHEDULE = {"beta_end": 0.012, "beta_schedule": "linear", "beta_start": 0.00085, "prediction": "v_prediction",
                "train_steps": 500, "zero_snr": True}
OLD_INFO = {"task": "singer", "vae": "vae", "image_size": 64, "frames": 6, "motion_frames": 1, "face_model": None,
            "audio": {"encoder": "mel-80", "layers": "all", "reduce": "flatten", "source": "vocals.wav",
                      "models_dir": None, "radius": 2},
            "schedule": OLD_SCHEDULE, "sampling": {"steps": 12, "cfg": 1.5}}


@pytest.fixture(scope="module")
def random_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_folder")
    return build_tiny_stack(root / "stack", cache_dir=root / "cache", trained=False)


def test_a_folder_written_with_the_old_dict_keys_still_loads(random_stack, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(random_stack, folder)
    (folder / TRAINING_INFO).write_text(json.dumps(OLD_INFO, indent=2, sort_keys=True))
    info = read_training_info(folder)
    assert info == SingerTrainingInfo(
        task="singer", vae="vae", image_size=64, frames=6, motion_frames=1, face_model=None,
        audio=TrainingAudio(encoder="mel-80", layers="all", reduce="flatten", source="vocals.wav", radius=2),
        schedule=NoiseSchedule(train_steps=500), sampling=SamplingSettings(steps=12, cfg=1.5))
    model = load_model_folder(folder)
    assert (model.clip_frames, model.motion_frames, model.audio_encoder, model.audio_layers) == (6, 1, "mel-80", "all")
    assert model.schedule == NoiseSchedule(train_steps=500)
    assert model.schedule.alphas_cumprod.shape == (500,)
    # the keys the old readers used with .get still hold the same values after a write
    info.write(folder)
    written = json.loads((folder / TRAINING_INFO).read_text())
    assert {key: written[key] for key in OLD_INFO if key != "schedule"} == \
        {key: value for key, value in OLD_INFO.items() if key != "schedule"}
    assert {key: written["schedule"][key] for key in OLD_SCHEDULE} == OLD_SCHEDULE


def test_the_untrained_stack_writes_the_typed_info_and_the_json_round_trips(random_stack):
    info = SingerTrainingInfo.read(random_stack)
    assert (info.task, info.vae, info.frames, info.audio.encoder, info.sampling) == (
        "random (untrained)", "vae", 8, "mel-80", None)
    text = (random_stack / TRAINING_INFO).read_text()
    assert SingerTrainingInfo.from_json(text) == info and info.to_json() == text
    assert "sampling" not in json.loads(text)  # left out when None: old readers did {**fallback, **info.get(...)}
    with_sampling = SingerTrainingInfo.from_json(json.dumps(json.loads(text) | {"sampling": {"steps": 20,
                                                                                              "cfg": 1}}))
    assert with_sampling.sampling == TINY_SAMPLING and isinstance(with_sampling.sampling.cfg, float)


def test_a_folder_without_the_file_loads_with_the_defaults(random_stack, tmp_path):
    import shutil

    folder = tmp_path / "bare"
    shutil.copytree(random_stack, folder)
    (folder / TRAINING_INFO).unlink()
    assert read_training_info(folder) is None
    with pytest.raises(FileNotFoundError, match=TRAINING_INFO):
        SingerTrainingInfo.read(folder)
    model = load_model_folder(folder)  # the VAE is folder/vae
    assert (model.clip_frames, model.motion_frames, model.audio_encoder) == (16, 2, "facebook/wav2vec2-base-960h")


def _without(key: str) -> dict:
    return {name: value for name, value in OLD_INFO.items() if name != key}


@pytest.mark.parametrize("data, message", [
    (_without("frames"), r"missing \['frames'\]"),
    (OLD_INFO | {"audio": {"layers": "all"}}, r"missing \['audio.encoder'\]"),
    (OLD_INFO | {"frames": "16"}, r"frames must be an integer, got '16'"),
    (OLD_INFO | {"frames": True}, r"frames must be an integer, got True"),
    (OLD_INFO | {"frames": 0}, r"frames >= 1"),
    (OLD_INFO | {"vae": None}, r"vae must not be null"),
    (OLD_INFO | {"face_model": 3}, r"face_model must be a string or null, got 3"),
    (OLD_INFO | {"audio": "mel-80"}, r"audio must be a JSON object, got str"),
    (OLD_INFO | {"audio": OLD_INFO["audio"] | {"layers": "some"}}, r"audio.layers must be 'all' or 'last'"),
    (OLD_INFO | {"clip_frames": 16}, r"unknown keys \['clip_frames'\].*known keys"),
    (OLD_INFO | {"schedule": OLD_SCHEDULE | {"betas": 1}}, r"schedule is not a noise schedule.*betas"),
    (OLD_INFO | {"sampling": {"steps": 0, "cfg": 1.0}}, r"steps >= 1"),
    ([1, 2], r"the file must be a JSON object, got list"),
])
def test_missing_or_wrong_fields_are_named(data, message, tmp_path):
    (tmp_path / TRAINING_INFO).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as caught:
        SingerTrainingInfo.read(tmp_path)
    assert str(tmp_path / TRAINING_INFO) in str(caught.value) and "re-export the model" in str(caught.value)


def test_a_damaged_file_stops_the_loader_with_its_path(random_stack, tmp_path):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(random_stack, folder)
    (folder / TRAINING_INFO).write_text("{not json")
    with pytest.raises(ValueError, match=r"load_model_folder: '.*singer_training.json' is not valid JSON"):
        load_model_folder(folder)
