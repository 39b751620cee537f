"""The ``singer`` training task: SINGER's training stage (paper §3, §6.1.1) -- v-prediction MSE with the zero-SNR
schedule on 16-frame clips whose first clip frame is the reference image; the VAE, face encoder and (for the
``paper`` preset) both UNets frozen, the audio projection, the MSM (``audioembed``) and the SFM
(``denoising_unet.hidden_spectral_weighting``) trained with Adam at 1e-5.

Per sample: the clip's frames [start - motion_frames, start + frames) are VAE latents (scaled); the first
``motion_frames`` of them and the clip's frame 0 (the reference) go through the reference UNet (Hallo's motion
frames; at start 0 they repeat frame 0, as inference starts from the portrait); the other ``frames`` are the
target x0. Audio: the clip's features (F, R, D) in windows of 2 * audio_radius + 1 frames (Hallo's clamped
window, ``SingerAudioFeatures.windows``). The face-locator image and the full/face/lip region masks come from
the reference frame's landmarks (``diffusion.masks.face_masks``, as the inference pipeline makes them). A
sample draws t uniformly in [0, T), noise, and (Hallo's classifier-free training) drops the reference + face
embedding with probability drop_reference and the audio tokens with drop_audio.

Tiny presets need no downloaded weights: the VAE is trained first by the ``vae`` task (tiny preset, cached),
the audio is the weight-free mel-80 front end (F, 16, 80) per frame; each frame's mel window already spans
0.2 s (5 video frames at 25 fps), so the tiny net's audio projection takes audio_seq_len 1 x 16 rows x 80 bins
(``DiffusionConfig.tiny()`` with audio_seq_len=1, audio_blocks=16, audio_channels=80, what
``SingerPipeline`` feeds from mel features), and the face embedding is zero (the pipeline's no-face-model
path), so identity comes through the reference attention alone.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from ..audio.encoders import MEL_ENCODER_NAME
from ..data.synthetic import SynthSingerConfig
from .config import LoopConfig
from .data_cache import AudioSpec, cached_features, synth_dataset
from .loop import EpochSampler, TrainParts, step_generator

logger = logging.getLogger(__name__)

TRAINABLE = ("paper", "all")
# what the `paper` rule trains (§6.1.1): Hallo's audio projection, the MSM (its FC; the DCT weight is a buffer),
# the SFM; everything else (reference / denoising UNets, face locator, image projection) stays frozen
PAPER_PREFIXES = ("audioproj.", "audioembed.", "denoising_unet.hidden_spectral_weighting.")
# net.pth tensors a Hallo checkpoint lacks (SINGER's additions): initialised fresh when the base is Hallo's
SINGER_ONLY_PREFIXES = ("audioembed.", "denoising_unet.hidden_spectral_weighting.")


@dataclasses.dataclass(frozen=True)
class SingerTrainConfig(LoopConfig):
    """Everything of a singer run: loop settings, which network and which parts train, losses and data."""

    # network
    net: str = "tiny"  # "tiny" (DiffusionConfig.tiny()) or "full" (SD1.5 / Hallo / SINGER size)
    use_msm: bool = True  # build the MSM (audioembed); False = audio tokens pass unchanged (ablation)
    use_sfm: bool = True  # build the SFM after the mid block; False = identity (ablation)
    trainable: str = "all"  # "paper": audioproj + MSM + SFM (§6.1.1); "all": every part (no base weights exist)
    base_weights: str | None = None  # SINGER or Hallo net.pth / .safetensors, or a SingerNet folder (save_pretrained)
    tie_init: bool = True  # without base_weights: start the denoising UNet from the reference UNet's weights, as
    # Hallo / SINGER start both from the same SD1.5 UNet (their motion / audio modules keep their own init)
    vae: str | None = None  # diffusers AutoencoderKL folder or hub id (frozen); None = train the tiny one first
    vae_steps: int = 400  # steps of that tiny VAE (the vae task's tiny preset on this run's frames)
    face_model: str | None = None  # ArcFace .onnx for the face embedding (frozen); None = zero embedding
    # diffusion loss
    train_timesteps: int = 1000  # T of the zero-SNR linear schedule (Hallo/SINGER noise_scheduler_kwargs)
    lambda_face: float = 0.0  # extra loss weight inside the face mask (loss weight 1 + this * face mask)
    lambda_lip: float = 0.0  # extra loss weight inside the lip mask
    drop_reference: float = 0.05  # probability to drop reference attention + face embedding (guidance training)
    drop_audio: float = 0.05  # probability to zero the audio tokens (guidance training)
    region_masks: bool = True  # feed the full/face/lip masks to the audio modules (Hallo); False = all ones
    # data
    image_size: int = 64  # square frame size; the latent side (image_size / VAE downscale) sets sample_size
    frames: int = 16  # frames per sample (paper: 16)
    motion_frames: int = 2  # preceding frames through the reference UNet with the reference image (Hallo: 2)
    window_stride: int = 4  # frames between sample starts within a clip
    split: str = "train"  # dataset split to train on
    cache_latents: bool = True  # encode every frame once at build (small data); False = encode per step
    audio_encoder: str = MEL_ENCODER_NAME  # "mel-80" (no weights) or a wav2vec2 hub id / folder / file
    audio_layers: str = "all"  # "all" or "last" transformer layers (ignored by mel-80)
    audio_radius: int = 0  # audio window i-r .. i+r (audio_seq_len = 2r + 1; Hallo: 2 for wav2vec2)
    audio_source: str = "audio.wav"  # clip wav to encode ("audio.wav" mix or "vocals.wav")
    audio_models_dir: str | None = None  # folder searched for audio encoder weights
    synth_clips: int = 6  # SynthSinger clips generated when no --data is given
    synth_seconds: float = 2.0  # their length in seconds
    synth_seed: int = 0  # their seed
    synth_clips_per_identity: int = 1  # songs per SynthSinger identity (= synth_clips: one singer, many songs)
    synth_backing: bool = False  # mix a band under the voice

    def __post_init__(self):
        super().__post_init__()
        if self.net not in ("tiny", "full"):
            raise ValueError(f"SingerTrainConfig: net must be 'tiny' or 'full', got {self.net!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"SingerTrainConfig: trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.trainable == "paper" and not self.base_weights:
            raise ValueError("SingerTrainConfig: trainable='paper' freezes the UNets, so it needs base_weights (the "
                             "SINGER or Hallo net.pth, or a SingerNet folder); use trainable='all' to train from "
                             "scratch")
        if self.frames < 1 or self.motion_frames < 0 or self.window_stride < 1 or self.audio_radius < 0:
            raise ValueError("SingerTrainConfig: frames and window_stride must be >= 1, motion_frames and "
                             "audio_radius >= 0")
        if not (0 <= self.drop_reference <= 1 and 0 <= self.drop_audio <= 1):
            raise ValueError("SingerTrainConfig: drop_reference and drop_audio are probabilities in [0, 1]")
        if min(self.lambda_face, self.lambda_lip) < 0 or self.train_timesteps < 2:
            raise ValueError("SingerTrainConfig: lambda_face / lambda_lip must be >= 0 and train_timesteps >= 2")
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"SingerTrainConfig: split must be 'train', 'test' or 'all', got {self.split!r}")
        if self.image_size % 8 or self.image_size < 16:
            raise ValueError(f"SingerTrainConfig: image_size must be a multiple of 8 and >= 16, got {self.image_size}")
        self.synth_config()

    def audio_spec(self) -> AudioSpec:
        """The AudioSpec of the audio_* fields (rows are kept: the audio projection takes (R, D) per frame)."""
        return AudioSpec(self.audio_encoder, self.audio_layers, "flatten", self.audio_source, self.audio_models_dir)

    def synth_config(self) -> SynthSingerConfig:
        """The SynthSinger dataset generated when no --data is given (frames at image_size, at least 32 px)."""
        return SynthSingerConfig(clips=self.synth_clips, seconds=self.synth_seconds, size=max(32, self.image_size),
                                 seed=self.synth_seed, backing=self.synth_backing,
                                 clips_per_identity=self.synth_clips_per_identity)

    def diffusion_config(self, latent_side: int, rows: int, width: int):
        """The DiffusionConfig of the run: the `net` size with sample_size = latent_side and the audio
        projection input (2 audio_radius + 1, rows, width) of the features."""
        from ..diffusion.config import DiffusionConfig

        base = DiffusionConfig.tiny() if self.net == "tiny" else DiffusionConfig.full()
        return dataclasses.replace(base, sample_size=latent_side, audio_seq_len=2 * self.audio_radius + 1,
                                   audio_blocks=rows, audio_channels=width, use_msm=self.use_msm,
                                   use_sfm=self.use_sfm)


# tiny: the whole tiny stack from scratch (its UNets too: no pretrained tiny UNets exist) on ONE SynthSinger singer
# and 24 one-second songs, 64 px -> 16 x 16 latents with the tiny VAE (trained first on the same frames).
# Per-subject on purpose: trained from scratch on many identities the tiny net never learns, in CPU minutes, to
# copy a new face through the reference attention (at 600-1,500 steps it renders a mean face, 15 dB, below
# repeating the portrait, 20 dB); on one singer it learns the face and moves it with new songs, and beats
# repeating the portrait. Generalising to any portrait is what the pretrained full-size stack is for.
_TINY = SingerTrainConfig(steps=800, batch_size=2, lr=2e-3, warmup_steps=20, checkpoint_every=200, log_every=10,
                          frames=4, motion_frames=2, window_stride=2, lambda_face=1.0, lambda_lip=2.0, vae_steps=800,
                          synth_clips=24, synth_clips_per_identity=24, synth_seconds=1.0, split="all")
# paper (§6.1.1): SINGER/Hallo full-size stack, UNets / VAE / face encoder frozen, audioproj + MSM + SFM trained,
# Adam 1e-5, 16 frames at 512 px, 17,000 steps on 4 GPUs (accelerate launch, batch 1 each)
_PAPER = SingerTrainConfig(steps=17_000, batch_size=1, lr=1e-5, grad_clip=1.0, checkpoint_every=1000, log_every=50,
                           net="full", trainable="paper", base_weights="pretrained_models/hallo/net.pth",
                           vae="stabilityai/sd-vae-ft-mse", face_model="pretrained_models/face_analysis/models/"
                           "glintr100.onnx", image_size=512, frames=16, motion_frames=2, window_stride=4,
                           cache_latents=False, audio_encoder="facebook/wav2vec2-base-960h", audio_layers="all",
                           audio_radius=2, audio_source="vocals.wav", synth_clips=400, synth_seconds=10.0,
                           synth_backing=True)


def apply_trainable(net: torch.nn.Module, mode: str) -> list[str]:
    """Set requires_grad of `net`'s parameters by `mode` ("paper": PAPER_PREFIXES only; "all": everything);
    returns the sorted names of the trainable parameters."""
    if mode not in TRAINABLE:
        raise ValueError(f"apply_trainable: mode must be one of {TRAINABLE}, got {mode!r}")
    names = []
    for name, param in net.named_parameters():
        train = mode == "all" or name.startswith(PAPER_PREFIXES)
        param.requires_grad_(train)
        if train:
            names.append(name)
    return sorted(names)


def tie_unet_init(net: torch.nn.Module) -> int:
    """Copy the reference UNet's weights into the matching tensors of the denoising UNet (every 2-D tensor of
    the reference UNet has a twin there); returns how many were copied. From-scratch runs start like Hallo,
    whose two UNets both start from SD1.5, so features of the same image match across the reference attention
    from step 0."""
    reference = {name[len("reference_unet."):]: value for name, value in net.state_dict().items()
                 if name.startswith("reference_unet.")}
    target = net.denoising_unet.state_dict()
    shared = {name: value for name, value in reference.items()
              if name in target and target[name].shape == value.shape}
    net.denoising_unet.load_state_dict(shared, strict=False)
    return len(shared)


def load_base_weights(net: torch.nn.Module, path: str) -> None:
    """Load SINGER's net.pth (all tensors), Hallo's net.pth (no audioembed / SFM: those keep their init) or a
    SingerNet folder into `net`; shapes must match, unknown names are an error."""
    from ..diffusion.loading import read_state_dict
    from ..io.checkpoint import load_tensors

    source = Path(path).expanduser()
    if source.is_dir():
        if not (source / "model.safetensors").is_file():
            raise FileNotFoundError(f"singer task: base_weights folder '{source}' has no model.safetensors; give "
                                    "a SingerNet folder (save_pretrained / the singer task's out/final) or net.pth")
        state = load_tensors(source / "model.safetensors")
    elif source.is_file():
        state = read_state_dict(source)
    else:
        raise FileNotFoundError(f"singer task: base_weights '{source}' does not exist; give SINGER's or Hallo's "
                                "net.pth (or a SingerNet folder)")
    own = net.state_dict()
    unknown = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if tuple(state[k].shape) != tuple(own[k].shape))
    missing = sorted(set(own) - set(state))
    not_allowed = [k for k in missing if not k.startswith(SINGER_ONLY_PREFIXES)]
    if unknown or wrong or not_allowed:
        raise ValueError(f"singer task: base_weights '{source}' does not fit the network (config net / use_msm / "
                         f"use_sfm / audio fields): unknown {unknown[:4]}, shape mismatches {wrong[:4]}, missing "
                         f"{not_allowed[:4]}")
    if missing:
        logger.warning("singer task: '%s' has no %d SINGER tensors (a Hallo checkpoint?); MSM / SFM start from "
                       "their initialisation", source, len(missing))
    net.load_state_dict(state, strict=False)


class SingerDenoiser(torch.nn.Module):
    """The trained module: forward = one SingerNet evaluation with guidance-training drops, so accelerate /
    DDP see a forward call. Its state_dict holds only the trainable parts (the frozen UNets of the paper rule
    come back from base_weights on resume, so checkpoints stay small).

    Args:
        net: the SingerNet.
        trainable_prefixes: state-dict prefixes of the trained parts (("",) = everything).
    """

    def __init__(self, net, trainable_prefixes: tuple[str, ...] = ("",)):
        super().__init__()
        self.net = net
        self.trainable_prefixes = tuple(f"net.{prefix}" for prefix in trainable_prefixes)

    def _own(self, key: str) -> bool:
        return key.startswith(self.trainable_prefixes)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for key in [key for key in state if not self._own(key[len(prefix):])]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        expected = {key for key in super().state_dict() if self._own(key)}
        if strict and set(state_dict) != expected:
            raise RuntimeError(f"SingerDenoiser.load_state_dict: expected the trainable tensors; missing "
                               f"{sorted(expected - set(state_dict))[:4]}, unexpected "
                               f"{sorted(set(state_dict) - expected)[:4]}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, *, reference_latents: torch.Tensor,
                face_embedding: torch.Tensor, audio_windows: torch.Tensor, locator_image: torch.Tensor | None,
                masks, keep_reference: torch.Tensor, keep_audio: torch.Tensor) -> torch.Tensor:
        """v prediction (B, C, F, h, w) of noisy latents (B, C, F, h, w) at timesteps t (B,).

        reference_latents: (B, 1 + M, C, h, w); face_embedding: (B, E); audio_windows: (B, F, seq, R, D);
        locator_image: (B, 3, 8h, 8w) face-locator image or None; masks: RegionMasks or None;
        keep_reference, keep_audio: (B,) bool, False = that sample's reference + face embedding / audio dropped.
        """
        net = self.net
        frames = latents.shape[2]
        keep_ref = keep_reference.to(latents.dtype)
        image_tokens = net.imageproj(face_embedding * keep_ref[:, None])
        audio = net.audio_tokens(audio_windows, latents)  # the MSM reads the noisy latents z_t (training)
        audio = audio * keep_audio.to(audio.dtype).view(-1, 1, 1, 1)
        features = None
        if locator_image is not None:
            features = net.face_locator(locator_image)[:, :, None].expand(-1, -1, frames, -1, -1)
        net.write_reference(reference_latents, image_tokens)
        try:
            net.reference_control.read(frames, keep_reference)
            return net.denoising_unet(latents, t, image_tokens, audio, mask_cond_fea=features, masks=masks)
        finally:
            net.reference_control.clear()


@dataclasses.dataclass
class SingerClips:
    """Every training clip in memory (latents cached) or by reference (latents per step).

    latents: per clip (T, C, h, w) scaled VAE latents, or None when encoded per step.
    features: per clip (T, R, D) audio features.
    locator: per clip (3, 8h, 8w) face-locator image; full, face, lip: per clip (1, h, w) region masks.
    embedding: per clip (E,) face embedding.
    clip_ids: their ids; frame counts: lengths.
    """

    latents: list[torch.Tensor] | None
    features: list[torch.Tensor]
    locator: list[torch.Tensor]
    full: list[torch.Tensor]
    face: list[torch.Tensor]
    lip: list[torch.Tensor]
    embedding: list[torch.Tensor]
    clip_ids: list[str]
    lengths: list[int]


class SingerBatches:
    """Batches of the singer task, a function of (seed, step, rank, world) only.

    Args:
        clips: the training clips; config: the run config; root: the dataset (pixels when latents are not
        cached); image_size: frame size.
    """

    def __init__(self, clips: SingerClips, config: SingerTrainConfig, root: Path, latent_channels: int):
        self.clips, self.config, self.root, self.latent_channels = clips, config, root, latent_channels
        span = config.frames
        self.windows = [(number, start) for number, length in enumerate(clips.lengths)
                        for start in range(0, length - span + 1, config.window_stride)]
        if not self.windows:
            raise ValueError(f"singer task: frames={config.frames} is longer than every clip (longest "
                             f"{max(clips.lengths)} frames); lower frames or use longer clips")
        self.sampler = EpochSampler(len(self.windows), config.batch_size, config.seed)

    def _frames(self, number: int, index: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) cached latents or (n, 3, S, S) pixels in [-1, 1] of frames `index` of clip `number`."""
        if self.clips.latents is not None:
            return self.clips.latents[number][index]
        from ..data.format import read_clip

        clip = read_clip(self.root / self.clips.clip_ids[number])
        low, high = int(index.min()), int(index.max()) + 1
        frames = clip.frames(low, high)[index - low].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        size = self.config.image_size
        if frames.shape[-1] != size:
            frames = torch.nn.functional.interpolate(frames, size=(size, size), mode="bilinear", antialias=True,
                                                     align_corners=False)
        return frames

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict:
        """x0 (B, C, F, h, w) latents (cache_latents) or (B, 3, F, S, S) pixels in [-1, 1], reference (B, 1 + M, ...), audio
        (B, F, seq, R, D), face_embedding (B, E), locator (B, 3, 8h, 8w), full / face / lip (B, 1, h, w), t (B,),
        keep_reference / keep_audio (B,) bool, noise (B, C, F, h, w)."""
        config, clips = self.config, self.clips
        radius = config.audio_radius
        x0, reference, audio, keys = [], [], [], []
        for index in self.sampler.indices(step, rank=rank, world=world):
            number, start = self.windows[index]
            keys.append(number)
            span = torch.arange(start, start + config.frames)
            motion = torch.arange(start - config.motion_frames, start).clamp_min(0)
            x0.append(self._frames(number, span).transpose(0, 1))  # (C, F, h, w)
            reference.append(self._frames(number, torch.cat([torch.zeros(1, dtype=torch.long), motion])))
            features = clips.features[number]
            rows = (span[:, None] + torch.arange(-radius, radius + 1)).clamp(0, features.shape[0] - 1)
            audio.append(features[rows])  # (F, seq, R, D), Hallo's clamped window
        batch_size = len(keys)
        generator = step_generator(config.seed, step, rank)
        out = {"x0": torch.stack(x0), "reference": torch.stack(reference), "audio": torch.stack(audio),
               "face_embedding": torch.stack([clips.embedding[n] for n in keys]),
               "locator": torch.stack([clips.locator[n] for n in keys]),
               "full": torch.stack([clips.full[n] for n in keys]), "face": torch.stack([clips.face[n] for n in keys]),
               "lip": torch.stack([clips.lip[n] for n in keys]),
               "t": torch.randint(0, config.train_timesteps, (batch_size,), generator=generator),
               "keep_reference": torch.rand(batch_size, generator=generator) >= config.drop_reference,
               "keep_audio": torch.rand(batch_size, generator=generator) >= config.drop_audio}
        out["noise"] = torch.randn(batch_size, self.latent_channels, config.frames, *clips.full[0].shape[-2:],
                                   generator=generator)
        return out


