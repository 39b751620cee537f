"""SINGER / Hallo inference: portrait + song -> singing video (face crop, VAE latents, face masks and identity
embedding; vocals -> wav2vec2 layers -> 5-frame windows -> audio tokens + MSM; zero-SNR v-prediction DDIM over
16-frame clips chained by 2 motion frames; sliced VAE decoding; paste-back onto the portrait)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

import numpy as np
import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..audio.features import SingerAudioFeatures, check_features, same_encoder
from ..face.crop import HALLO_EXPAND_RATIO, CropTransform, expand_box, paste_back, square_crop
from ..face.detect import Box
from ..face.user_box import box_from_landmarks, check_box
from ..io.config import JsonConfig
from ..io.image import to_model, to_uint8, unit_array
from ..ops.noise_schedule import NoiseSchedule
from ..progress import Progress
from .clip_loop import SOLVERS, SamplerPlan, iter_clips
from .config import DiffusionConfig
from .face_embedding import (
    FaceEmbedder,
    keypoints_from_box,
    keypoints_from_landmarks68,
    zero_embedding,
)
from .masks import LIP_EXPAND_RATIO, face_masks
from .net import SingerNet
from .vae import decode_latents, encode_images, vae_downscale

logger = logging.getLogger(__name__)

FrameSink = Callable[[torch.Tensor], None]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class PipelineOptions(JsonConfig):
    """Every setting of `SingerPipeline.__call__` (defaults: Hallo's inference.yaml)."""

    # DDIM steps ("trailing" spacing)
    steps: int = 40
    # classifier-free guidance scale; 1.0 runs the conditional branch only (one UNet call per step)
    guidance: float = 3.5
    # noise seed (clip k draws from seed + k)
    seed: int = 0
    # video frames per denoised clip
    clip_frames: int = 16
    # last frames of the previous clip fed to the next one (continuity)
    motion_frames: int = 2
    # output frame rate (the audio features must have the same)
    fps: float = 25.0
    # audio-module weights of the full (background/pose), face and lip regions
    pose_weight: float = 1.0
    face_weight: float = 1.0
    lip_weight: float = 1.0
    # weights/latent dtype: "fp32", "fp16" or "bf16"; "auto" = fp16 on CUDA, fp32 elsewhere
    dtype: str = "auto"
    # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # move idle parts (reference UNet, VAE, audio encoder) to the CPU while others run
    offload: bool = False
    # the MSM (SINGER's audioembed) on the audio tokens; False = plain Hallo audio path
    use_msm: bool = True
    # crop square = face box x crop_ratio; 0 = the whole image (padded to a square), as Hallo takes it.
    # 1.8 puts the face at 50-70 % of the frame (Hallo's advice for portraits); with 1.2 (Hallo's *mask*
    # ratio) the face mask would cover the whole crop and the background audio mask would vanish.
    crop_ratio: float = 1.8
    # Hallo's expansion of the face rectangle of the face-locator / region masks
    face_expand_ratio: float = HALLO_EXPAND_RATIO
    # Hallo's expansion of the lip rectangle
    lip_expand_ratio: float = LIP_EXPAND_RATIO
    # face detector when neither face_box nor landmarks are given: "auto" (SCRFD, else YuNet found in
    # models_dirs, else OpenCV 4's Haar cascade), "scrfd", "yunet", "haar" or a detector file (singer_core.face.detect)
    detector: str = "auto"
    # folders searched for scrfd_10g_bnkps.onnx / face_detection_yunet_*.onnx (ComfyUI: models/singer)
    models_dirs: tuple[str, ...] = ()
    # isolate the vocals before encoding: "none" or "dsp" (singer_core.audio.separation, no weights)
    separation: str = "none"
    # frames per VAE decoder call
    decode_slice: int = 8
    # motion frames go to the next clip decoded to pixels and encoded again by the VAE, as the official
    # pipeline does (it keeps the frames it already decoded); False passes their latents on directly
    reencode_motion_frames: bool = True
    # paste-back feather as a share of the crop side (0 = hard edge)
    feather: float = 0.1
    # sampler: "ddim" (official), "dpmpp" (DPM-Solver++ 2M) or "unipc" (diffusers' schedulers)
    solver: str = "ddim"
    # share of the steps (the first ones) that use classifier-free guidance (official: 1)
    guided_share: float = 1.0
    # reference image's attention banks written once per video (official: per clip)
    cache_reference: bool = False

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.steps, int) and 1 <= self.steps <= 1000, f"steps must be in 1..1000, got {self.steps!r}"),
            (self.guidance >= 1.0, f"guidance must be >= 1 (1 = no guidance), got {self.guidance!r}"),
            (isinstance(self.clip_frames, int) and self.clip_frames >= 1,
             f"clip_frames must be an integer >= 1, got {self.clip_frames!r}"),
            (isinstance(self.motion_frames, int) and self.motion_frames >= 0,
             f"motion_frames must be an integer >= 0, got {self.motion_frames!r}"),
            (self.fps > 0, f"fps must be > 0, got {self.fps!r}"),
            (self.dtype in ("auto", *DTYPES), f"dtype must be 'auto', 'fp32', 'fp16' or 'bf16', got {self.dtype!r}"),
            (self.crop_ratio == 0 or self.crop_ratio >= 1.0,
             f"crop_ratio must be 0 (whole image) or >= 1, got {self.crop_ratio!r}"),
            (self.face_expand_ratio > 0 and self.lip_expand_ratio > 0, "face/lip expand ratios must be > 0"),
            (self.separation in ("none", "dsp"), f"separation must be 'none' or 'dsp', got {self.separation!r}"),
            (isinstance(self.decode_slice, int) and self.decode_slice >= 1,
             f"decode_slice must be an integer >= 1, got {self.decode_slice!r}"),
            (0.0 <= self.feather <= 0.5, f"feather must be in [0, 0.5], got {self.feather!r}"),
            (self.solver in SOLVERS, f"solver must be one of {SOLVERS}, got {self.solver!r}"),
            (0.0 <= self.guided_share <= 1.0, f"guided_share must be in [0, 1], got {self.guided_share!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PipelineOptions: {message}")

    @classmethod
    def fast(cls, **overrides) -> PipelineOptions:
        """Our fast settings (see `SamplerPlan.fast`, benchmarks/singer_cost.py): DPM-Solver++ 16 steps,
        reference banks cached, motion frames passed as latents."""
        plan = SamplerPlan.fast()
        return cls(**{**dict(steps=plan.steps, solver=plan.solver, guided_share=plan.guided_share,
                             cache_reference=plan.cache_reference, reencode_motion_frames=False), **overrides})

    def plan(self) -> SamplerPlan:
        """The per-clip sampling settings."""
        return SamplerPlan(solver=self.solver, steps=self.steps, guidance=self.guidance,
                           guided_share=self.guided_share, cache_reference=self.cache_reference)

    def torch_device(self) -> torch.device:
        """The device to run on ("auto": CUDA when available)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        """The compute dtype ("auto": fp16 on CUDA, fp32 elsewhere)."""
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """A generated singing video."""

    frames: torch.Tensor | None  # (T, H, W, 3) float32 in [0, 1], the portrait's size; None with a frame sink
    fps: float  # frame rate of `frames`
    audio: torch.Tensor | None  # (C, N) the input song (None when only features were given)
    sample_rate: int | None  # Hz of `audio`
    face_box: Box  # the crop square in portrait pixels (x, y, side, side) the video was generated in
    frame_count: int = 0  # T = frames of the audio (also when they went to a frame sink)


def use_sdpa_attention(module: torch.nn.Module) -> int:
    """Give every diffusers Attention in `module` PyTorch SDPA (AttnProcessor2_0), keeping custom processors
    (reference attention). Returns how many were set."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    count = 0
    for child in module.modules():
        if isinstance(child, Attention) and type(child.processor) in (AttnProcessor, AttnProcessor2_0):
            child.set_processor(AttnProcessor2_0())
            count += 1
    return count


