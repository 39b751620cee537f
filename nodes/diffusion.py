"""SINGER video nodes: load a SINGER / Hallo-style diffusion stack (our trained folders or the official net.pth
with SD's VAE and the ArcFace model) and sample a singing video from a portrait and a song."""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import torch
from comfy_api.latest import InputImpl, Types, io

from ..singer_core.audio.encoders import MEL_ENCODER_NAME
from .comfy_bridge import (
    ANIMATEDIFF_FOLDER,
    DEVICE_CHOICES,
    SINGER_MODEL_FOLDER,
    VAE_FOLDER,
    AudioEncoder,
    AudioFeatures,
    SingerModelType,
    comfy_progress,
    model_files,
    model_folder,
    model_folder_paths,
    model_subfolders,
    portrait_from_image,
    resolve_model_path,
    torch_device,
)
from .model_loaders import TrainedModels
from .web_preview import video_preview_ui

logger = logging.getLogger(__name__)

# hub parts (ANCHORS.md): SINGER's net.pth, SD's fine-tuned VAE, Hallo's ArcFace model
SINGER_REPO, SINGER_FILE = "yl2333/SINGER", "net.pth"
VAE_REPO, VAE_DIR_NAME = "stabilityai/sd-vae-ft-mse", "sd-vae-ft-mse"
HALLO_REPO, FACE_FILE = "fudan-generative-ai/hallo", "face_analysis/models/glintr100.onnx"
FACE_DIR = "face_analysis"  # models/singer/face_analysis/glintr100.onnx
HUB_NET = f"{SINGER_FILE} (download {SINGER_REPO})"
AUTO = "auto"
NO_MOTION_MODULE = "none (net.pth has them)"
NO_FACE_MODEL = "none (zero identity)"
SD15_NAMES = ("stable-diffusion-v1-5", "sd-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5")
WEIGHT_SUFFIXES = (".pth", ".safetensors", ".ckpt", ".bin")
# sampling settings of SINGER's net.pth (Hallo's inference config: 40 DDIM steps, CFG 3.5, 16-frame clips); our trained
# folders may recommend their own in singer_training.json {"sampling": {"steps": N, "cfg": X}}
OFFICIAL_SAMPLING = {"steps": 40, "cfg": 3.5}
SINGER_MODELS = TrainedModels("SINGER model", SINGER_MODEL_FOLDER, task="singer", preset="tiny", demo_noun="tiny stack",
                              fetch=f"fetch SINGER's weights: `hf download {SINGER_REPO} {SINGER_FILE} --local-dir "
                                    f"{{folder}}` and pick '{SINGER_FILE}'")


def recommended_sampling(model) -> dict:
    """{"steps", "cfg", "clip_frames"} the loaded model recommends (what 0 = auto means on Sample SINGER Video)."""
    from ..singer_core.diffusion.model_folder import TINY_SAMPLING, read_training_info

    source = Path(model.source) if getattr(model, "source", "") else None
    info = read_training_info(source) if source is not None and source.is_dir() else None
    if info is not None and info.sampling is not None:
        steps, cfg = info.sampling.steps, info.sampling.cfg
    elif info is not None and info.audio.encoder == MEL_ENCODER_NAME:
        # folders trained before the recommendation was stored: the tiny (mel-80) stacks sample as make demo does
        steps, cfg = TINY_SAMPLING.steps, TINY_SAMPLING.cfg
    else:
        steps, cfg = OFFICIAL_SAMPLING["steps"], OFFICIAL_SAMPLING["cfg"]
    return {"steps": int(steps), "cfg": float(cfg), "clip_frames": int(model.clip_frames)}


def _model_choices() -> list[str]:
    folders = SINGER_MODELS.choices()
    files = [f for f in model_files(SINGER_MODEL_FOLDER, (".pth", ".safetensors"))
             if "/" not in f.replace("\\", "/")]
    return folders + files + [HUB_NET]


def _vae_choices() -> list[str]:
    return [AUTO] + model_subfolders(VAE_FOLDER) + model_files(VAE_FOLDER, (".safetensors", ".pt", ".ckpt"))


def _motion_choices() -> list[str]:
    return [NO_MOTION_MODULE] + model_files(ANIMATEDIFF_FOLDER, WEIGHT_SUFFIXES)


