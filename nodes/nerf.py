"""Audio NeRF nodes (DAMC): load a trained per-subject NeRF, render it singing a song along a camera path, and
speak text with a TTS model (DAMC §2.3's TTS-driven inference) into audio + the mel features the NeRF reads."""

from __future__ import annotations

import logging
from fractions import Fraction

from comfy_api.latest import InputImpl, Types, io

from .comfy_bridge import (
    DEVICE_CHOICES,
    NERF_MODEL_FOLDER,
    TTS_FOLDER,
    AudioFeatures,
    NerfModelType,
    comfy_progress,
    model_folder,
    model_subfolders,
    resolve_model_path,
    torch_device,
)
from .model_loaders import TrainedModels
from .web_preview import audio_preview_ui, merge_ui, video_preview_ui

logger = logging.getLogger(__name__)

CAMERA_CHOICES = ["static", "sway", "training"]
HUB_TTS = ["microsoft/speecht5_tts", "facebook/mms-tts-eng"]
SPEECHT5_VOCODER = "microsoft/speecht5_hifigan"


NERF_MODELS = TrainedModels("NeRF model", NERF_MODEL_FOLDER, task="nerf", preset="demo")


class SingerNeRFLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerNeRFLoader",
            display_name="Load Audio NeRF (SINGER)",
            category="SINGER/nerf",
            description=("Load a per-subject audio-driven NeRF (DAMC: tri-plane hash grid + CSFM audio fusion) "
                         "trained with `python -m singer_core.train nerf`. Put the run's `final` folder "
                         f"(config.json + model.safetensors) into models/{NERF_MODEL_FOLDER}/; copy the subject's "
                         "transforms_train.json beside them to render with its camera poses."),
            inputs=[
                io.Combo.Input("model", options=NERF_MODELS.choices(),
                               tooltip=f"A folder in models/{NERF_MODEL_FOLDER}/ holding config.json and "
                                       "model.safetensors (optionally the subject's transforms_train.json)."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="Where to render; auto = ComfyUI's torch device."),
            ],
            outputs=[
                NerfModelType.Output("nerf_model", display_name="NeRF model", tooltip="The subject model, for Render Audio NeRF."),
                io.String.Output("info", display_name="info", tooltip="Frame size, fps, fusion mode and the audio features it needs."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model):
        return NERF_MODELS.validate(model)

    @classmethod
    def execute(cls, model, device) -> io.NodeOutput:
        from ..singer_core.nerf.song_video import load_nerf_subject

        who = "SingerNeRFLoader"
        path = NERF_MODELS.resolve(model, who)
        try:
            subject = load_nerf_subject(path, device=torch_device(device))
        except (ValueError, OSError) as error:
            raise ValueError(f"{who}: {error}") from error
        return io.NodeOutput(subject, subject.describe())


class SingerNeRFRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerNeRFRender",
            display_name="Render Audio NeRF (SINGER)",
            category="SINGER/nerf",
            description=("Render the subject singing: one frame per audio-feature frame, the audio fused by the "
                         "model's CSFM (mel-80 windows for the dynamic branch, its content encoder's features "
                         "for the content branch), the camera static, swaying, or following the training poses."),
            inputs=[
                NerfModelType.Input("nerf_model", tooltip="From Load Audio NeRF."),
                AudioFeatures.Input("features", tooltip="Encode Audio with the mel-80 encoder, at the model's fps "
                                                        "(25): the dynamic branch's input (and the content "
                                                        "branch's when the model was trained on mel content)."),
                io.Combo.Input("camera", options=CAMERA_CHOICES, default="static",
                               tooltip="static: the first training pose (or the SynthSinger frontal camera); sway: "
                                       "that pose turned left and right; training: the subject's training poses."),
                io.Float.Input("sway_degrees", default=6.0, min=0.0, max=45.0, step=0.5,
                               tooltip="sway: largest turn of the camera around the head, in degrees."),
                io.Float.Input("sway_seconds", default=4.0, min=0.5, max=60.0, step=0.5,
                               tooltip="sway: seconds of one left-right-left cycle."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The song the features came from: attached to the video output."),
                AudioFeatures.Input("content_features", optional=True,
                                    tooltip="Only for models trained on other content features (e.g. HuBERT, "
                                            "layers=last, steps_per_frame=2): those features of the same song."),
            ],
            outputs=[
                io.Image.Output("frames", display_name="frames", tooltip="One rendered image per audio frame."),
                io.Video.Output("video", display_name="video", tooltip="The frames at the model's fps with the audio if connected "
                                                 "(for Save Video)."),
            ],
        )

    @classmethod
    def execute(cls, nerf_model, features, camera, sway_degrees, sway_seconds, audio=None,
                content_features=None) -> io.NodeOutput:
        from ..singer_core.nerf.song_video import camera_path, render_song

        who = "SingerNeRFRender"
        subject = nerf_model
        try:
            poses = camera_path(subject, features.frames, camera, sway_degrees=sway_degrees,
                                sway_seconds=sway_seconds)
            frames = render_song(subject, features, content_features, poses,
                                 progress=comfy_progress(features.frames))
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        video = InputImpl.VideoFromComponents(Types.VideoComponents(
            images=frames, audio=audio, frame_rate=Fraction(subject.fps).limit_denominator(1001)))
        return io.NodeOutput(frames, video, ui=video_preview_ui(frames, subject.fps, audio, "singer_nerf_render"))


def _download_tts(repo_id: str, target, progress) -> None:
    """Fetch a hub TTS model into target (SpeechT5: its HiFi-GAN vocoder into target/vocoder)."""
    from huggingface_hub import snapshot_download

    steps = [(repo_id, target)]
    if "speecht5" in repo_id.lower():
        steps.append((SPEECHT5_VOCODER, target / "vocoder"))
    for done, (repo, folder) in enumerate(steps):
        progress(done, len(steps))
        try:
            snapshot_download(repo, local_dir=str(folder))
        except Exception as error:  # offline, unknown repository, authentication
            raise RuntimeError(f"could not download '{repo}' into '{folder}' ({type(error).__name__}: {error}); "
                               f"run `hf download {repo} --local-dir {folder}` on a connected "
                               "machine and copy the folder here") from error
    progress(len(steps), len(steps))


class SingerTextToSpeech(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerTextToSpeech",
            display_name="Text to Speech (SINGER)",
            category="SINGER/nerf",
            description=("Speak text with a transformers TTS model (SpeechT5 + HiFi-GAN, or VITS / MMS-TTS), "
                         "DAMC's TTS-driven inference: the speech and its Wav2Lip mel-80 features (computed from "
                         "the waveform, at the chosen fps) go straight into Render Audio NeRF. Models live in "
                         f"models/{TTS_FOLDER}/; hub ids are downloaded there only when allowed."),
            inputs=[
                io.String.Input("text", multiline=True, default="sing a song of sixpence",
                                tooltip="The words, in the model's language (an English model cannot read "
                                        "Chinese: romanize it or use a model for that language)."),
                io.Combo.Input("model", options=model_subfolders(TTS_FOLDER) + HUB_TTS,
                               tooltip=f"A folder in models/{TTS_FOLDER}/ (config.json, weights, tokenizer; "
                                       "SpeechT5 with its vocoder in vocoder/) or a hub id."),
                io.Boolean.Input("allow_download", default=False,
                                 tooltip=f"Download a hub id that is not in models/{TTS_FOLDER} yet. Off: an "
                                         "offline error says what to place where."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Seeds SpeechT5's prenet dropout / VITS's noise: same seed, same speech."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate of the mel features output (the NeRF's: 25)."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="Where to run the model; auto = ComfyUI's torch device."),
            ],
            outputs=[
                io.Audio.Output("speech", display_name="speech", tooltip="The spoken text (mono, at the model's sample rate)."),
                AudioFeatures.Output("features", display_name="features", tooltip="Wav2Lip mel-80 windows (frames, 16, 80) of the speech "
                                                         "at fps: the input of Render Audio NeRF."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model):
        if model in HUB_TTS or resolve_model_path(TTS_FOLDER, model) is not None:
            return True
        return (f"TTS model '{model}' not found in {model_folder(TTS_FOLDER)}; put a transformers SpeechT5/VITS "
                f"folder there or choose a hub id ({', '.join(HUB_TTS)})")

    @classmethod
    def execute(cls, text, model, allow_download, seed, fps, device) -> io.NodeOutput:
        from ..singer_core.audio.encoders import MelEncoder
        from ..singer_core.audio.io import audio_to_comfy
        from ..singer_core.audio.tts import load_tts

        who = "SingerTextToSpeech"
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{who}: text is empty; type at least one word to speak")
        progress = comfy_progress(3)
        # 1. the model: a local folder, or a hub id (in models/tts/<name>, downloaded only when allowed)
        source = resolve_model_path(TTS_FOLDER, model)
        if source is None and model in HUB_TTS:
            local = model_folder(TTS_FOLDER) / model.split("/")[-1]
            if not (local / "config.json").is_file():
                if not allow_download:
                    raise ValueError(
                        f"{who}: '{model}' is not in {model_folder(TTS_FOLDER)} and allow_download is off. On a "
                        f"connected machine run `hf download {model} --local-dir {local}`"
                        + (f" and `hf download {SPEECHT5_VOCODER} --local-dir {local / 'vocoder'}`"
                           if "speecht5" in model else "")
                        + " and copy the folder here, or switch allow_download on")
                try:
                    _download_tts(model, local, lambda done, total: None)
                except RuntimeError as error:
                    raise RuntimeError(f"{who}: {error}") from error
            source = local
        if source is None:
            raise ValueError(f"{who}: '{model}' was not found in {model_folder(TTS_FOLDER)}; refresh the node list")
        try:
            tts = load_tts(source, local_files_only=True, device=torch_device(device))
        except (ValueError, OSError, ImportError) as error:
            raise ValueError(f"{who}: {error}") from error
        progress(1, 3)
        # 2. speech, 3. its mel-80 windows per video frame
        try:
            result = tts.synthesize(text, seed=seed)
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        progress(2, 3)
        features = MelEncoder().encode(result.waveform, result.sample_rate, fps, allow_silence=True)
        progress(3, 3)
        speech = audio_to_comfy(result.waveform, result.sample_rate)
        logger.info("%s: %.2f s of speech from %s, %d feature frames", who, result.seconds, tts.kind,
                    features.frames)
        return io.NodeOutput(speech, features, ui=merge_ui(audio_preview_ui(speech, "singer_tts", label="speech")))