class _Offload:
    """Keeps a module on the CPU except while its forward runs (forward pre/post hooks)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device
        module.to("cpu")
        self.handles = [module.register_forward_pre_hook(self._load), module.register_forward_hook(self._unload)]

    def _load(self, module: torch.nn.Module, args) -> None:
        module.to(self.device)

    def _unload(self, module: torch.nn.Module, args, output) -> None:
        module.to("cpu")

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class SingerPipeline:
    """Portrait + song -> singing video with a SINGER/Hallo `SingerNet`.

    Build with `from_parts`. Calling it runs: crop -> VAE latent, masks, face embedding; audio -> features ->
    windows; `sample_long`; sliced decoding; paste-back. Nothing is cached between calls.
    """

    def __init__(self, net: SingerNet, vae, *, face_embedder: FaceEmbedder | None = None, audio_encoder=None,
                 config: PipelineOptions | None = None, schedule: NoiseSchedule | None = None,
                 audio_encoder_name: str | None = None) -> None:
        self.net, self.vae = net.eval(), vae.eval()
        self.face_embedder, self.audio_encoder = face_embedder, audio_encoder
        # the encoder the net was trained on, named when features do not fit (not enforced: any encoder of the
        # right shape works)
        self.audio_encoder_name = audio_encoder_name or getattr(audio_encoder, "name", None)
        self.config = config or PipelineOptions()
        self.schedule = schedule or NoiseSchedule()
        net_config: DiffusionConfig = net.config
        self.latent_size = net_config.sample_size
        self.image_size = self.latent_size * vae_downscale(vae)
        self.locator_size = self.latent_size * 2 ** (len(net_config.face_locator_channels) - 1)
        if vae.config.latent_channels != net_config.in_channels:
            raise ValueError(f"SingerPipeline: the VAE has {vae.config.latent_channels} latent channels but the "
                             f"network takes {net_config.in_channels}")
        use_sdpa_attention(self.net)
        use_sdpa_attention(self.vae)

    @classmethod
    def from_parts(cls, net: SingerNet, vae, *, face_model_path: str | os.PathLike | None = None,
                   audio_encoder=None, config: PipelineOptions | None = None,
                   schedule: NoiseSchedule | None = None, audio_encoder_name: str | None = None) -> SingerPipeline:
        """A pipeline from loaded parts.

        net: SingerNet (load_net_pth or from_pretrained); vae: diffusers AutoencoderKL (load_vae / tiny_vae);
        face_model_path: ArcFace .onnx (e.g. Hallo's glintr100.onnx); None = zero identity embedding (with a
        warning at each call: the face then comes from the reference attention alone); audio_encoder: an
        AudioEncoder (wav2vec2-base-960h, all layers) used when a call gives audio instead of features;
        config: default PipelineOptions; schedule: training noise schedule (Hallo's by default);
        audio_encoder_name: the encoder the net was trained on, for error messages (default: audio_encoder's).
        """
        embedder = None if face_model_path is None else FaceEmbedder(face_model_path)
        return cls(net, vae, face_embedder=embedder, audio_encoder=audio_encoder, config=config, schedule=schedule,
                   audio_encoder_name=audio_encoder_name)

    # ---- conditions ------------------------------------------------------------------------------
    def _face_box(self, image_u8: np.ndarray, face_box, landmarks, options: PipelineOptions
                  ) -> tuple[Box | None, np.ndarray | None]:
        """The face box: the caller's, else the landmarks' (no detector), else the largest detected face; and that
        face's 5 detector keypoints when the detector gives them (SCRFD, as Hallo aligns its ArcFace crop)."""
        height, width = image_u8.shape[:2]
        if face_box is not None:
            return check_box(Box(*(float(v) for v in tuple(face_box)[:4])), width, height, "SingerPipeline"), None
        if landmarks is not None:
            return box_from_landmarks(landmarks), None
        from ..face.detect import detect_faces_with_keypoints
        from ..face.detector_files import NoFaceDetectorError

        try:
            found = detect_faces_with_keypoints(image_u8, detector=options.detector,
                                                models_dirs=tuple(options.models_dirs))
        except NoFaceDetectorError as error:
            if options.crop_ratio != 0:  # a face crop needs the face: say how to get a detector or give the box
                raise NoFaceDetectorError(f"SingerPipeline: {error}") from None
            # crop_ratio 0 animates the whole image (the tiny stacks): as with no face found, no box is needed
            logger.warning("SingerPipeline: no face detector available (%s); crop_ratio is 0, so the whole image "
                           "is used", str(error).split(";")[0])
            return None, None
        if not found:
            logger.warning("SingerPipeline: no face found in the portrait; using the whole image (give face_box "
                           "or a better detector for a face crop)")
            return None, None
        return found[0]

    def _crop_box(self, image: np.ndarray, box: Box | None, ratio: float) -> Box:
        height, width = image.shape[:2]
        if box is None or ratio == 0:
            side = max(height, width)
            return Box((width - side) / 2, (height - side) / 2, side, side)
        return expand_box(box, ratio)

    def _embedding(self, image_u8: np.ndarray, box: Box | None, landmarks, detected_keypoints=None) -> torch.Tensor:
        dim = self.net.config.face_embedding_dim
        if self.face_embedder is None:
            logger.warning("SingerPipeline: no face-recognition model given; using the zero identity embedding "
                           "(Hallo's no-face fallback). Give face_model_path (glintr100.onnx) for identity")
            return zero_embedding(dim)
        if landmarks is not None:
            keypoints = keypoints_from_landmarks68(landmarks)
        elif detected_keypoints is not None:
            keypoints = detected_keypoints
        elif box is not None:
            keypoints = keypoints_from_box(box)
        else:
            logger.warning("SingerPipeline: no face box; using the zero identity embedding")
            return zero_embedding(dim)
        embedding = self.face_embedder.embed(image_u8, keypoints=keypoints)
        if embedding.numel() != dim:
            raise ValueError(f"SingerPipeline: the face model gives {embedding.numel()}-d embeddings, the network "
                             f"takes {dim}; use the recognition model the network was trained with")
        return embedding

    def _features(self, audio, sample_rate, features, options: PipelineOptions, device) -> SingerAudioFeatures:
        if features is None:
            if audio is None or sample_rate is None:
                raise ValueError("SingerPipeline: give audio and sample_rate, or precomputed features")
            if self.audio_encoder is None:
                raise ValueError("SingerPipeline: audio given but the pipeline has no audio_encoder; build it with "
                                 "from_parts(..., audio_encoder=load_audio_encoder(...)) or pass features=")
            waveform = torch.as_tensor(audio, dtype=torch.float32)
            waveform = waveform[None] if waveform.dim() == 1 else waveform
            if options.separation == "dsp":
                from ..audio.separation import separate_vocals_dsp

                waveform = separate_vocals_dsp(waveform, int(sample_rate)).vocals
            encoder = self.audio_encoder
            moved = options.offload and hasattr(encoder, "to")
            if moved:
                encoder.to(device)
            try:
                features = encoder.encode(waveform, int(sample_rate), options.fps, layers="all", interpolate="hallo")
            finally:
                if moved:
                    encoder.to("cpu")
        # the one check of the features (nodes and callers do not re-check); tiny stacks take mel windows as rows
        config = self.net.config
        return check_features(features, "SingerPipeline", model="the network's AudioProj",
                              trained_on=self.audio_encoder_name, shape=(config.audio_blocks, config.audio_channels),
                              rows=None if same_encoder(features.encoder, MEL_ENCODER_NAME) else "layers",
                              fps=options.fps, fps_owner="the video is at")

    # ---- the run ---------------------------------------------------------------------------------
    def __call__(self, image, audio: torch.Tensor | None = None, sample_rate: int | None = None, *,
                 features: SingerAudioFeatures | None = None, face_box=None, landmarks=None,
                 options: PipelineOptions | None = None, progress: Progress | None = None,
                 frame_sink: FrameSink | None = None, **overrides) -> PipelineResult:
        """Generate a singing video.

        image: (H, W, 3) float 0..1 or uint8 RGB portrait (numpy or tensor); audio: (C, T) or (T,) float song,
        sample_rate: its Hz (encoded with the pipeline's audio_encoder) OR features: SingerAudioFeatures with
        rows="layers" (then audio is optional and only returned); face_box: (x, y, w, h) in portrait pixels
        (default: the landmarks' box when landmarks are given, else detected with options.detector);
        landmarks: optional (68, 2) portrait-pixel landmarks (masks, face alignment, and the box: no detector);
        options: PipelineOptions (default: the pipeline's), overrides: fields replaced in it (steps=, seed=, ...);
        progress: (done, total) after every denoising step, total = steps x clips; may raise to stop (nothing
        is returned or written then); frame_sink: called with each finished clip's (f, H, W, 3) float32
        frames in order (e.g. `VideoWriter.write`); the frames are then not kept (result.frames is None),
        so memory stays flat in song length. Returns PipelineResult with T = features.frames frames.
        Clips are sampled, decoded and pasted one at a time (audio windows cut per clip).
        """
        options = dataclasses.replace(options or self.config, **overrides)
        device = options.torch_device()
        dtype = options.torch_dtype(device)
        portrait = unit_array(image, "SingerPipeline")  # (H, W, 3) float32 0..1: a view of a CPU float32 portrait
        portrait_u8 = to_uint8(portrait)  # for the face detector and the identity embedder
        # 1. audio features (first: the cheapest place to fail on a bad song)
        features = self._features(audio, sample_rate, features, options, device)
        # 2. face box, crop, masks, identity
        box, detected_keypoints = self._face_box(portrait_u8, face_box, landmarks, options)
        crop, transform = square_crop(portrait, self._crop_box(portrait, box, options.crop_ratio), self.image_size)
        crop_face = self._box_in_crop(box, transform) if box is not None else None
        crop_landmarks = None if landmarks is None else transform.to_crop(np.asarray(landmarks, dtype=np.float64))
        masks = face_masks(self.image_size, self.latent_size,
                           crop_face or (0.0, 0.0, float(self.image_size), float(self.image_size)),
                           landmarks=crop_landmarks, face_expand_ratio=options.face_expand_ratio,
                           lip_expand_ratio=options.lip_expand_ratio, locator_size=self.locator_size)
        embedding = self._embedding(portrait_u8, box, landmarks, detected_keypoints)
        # 3. models to device / dtype
        self.net.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        offloads: list[_Offload] = []
        try:
            reference = encode_images(self.vae, to_model(crop)).to(device=device, dtype=dtype)
            if options.offload:
                self.vae.to("cpu")
                offloads.append(_Offload(self.net.reference_unet, device))
            config = self.net.config
            # 4. denoise, decode and paste clip by clip
            clips = iter_clips(
                self.net, reference_latent=reference, face_embedding=embedding[None].to(device=device, dtype=dtype),
                audio_features=features.features, window_radius=(config.audio_seq_len - 1) // 2,
                face_mask_image=masks.locator_image.to(device=device, dtype=dtype),
                masks=self._region_masks(masks, options.clip_frames, device, dtype),
                clip_frames=options.clip_frames, motion_frames=options.motion_frames, plan=options.plan(),
                motion_scale=(options.pose_weight, options.face_weight, options.lip_weight),
                seed=options.seed, schedule=self.schedule, use_msm=options.use_msm,
                reencode=self._vae_round_trip if options.reencode_motion_frames else None, progress=progress)
            height, width = portrait.shape[:2]
            out = None if frame_sink is not None else torch.empty(features.frames, height, width, 3)
            done = 0
            for latents in clips:
                if options.offload:
                    self.net.to("cpu")
                    self.vae.to(device)
                frames = self._decode_and_paste(latents, portrait, transform, options)
                if options.offload:
                    self.vae.to("cpu")
                    self.net.to(device)
                if out is None:
                    frame_sink(frames)
                else:
                    out[done:done + frames.shape[0]] = frames
                done += frames.shape[0]
                del frames, latents
        finally:
            for offload in offloads:
                offload.remove()
        if options.offload:
            self.net.to("cpu")
        waveform = None if audio is None else torch.as_tensor(audio, dtype=torch.float32)
        return PipelineResult(frames=out, fps=float(options.fps), audio=waveform,
                              sample_rate=None if waveform is None else int(sample_rate),
                              face_box=Box(float(transform.x0), float(transform.y0), float(transform.side),
                                           float(transform.side)), frame_count=done)

    def _vae_round_trip(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (M, C, h, w) decoded to pixels and encoded again (the official motion-frame path)."""
        param = next(self.vae.parameters())
        pixels = decode_latents(self.vae, latents.to(device=param.device, dtype=param.dtype))  # (M, H, W, 3) 0..1
        return encode_images(self.vae, to_model(pixels)).to(latents)

    @staticmethod
    def _box_in_crop(box: Box, transform: CropTransform) -> tuple[float, float, float, float]:
        corners = transform.to_crop(np.array([[box.x - 0.5, box.y - 0.5], [box.x + box.w - 0.5, box.y + box.h - 0.5]]))
        (x0, y0), (x1, y1) = corners + 0.5
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)

    @staticmethod
    def _region_masks(masks, frames: int, device, dtype):
        from .audio_modules import RegionMasks

        region = masks.region_masks(frames)
        return RegionMasks(*(tuple(level.to(device=device, dtype=dtype) for level in field)
                             for field in (region.full, region.face, region.lip)))

    def _decode_and_paste(self, latents: torch.Tensor, portrait: np.ndarray, transform: CropTransform,
                          options: PipelineOptions) -> torch.Tensor:
        total = latents.shape[2]
        height, width = portrait.shape[:2]
        out = torch.empty(total, height, width, 3, dtype=torch.float32)
        step = options.decode_slice
        for start in range(0, total, step):
            decoded = decode_latents(self.vae, latents[:, :, start:start + step], slice_frames=step)
            for index, frame in enumerate(decoded.numpy()):
                pasted = paste_back(portrait, frame, transform, feather=options.feather)
                out[start + index] = torch.from_numpy(pasted)
        return out


__all__ = ["DTYPES", "PipelineOptions", "PipelineResult", "SingerPipeline", "use_sdpa_attention"]