class SingerTask:
    """SINGER's training stage: audio projection + MSM + SFM (paper rule) or the whole tiny stack."""

    name = "singer"
    config_class = SingerTrainConfig
    presets = {
        "tiny": _TINY,  # whole tiny stack from scratch (UNets too: no tiny base weights exist); CPU minutes
        "tiny-no-msm": dataclasses.replace(_TINY, use_msm=False),  # ablation: MSM off (audio tokens unchanged)
        "tiny-no-sfm": dataclasses.replace(_TINY, use_sfm=False),  # ablation: SFM off (identity)
        "tiny-no-both": dataclasses.replace(_TINY, use_msm=False, use_sfm=False),  # ablation: plain Hallo path
        "paper": _PAPER,  # §6.1.1 on the full stack from Hallo's / SINGER's net.pth (GPUs)
    }
    default_preset = "tiny"

    # ---- build ---------------------------------------------------------------------------------------
    def build(self, config: SingerTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from ..audio.features import SingerAudioFeatures
        from ..data.format import read_index
        from ..diffusion.net import SingerNet
        from ..diffusion.vae import load_vae, vae_downscale
        from ..ops.noise_schedule import NoiseSchedule

        # 1. data and audio features (cached per clip)
        root = Path(data_dir) if data_dir is not None else synth_dataset(config.synth_config(), cache_dir)
        index = read_index(root)
        clip_ids = [c for c in index.split(config.split) if index.clips[c].frames >= config.frames]
        if not clip_ids:
            raise ValueError(f"singer task: no clip of split {config.split!r} of '{root}' has {config.frames} "
                             "frames; lower frames or give longer clips")
        paths = cached_features(root, clip_ids, config.audio_spec(), cache_dir)
        features = [SingerAudioFeatures.load(paths[c]).features.float() for c in clip_ids]
        rows, width = features[0].shape[1:]

        # 2. the network (initialised under the loop's seed, before anything else draws), trainable parts
        vae_path = self._vae_path(config, cache_dir, device)
        vae = load_vae(vae_path, device=device)
        factor = vae_downscale(vae)
        if config.image_size % (8 * factor):
            raise ValueError(f"singer task: image_size {config.image_size} must be a multiple of {8 * factor} "
                             f"(8 x the VAE's downscale {factor}) for the UNet's three halvings")
        latent_side = config.image_size // factor
        net_config = config.diffusion_config(latent_side, rows, width)
        net = SingerNet(net_config)
        if config.base_weights:
            load_base_weights(net, config.base_weights)
        elif config.tie_init:
            tie_unet_init(net)
        names = apply_trainable(net, config.trainable)
        prefixes = ("",) if config.trainable == "all" else PAPER_PREFIXES
        logger.info("singer task: %s net (%d x %d latents), %d of %d parameter tensors trained (%s)", config.net,
                    latent_side, latent_side, len(names), len(list(net.parameters())), config.trainable)

        # 3. per clip: latents (or not), masks, face embedding
        clips = self._clips(config, root, clip_ids, features, vae, latent_side, device)
        self.config, self.vae_path, self.root = config, vae_path, root
        self.alphas_cumprod = NoiseSchedule(train_steps=config.train_timesteps).alphas_cumprod.float()
        frozen = {} if config.cache_latents else {"vae": vae}
        return TrainParts(trainable={"net": SingerDenoiser(net, prefixes)}, frozen=frozen,
                          data=SingerBatches(clips, config, root, vae.config.latent_channels))

    def _vae_path(self, config: SingerTrainConfig, cache_dir: Path, device) -> str:
        """config.vae, or the tiny VAE trained on this run's SynthSinger frames (once, cached)."""
        if config.vae:
            return config.vae
        if config.net != "tiny":
            raise ValueError("singer task: give vae (e.g. 'stabilityai/sd-vae-ft-mse') for the full-size network")
        from .vae import VAETask, cached_tiny_vae

        vae_config = dataclasses.replace(VAETask.presets["tiny"], **tiny_vae_data(config), seed=config.seed,
                                         steps=config.vae_steps, checkpoint_every=min(config.vae_steps, 100))
        return cached_tiny_vae(vae_config, cache_dir, device, "singer task")

    def _clips(self, config: SingerTrainConfig, root: Path, clip_ids: list[str], features: list[torch.Tensor], vae,
               latent_side: int, device) -> SingerClips:
        from ..data.format import read_clip
        from ..diffusion.face_embedding import zero_embedding
        from ..diffusion.masks import face_masks
        from ..diffusion.vae import encode_images

        embedder = None
        if config.face_model:
            from ..diffusion.face_embedding import FaceEmbedder

            embedder = FaceEmbedder(config.face_model)
        size = config.image_size
        latents, locator, full, face, lip, embedding, lengths = [], [], [], [], [], [], []
        for clip_id, feats in zip(clip_ids, features, strict=True):
            clip = read_clip(root / clip_id)
            frames = clip.meta.frames
            if feats.shape[0] < frames:
                raise RuntimeError(f"singer task: clip {clip_id!r} has {frames} frames but {feats.shape[0]} frames "
                                   "of audio features")
            lengths.append(frames)
            first = clip.frames(0, 1)[0]  # (H, W, 3) uint8, the reference image
            marks = clip.landmarks["landmarks"][0].double().numpy() * (size / clip.meta.size) \
                if clip.landmarks is not None else None
            masks = face_masks(size, latent_side, (0.0, 0.0, float(size), float(size)), landmarks=marks)
            locator.append(masks.locator_image[0])
            full.append(masks.full[0])
            face.append(masks.face[0])
            lip.append(masks.lip[0])
            if embedder is not None:
                from ..diffusion.face_embedding import keypoints_from_landmarks68

                keypoints = None if clip.landmarks is None else \
                    keypoints_from_landmarks68(clip.landmarks["landmarks"][0].double().numpy())
                box = None if keypoints is not None else (0, 0, clip.meta.size, clip.meta.size)
                embedding.append(embedder.embed(first.numpy(), keypoints=keypoints, box=box).float())
            else:
                embedding.append(zero_embedding(face_embedding_dim(config)))
            if config.cache_latents:
                pixels = clip.frames(0, frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                if pixels.shape[-1] != size:
                    pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear",
                                                             antialias=True, align_corners=False)
                latents.append(encode_images(vae, pixels.to(device)).float().cpu())
        return SingerClips(latents if config.cache_latents else None, [f[:n] for f, n in zip(features, lengths, strict=True)],
                           locator, full, face, lip, embedding, list(clip_ids), lengths)

    # ---- loss ----------------------------------------------------------------------------------------
    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        from ..diffusion.audio_modules import RegionMasks
        from ..diffusion.vae import encode_images
        from ..ops.noise_schedule import q_sample, v_target

        config = self.config
        x0, reference = batch["x0"], batch["reference"]
        if not config.cache_latents:  # pixels -> latents with the frozen VAE
            vae = models["vae"]
            b, _, f = x0.shape[:3]
            x0 = encode_images(vae, x0.transpose(1, 2).flatten(0, 1)).float()
            x0 = x0.view(b, f, *x0.shape[1:]).transpose(1, 2)
            flat = encode_images(vae, reference.flatten(0, 1)).float()
            reference = flat.view(b, reference.shape[1], *flat.shape[1:])
        t, noise = batch["t"], batch["noise"]
        alphas = self.alphas_cumprod.to(x0.device)
        noisy = q_sample(x0, noise, t, alphas)
        target = v_target(x0, noise, t, alphas)
        frames = x0.shape[2]
        masks = None
        if config.region_masks:
            masks = RegionMasks.from_latent_masks(*(batch[k].expand(-1, frames, -1, -1)
                                                    for k in ("full", "face", "lip")))
        prediction = models["net"](noisy, t, reference_latents=reference, face_embedding=batch["face_embedding"],
                                   audio_windows=batch["audio"], locator_image=batch["locator"], masks=masks,
                                   keep_reference=batch["keep_reference"], keep_audio=batch["keep_audio"])
        error = (prediction.float() - target).square()  # (B, C, F, h, w)
        weight = 1.0 + config.lambda_face * batch["face"][:, :, None] + config.lambda_lip * batch["lip"][:, :, None]
        loss = (error * weight).mean()
        lip = batch["lip"][:, :, None].expand_as(error)
        scalars = {"mse": float(error.detach().mean()),
                   "mse_lip": float((error.detach() * lip).sum() / lip.sum().clamp_min(1e-6)),
                   "t_mean": float(t.float().mean())}
        return loss, scalars

    # ---- export --------------------------------------------------------------------------------------
    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        from ..diffusion.model_folder import SingerTrainingInfo, TrainingAudio
        from ..ops.noise_schedule import NoiseSchedule

        net = models["net"].net
        net.save_pretrained(folder)
        config = self.config
        vae = str(self.vae_path)
        if config.vae is None:  # the auto-trained tiny VAE lives in the cache: keep a copy with the model
            shutil.copytree(vae, Path(folder) / "vae")
            vae = "vae"
        audio = TrainingAudio(**dataclasses.asdict(config.audio_spec()), radius=config.audio_radius)
        SingerTrainingInfo(task=self.name, vae=vae, image_size=config.image_size, frames=config.frames,
                           motion_frames=config.motion_frames, face_model=config.face_model, audio=audio,
                           schedule=NoiseSchedule(train_steps=config.train_timesteps)).write(folder)
        return Path(folder)


def tiny_vae_data(config: SingerTrainConfig) -> dict:
    """The `vae` task fields that train the tiny VAE on the same SynthSinger frames as the singer run (same
    dataset in the cache: flat backgrounds, the run's clips / identities / seed / size)."""
    return dict(image_size=config.image_size, synth_clips=config.synth_clips, synth_seconds=config.synth_seconds,
                synth_seed=config.synth_seed, synth_clips_per_identity=config.synth_clips_per_identity,
                synth_textured_background=False, split=config.split)


def face_embedding_dim(config: SingerTrainConfig) -> int:
    """face_embedding_dim of the run's network size."""
    from ..diffusion.config import DiffusionConfig

    return (DiffusionConfig.tiny() if config.net == "tiny" else DiffusionConfig.full()).face_embedding_dim