def _face_choices() -> list[str]:
    return [AUTO, NO_FACE_MODEL] + model_files(SINGER_MODEL_FOLDER, (".onnx",))


def _sd15_vae_folders() -> list[Path]:
    """vae/ folders of SD1.5 diffusers bases in models/diffusers or models/singer."""
    import folder_paths

    roots = [Path(p) for p in folder_paths.get_folder_paths("diffusers")] if "diffusers" in \
        folder_paths.folder_names_and_paths else []
    roots += [model_folder(SINGER_MODEL_FOLDER)]
    return [root / name / "vae" for root in roots for name in SD15_NAMES]


def _find_vae(selected: str) -> Path | None:
    if selected != AUTO:
        return resolve_model_path(VAE_FOLDER, selected)
    candidates = [model_folder(VAE_FOLDER) / VAE_DIR_NAME, model_folder(SINGER_MODEL_FOLDER) / VAE_DIR_NAME,
                  *_sd15_vae_folders()]
    return next((path for path in candidates if (path / "config.json").is_file()), None)


def _find_face_model() -> Path | None:
    root = model_folder(SINGER_MODEL_FOLDER)
    for candidate in (root / FACE_DIR / "glintr100.onnx", root / FACE_DIR / "models" / "glintr100.onnx"):
        if candidate.is_file():
            return candidate
    return None


def _download(repo_id: str, target: Path, *, filename: str | None = None) -> Path:
    """One hub file (filename) or a diffusers VAE folder into `target` (a models/ path)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    target.mkdir(parents=True, exist_ok=True)
    logger.info("SingerModelLoader: downloading %s %s into %s", repo_id, filename or "", target)
    try:
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename, local_dir=target))
        snapshot_download(repo_id, local_dir=target, allow_patterns=["config.json",
                                                                     "diffusion_pytorch_model.safetensors"])
        return target
    except Exception as error:  # noqa: BLE001 - the hub client raises many types (offline, 404, disk)
        raise RuntimeError(f"SingerModelLoader: downloading {repo_id} {filename or ''} failed ({type(error).__name__}: "
                           f"{error}); download it on a connected machine into {target}") from error


def _training_info(folder: Path, who: str):
    """The folder's SingerTrainingInfo (None without singer_training.json); a damaged file is a ValueError."""
    from ..singer_core.diffusion.model_folder import read_training_info

    try:
        return read_training_info(folder)
    except ValueError as error:
        raise ValueError(f"{who}: {error}") from error


def _load_vae_any(path: Path):
    """A diffusers AutoencoderKL from a folder, or from a single original-layout file (ComfyUI's models/vae)."""
    from ..singer_core.diffusion.vae import load_vae

    if path.is_dir():
        return load_vae(path)
    import json
    import tempfile

    from diffusers import AutoencoderKL

    config = dict(_class_name="AutoencoderKL", in_channels=3, out_channels=3, latent_channels=4,
                  down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                  block_out_channels=[128, 256, 512, 512], layers_per_block=2, act_fn="silu", norm_num_groups=32,
                  sample_size=256, scaling_factor=0.18215)  # sd-vae-ft-mse's config
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "config.json").write_text(json.dumps(config))
        try:
            vae = AutoencoderKL.from_single_file(str(path), config=folder, local_files_only=True)
        except Exception as error:  # noqa: BLE001 - diffusers raises many types for foreign files
            raise ValueError(f"SingerModelLoader: '{path.name}' is not an SD VAE single file diffusers can read "
                             f"({type(error).__name__}: {error}); put the diffusers sd-vae-ft-mse folder "
                             f"(config.json + diffusion_pytorch_model.safetensors) into "
                             f"{model_folder(VAE_FOLDER) / VAE_DIR_NAME}") from error
    return vae.eval()


class SingerModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        singer_dir = f"models/{SINGER_MODEL_FOLDER}"
        return io.Schema(
            node_id="SingerModelLoader",
            display_name="Load SINGER Video Model",
            category="SINGER/video",
            description=("Load the SINGER diffusion stack. Either a folder trained with `python -m singer_core.train "
                         f"singer` (its `final` folder, with vae/) in {singer_dir}/, or the official layout: "
                         f"SINGER's net.pth in {singer_dir}/ (hub {SINGER_REPO}), SD's VAE as the diffusers folder "
                         f"models/vae/{VAE_DIR_NAME}/ (hub {VAE_REPO}) and the ArcFace model "
                         f"{singer_dir}/{FACE_DIR}/glintr100.onnx (hub {HALLO_REPO}). net.pth already holds both "
                         "UNets and the 21 AnimateDiff motion modules; the SD1.5 UNet and mm_sd_v15_v2.ckpt are "
                         "not needed. Downloads happen only here, when allowed."),
            inputs=[
                io.Combo.Input("model", options=_model_choices(),
                               tooltip=f"A model folder (config.json + model.safetensors) or a net.pth / .safetensors "
                                       f"in {singer_dir}/; '{HUB_NET}' fetches the official weights "
                                       "(allow_download)."),
                io.Combo.Input("vae", options=_vae_choices(), default=AUTO,
                               tooltip=f"auto: the model folder's vae/, else models/vae/{VAE_DIR_NAME}/, "
                                       f"{singer_dir}/{VAE_DIR_NAME}/ or an SD1.5 base folder's vae/ "
                                       "(models/diffusers/stable-diffusion-v1-5). Or a diffusers folder / single "
                                       "file from models/vae."),
                io.Combo.Input("face_model", options=_face_choices(), default=AUTO,
                               tooltip=f"ArcFace model for the identity embedding. auto: {singer_dir}/{FACE_DIR}/"
                                       "glintr100.onnx for net.pth (required), the trained folder's own for ours; "
                                       "'none' = zero embedding (identity from the reference attention alone)."),
                io.Combo.Input("motion_module", options=_motion_choices(), default=NO_MOTION_MODULE,
                               tooltip=f"Optional AnimateDiff v2 motion module from models/{ANIMATEDIFF_FOLDER} "
                                       "(mm_sd_v15_v2.ckpt) that REPLACES the model's own temporal layers; "
                                       "leave 'none' for SINGER's trained ones.", optional=True),
                io.Boolean.Input("allow_download", default=False,
                                 tooltip="Fetch missing official parts (net.pth ~5 GB, sd-vae-ft-mse, glintr100.onnx, "
                                         "and Hallo's face detector scrfd_10g_bnkps.onnx) from the hub into the "
                                         "models folders. Off: an error says what to place where.", optional=True),
            ],
            outputs=[SingerModelType.Output("singer_model", display_name="SINGER model", tooltip="The SINGER stack, for Sample SINGER Video.")],
        )

    @classmethod
    def validate_inputs(cls, model, allow_download=False):
        # a missing model refuses the prompt before anything runs
        if model == HUB_NET:
            root = model_folder(SINGER_MODEL_FOLDER)
            if not (root / SINGER_FILE).is_file() and not allow_download:
                return (f"SINGER's {SINGER_FILE} is not in {root}: `hf download {SINGER_REPO} {SINGER_FILE} "
                        f"--local-dir {root}`, or switch allow_download on")
            return True
        return SINGER_MODELS.validate(model)

    @classmethod
    def execute(cls, model, vae, face_model, motion_module=NO_MOTION_MODULE, allow_download=False) -> io.NodeOutput:
        who = "SingerModelLoader"
        root = model_folder(SINGER_MODEL_FOLDER)
        if model == HUB_NET:
            path = root / SINGER_FILE
            if not path.is_file():
                if not allow_download:
                    raise ValueError(f"{who}: {root / SINGER_FILE} does not exist; run `hf download {SINGER_REPO} "
                                     f"{SINGER_FILE} --local-dir {root}`, or switch allow_download on")
                path = _download(SINGER_REPO, root, filename=SINGER_FILE)
        else:
            path = SINGER_MODELS.resolve(model, who)
        loaded = cls._load_folder(path, vae, face_model) if path.is_dir() else \
            cls._load_official(path, vae, face_model, allow_download)
        if allow_download:
            from ..singer_core.face.detector_files import fetch_scrfd, find_scrfd

            if find_scrfd(model_folder_paths(SINGER_MODEL_FOLDER)) is None:
                try:  # Hallo's face detector, next to glintr100.onnx: Face Crop / Sample Video find it ("auto")
                    fetch_scrfd(root)
                except RuntimeError as error:
                    raise RuntimeError(f"{who}: {error}") from error
        if motion_module not in (None, NO_MOTION_MODULE):
            from ..singer_core.diffusion.loading import load_motion_module

            module = resolve_model_path(ANIMATEDIFF_FOLDER, motion_module)
            if module is None:
                raise ValueError(f"{who}: '{motion_module}' is not in {model_folder(ANIMATEDIFF_FOLDER)}")
            try:
                load_motion_module(module, loaded.net)
            except ValueError as error:
                raise ValueError(f"{who}: {error}") from error
            logger.info("%s: motion modules replaced by '%s'", who, module.name)
        logger.info("%s: %r", who, loaded)
        return io.NodeOutput(loaded)

    @staticmethod
    def _load_folder(path: Path, vae: str, face_model: str):
        from ..singer_core.diffusion.model_folder import VAE_DIR, load_model_folder

        who = "SingerModelLoader"
        missing = [f"{path / name} ({what})" for name, what in
                   (("config.json", "SingerNet.save_pretrained"), ("model.safetensors", "the trained weights"))
                   if not (path / name).is_file()]
        vae_source = None
        if vae != AUTO:
            vae_source = _find_vae(vae)
        elif not (path / VAE_DIR / "config.json").is_file() and _training_info(path, who) is None:
            vae_source = _find_vae(AUTO)
            if vae_source is None:
                missing.append(f"{path / VAE_DIR}/ (a diffusers AutoencoderKL folder: the trainer's vae/, or "
                               f"models/vae/{VAE_DIR_NAME}/)")
        if missing:
            raise ValueError(f"{who}: the model folder '{path.name}' is incomplete; missing: " + "; ".join(missing))
        face = None
        if face_model not in (AUTO, NO_FACE_MODEL):
            face = resolve_model_path(SINGER_MODEL_FOLDER, face_model)
        try:
            loaded = load_model_folder(path, vae=None if vae_source is None else _load_vae_any(vae_source),
                                       face_model_path=face)
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            raise ValueError(f"{who}: {error}") from error
        if face_model == NO_FACE_MODEL:
            loaded.face_model_path = None
        return loaded

    @staticmethod
    def _load_official(path: Path, vae: str, face_model: str, allow_download: bool):
        from ..singer_core.diffusion.loading import load_net_pth
        from ..singer_core.diffusion.model_folder import SingerVideoModel

        who = "SingerModelLoader"
        vae_path, missing = _find_vae(vae), []
        if vae_path is None and vae == AUTO and allow_download:
            vae_path = _download(VAE_REPO, model_folder(VAE_FOLDER) / VAE_DIR_NAME)
        if vae_path is None:
            vae_dir = model_folder(VAE_FOLDER) / VAE_DIR_NAME
            missing.append(f"the VAE: the diffusers folder {vae_dir}/ (`hf download {VAE_REPO} config.json "
                           f"diffusion_pytorch_model.safetensors --local-dir {vae_dir}`)")
        face = None
        if face_model == AUTO:
            face = _find_face_model()
            if face is None and allow_download:
                _download(HALLO_REPO, model_folder(SINGER_MODEL_FOLDER), filename=FACE_FILE)
                face = _find_face_model()
            if face is None:
                missing.append(f"the face model: {model_folder(SINGER_MODEL_FOLDER) / FACE_DIR / 'glintr100.onnx'} "
                               f"(`hf download {HALLO_REPO} {FACE_FILE} --local-dir "
                               f"{model_folder(SINGER_MODEL_FOLDER)}`); or choose face_model '{NO_FACE_MODEL}'")
        elif face_model != NO_FACE_MODEL:
            face = resolve_model_path(SINGER_MODEL_FOLDER, face_model)
        if missing:
            raise ValueError(f"{who}: cannot use '{path.name}' yet; missing " + "; ".join(missing) +
                             ". Place the files (or switch allow_download on) and run again")
        try:
            # straight into the compute dtype of dtype "auto" (fp16 on CUDA, fp32 on CPU): one copy of the weights
            net = load_net_pth(path, dtype=torch.float16 if torch.cuda.is_available() else torch.float32)
            loaded_vae = _load_vae_any(vae_path)
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            raise ValueError(f"{who}: {error}") from error
        return SingerVideoModel(net=net, vae=loaded_vae, face_model_path=face, source=str(path))


class SingerSampleVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerSampleVideo",
            display_name="Sample SINGER Video",
            category="SINGER/video",
            description=("Animate a portrait to sing a song (SINGER / Hallo): the face is cropped, the song encoded "
                         "per video frame, clips denoised one after another (DDIM, v-prediction, classifier-free "
                         "guidance) each continuing from the last frames of the previous one, decoded and pasted "
                         "back. Any song length; memory does not grow with it. Progress = steps x clips."),
            inputs=[
                SingerModelType.Input("singer_model", tooltip="From Load SINGER Video Model."),
                io.Image.Input("image", tooltip="The portrait (first image of a batch); RGBA and grayscale are "
                                                "converted to RGB. At least 64 px per side."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The song (ideally the isolated vocals); also attached to the video. Needs "
                                       "audio_encoder unless the model's encoder is the built-in mel-80."),
                AudioEncoder.Input("audio_encoder", optional=True,
                                   tooltip="From Load Audio Encoder: the encoder the model was trained with "
                                           "(SINGER: wav2vec2-base-960h; the tiny models: mel-80)."),
                AudioFeatures.Input("features", optional=True,
                                    tooltip="Precomputed features from Encode Audio (all layers); used instead of "
                                            "encoding the audio."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Noise seed (clip k uses seed + k)."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="DDIM steps per clip; 0 = auto: what the model recommends (SINGER's net.pth: "
                                     "Hallo's 40; our trained folders store theirs)."),
                io.Float.Input("cfg", default=0.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance scale; 0 = auto: what the model recommends "
                                       "(net.pth: 3.5); 1 = no guidance, half the time."),
                io.Float.Input("pose_weight", default=1.0, min=0.0, max=5.0, step=0.05,
                               tooltip="Audio weight on the whole frame (head pose, background)."),
                io.Float.Input("face_weight", default=1.0, min=0.0, max=5.0, step=0.05,
                               tooltip="Audio weight on the face region (expression)."),
                io.Float.Input("lip_weight", default=1.0, min=0.0, max=5.0, step=0.05,
                               tooltip="Audio weight on the lip region (mouth movement)."),
                io.Combo.Input("dtype", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="Compute dtype; auto = fp16 on a GPU, fp32 on the CPU."),
                io.Boolean.Input("offload", default=False,
                                 tooltip="Keep the parts that are idle (reference UNet, VAE) on the CPU: less GPU "
                                         "memory, somewhat slower."),
                io.Float.Input("crop_ratio", default=1.8, min=0.0, max=4.0, step=0.05,
                               tooltip="Crop side = face box x this (1.8: face at 50-70% of the crop); 0 = the "
                                       "whole image (the box still places the face masks). No face found: the "
                                       "whole image, with a warning."),
                io.Int.Input("clip_frames", default=0, min=0, max=64,
                             tooltip="Frames denoised together; 0 = auto: the clip length the model was trained "
                                     "with (SINGER: 16, the tiny models: 4). Clip + motion frames must fit the "
                                     "motion modules' 32-frame table (24 for the tiny models)."),
                io.Int.Input("motion_frames", default=2, min=0, max=16,
                             tooltip="Last frames of a clip that condition the next one (SINGER: 2)."),
                io.Boolean.Input("use_msm", default=True,
                                 tooltip="SINGER's multi-scale spectral module on the audio tokens; off = Hallo's "
                                         "plain audio path (ablation)."),
                io.Float.Input("fps", default=25.0, min=1.0, max=60.0, step=0.01, optional=True,
                               tooltip="Video frame rate (SINGER: 25); the features must be at the same rate."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto", optional=True,
                               tooltip="auto: ComfyUI's torch device."),
                io.String.Input("face_box", default="", optional=True,
                                tooltip="Optional face box 'x, y, w, h' in portrait pixels (left, top, width, "
                                        "height): no face detector needed. Empty: detected (Hallo's SCRFD or YuNet "
                                        f"from models/{SINGER_MODEL_FOLDER}, or OpenCV 4's Haar cascade)."),
                io.Mask.Input("face_mask", optional=True,
                              tooltip="Optional mask over the face (SynthSinger Clip's face_mask, or painted in Load "
                                      "Image's mask editor); its bounding box is the face box. Wins over face_box."),
            ],
            outputs=[
                io.Video.Output("video", display_name="video", tooltip="The singing video with the song attached (for Save Video)."),
                io.Image.Output("frames", display_name="frames", tooltip="The frames as an IMAGE batch, at the portrait's size."),
            ],
        )

    @classmethod
    def execute(cls, singer_model, image, seed, steps, cfg, pose_weight, face_weight, lip_weight, dtype, offload,
                crop_ratio, clip_frames, motion_frames, use_msm, audio=None, audio_encoder=None, features=None,
                fps=25.0, device="auto", face_box="", face_mask=None) -> io.NodeOutput:
        from ..singer_core.audio.io import audio_from_comfy
        from .face import user_face_box

        who = "SingerSampleVideo"
        recommended = recommended_sampling(singer_model)
        steps = steps or recommended["steps"]
        cfg = cfg or recommended["cfg"]
        clip_frames = clip_frames or recommended["clip_frames"]
        logger.info("%s: %d steps, cfg %g, %d-frame clips", who, steps, cfg, clip_frames)
        portrait = portrait_from_image(image, who)
        box = user_face_box(face_box, face_mask, portrait.shape[1], portrait.shape[0], who)
        if 0 < crop_ratio < 1:
            raise ValueError(f"{who}: crop_ratio {crop_ratio} would cut into the face; use 0 (whole image) or >= 1")
        limit = singer_model.net.config.motion_max_len
        if clip_frames + motion_frames > limit:
            raise ValueError(f"{who}: clip_frames + motion_frames = {clip_frames + motion_frames} exceeds this "
                             f"model's motion position table ({limit}); lower them")
        waveform = rate = None
        if audio is not None:
            items, rate = audio_from_comfy(audio, who)
            if items.shape[0] > 1:
                logger.warning("%s: the AUDIO batch has %d items; using the first", who, items.shape[0])
            waveform = items[0].float()
        if features is None:
            if waveform is None:
                raise ValueError(f"{who}: connect the song to 'audio' (with an audio encoder) or precomputed "
                                 "'features'")
            encoder = audio_encoder if audio_encoder is not None else singer_model.builtin_audio_encoder()
            if encoder is None:
                raise ValueError(f"{who}: this model needs the '{singer_model.audio_encoder}' audio encoder to encode "
                                 "the song; connect Load Audio Encoder (SINGER) with it to 'audio_encoder'")
            try:
                features = encoder.encode(waveform, rate, fps, layers=singer_model.audio_layers, interpolate="hallo",
                                          progress=comfy_progress())
            except ValueError as error:
                raise ValueError(f"{who}: {error}") from error
        # the pipeline checks the features once (shape, row layout, fps: audio.features.check_features)
        device = torch_device(device)
        clips = math.ceil(features.frames / clip_frames)
        pipeline = singer_model.pipeline()
        try:
            result = pipeline(portrait, features=features, progress=comfy_progress(steps * clips), steps=steps,
                              guidance=cfg, seed=seed, clip_frames=clip_frames, motion_frames=motion_frames, fps=fps,
                              pose_weight=pose_weight, face_weight=face_weight, lip_weight=lip_weight, dtype=dtype,
                              device=device, offload=offload, use_msm=use_msm, crop_ratio=crop_ratio,
                              face_box=box, detector="auto",
                              models_dirs=tuple(str(path) for path in model_folder_paths(SINGER_MODEL_FOLDER)))
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        frames = result.frames
        song = None
        if waveform is not None:
            song = {"waveform": waveform[None].cpu(), "sample_rate": int(rate)}
        video = InputImpl.VideoFromComponents(Types.VideoComponents(
            images=frames, audio=song, frame_rate=Fraction(fps).limit_denominator(1001)))
        return io.NodeOutput(video, frames, ui=video_preview_ui(frames, fps, song, "singer_sample_video"))


__all__ = ["SingerModelLoader", "SingerSampleVideo"]
