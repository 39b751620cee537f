"""FD2Talk motion generation stage (Sec. 3.2): audio features -> 3DMM expression + head pose by two DiTs
(Exp Transformer, Pose Transformer) or one joint DiT (the Table 3 ablation), sampled with DDIM (eq. 5)."""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import nn

from ..audio.encoders import MEL_ENCODER_NAME
from ..audio.features import SingerAudioFeatures, check_features
from ..face.motion_types import ANGLE_DIM, EXP_DIM, TRANS_DIM, SingerMotion
from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig
from ..ops.noise_schedule import NoiseSchedule
from ..progress import Progress
from .dit import MotionDiT, MotionDiTConfig
from .sampling import sample

logger = logging.getLogger(__name__)

AUDIO_REDUCE = ("flatten", "mean_rows", "last_row")
POSE_DIM = ANGLE_DIM + TRANS_DIM  # 6: angle (3) then trans (3)


def reduce_audio_rows(features: torch.Tensor, reduce: str) -> torch.Tensor:
    """The one place where (F, R, D) audio rows become one vector per frame.

    Args:
        features: (F, R, D) or (B, F, R, D).
        reduce: "flatten" -> R * D (rows in order), "mean_rows" -> D (mean of the rows), "last_row" -> D.

    Returns:
        (F, A) or (B, F, A).
    """
    if features.ndim not in (3, 4):
        raise ValueError(f"reduce_audio_rows: features must be (F, R, D) or (B, F, R, D), "
                         f"got {tuple(features.shape)}")
    if reduce == "flatten":
        return features.flatten(-2)
    if reduce == "mean_rows":
        return features.mean(dim=-2)
    if reduce == "last_row":
        return features[..., -1, :]
    raise ValueError(f"reduce_audio_rows: reduce must be one of {AUDIO_REDUCE}, got {reduce!r}")


@dataclasses.dataclass(frozen=True)
class MotionModelConfig(JsonConfig):
    """The motion generator: audio spec, DiT size (shared by the exp and pose DiTs) and noise schedule."""

    audio_encoder: str = MEL_ENCODER_NAME  # SingerAudioFeatures.encoder the model was trained on
    audio_rows: int = 16  # R rows per frame the encoder gives (mel-80: 16 mel steps; wav2vec2-base: 12 layers)
    audio_width: int = 80  # D feature width (mel-80: 80; wav2vec2-base: 768)
    audio_reduce: str = "flatten"  # rows -> one vector per frame: "flatten" (R*D), "mean_rows" or "last_row" (D)
    joint: bool = False  # True: one DiT predicts exp+pose (70) together (ablation); False: FD2Talk's two DiTs
    frames: int = 25  # training window F (frames per model call)
    fps: float = 25.0  # video frame rate of the training data; features must come at this rate
    max_frames: int = 256  # longest window one DiT call accepts
    width: int = 256  # DiT hidden width (D_tau)
    layers: int = 6  # DiT layers L
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / width
    mask_k: int | None = 3  # alignment mask radius k (eq. 4); None = no mask (ablation)
    time_dim: int = 128  # timestep embedding width
    dropout: float = 0.0  # dropout in the DiTs
    diffusion_steps: int = 1000  # T of the noise schedule
    beta_start: float = 1e-4  # first beta
    beta_end: float = 0.02  # last beta
    beta_schedule: str = "linear"  # "linear", "scaled_linear" or "cosine"

    def __post_init__(self):
        if self.audio_reduce not in AUDIO_REDUCE:
            raise ValueError(f"MotionModelConfig: audio_reduce must be one of {AUDIO_REDUCE}, "
                             f"got {self.audio_reduce!r}")
        for name in ("audio_rows", "audio_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MotionModelConfig: {name} must be a positive integer, got {value!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not 0 < self.fps < 1000:
            raise ValueError(f"MotionModelConfig: fps must be a positive frame rate, got {self.fps!r}")
        self.dit_config(EXP_DIM)  # validates the DiT fields
        self.schedule_config()  # validates the schedule fields

    @property
    def audio_dim(self) -> int:
        """A: per-frame audio vector width after the row reduction."""
        return self.audio_rows * self.audio_width if self.audio_reduce == "flatten" else self.audio_width

    def dit_config(self, motion_dim: int) -> MotionDiTConfig:
        """The MotionDiTConfig of one DiT predicting `motion_dim` coefficients."""
        return MotionDiTConfig(motion_dim=motion_dim, audio_dim=self.audio_dim, frames=self.frames,
                               max_frames=self.max_frames, width=self.width, layers=self.layers,
                               heads=self.heads, mlp_ratio=self.mlp_ratio, mask_k=self.mask_k,
                               time_dim=self.time_dim, dropout=self.dropout)

    def schedule_config(self) -> NoiseSchedule:
        """The x0-prediction noise schedule of FD2Talk (NoiseSchedule.fd2talk) with this config's betas."""
        return NoiseSchedule.fd2talk(train_steps=self.diffusion_steps, beta_start=self.beta_start,
                                     beta_end=self.beta_end, beta_schedule=self.beta_schedule)


class MotionModel(nn.Module, PretrainedMixin):
    """Expression DiT (64) + pose DiT (6 = angle 3 + trans 3), or one joint DiT (70), on normalised
    coefficients ((x - mean) / std with statistics from the training data, see set_normalization).

    Submodules: `exp_dit` and `pose_dit` (joint=False) or `joint_dit` (joint=True).

    Args:
        config: a MotionModelConfig.
    """

    config_class = MotionModelConfig
    optional_keys = ("exp_low", "exp_high", "pose_low", "pose_high")  # the data-range prior (older files lack it)
    infinite_ok_keys = optional_keys  # +-inf: no prior

    def __init__(self, config: MotionModelConfig):
        super().__init__()
        self.config = config
        if config.joint:
            self.joint_dit = MotionDiT(config.dit_config(EXP_DIM + POSE_DIM))
        else:
            self.exp_dit = MotionDiT(config.dit_config(EXP_DIM))
            self.pose_dit = MotionDiT(config.dit_config(POSE_DIM))
        self.register_buffer("exp_mean", torch.zeros(EXP_DIM))
        self.register_buffer("exp_std", torch.ones(EXP_DIM))
        self.register_buffer("pose_mean", torch.zeros(POSE_DIM))
        self.register_buffer("pose_std", torch.ones(POSE_DIM))
        # data-range prior: per-coefficient range of the normalised training motion (+-inf = no prior)
        self.register_buffer("exp_low", torch.full((EXP_DIM,), -math.inf))
        self.register_buffer("exp_high", torch.full((EXP_DIM,), math.inf))
        self.register_buffer("pose_low", torch.full((POSE_DIM,), -math.inf))
        self.register_buffer("pose_high", torch.full((POSE_DIM,), math.inf))
        self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
        self.register_buffer("audio_std", torch.ones(config.audio_dim))

    @property
    def schedule(self) -> NoiseSchedule:
        """The noise schedule this model is trained / sampled with."""
        return self.config.schedule_config()

    # ---- normalisation ---------------------------------------------------------------------------
    def set_normalization(self, exp_mean: torch.Tensor, exp_std: torch.Tensor, pose_mean: torch.Tensor,
                          pose_std: torch.Tensor, min_std: float = 1e-4) -> None:
        """Store the data statistics: exp_* (64,), pose_* (6,) (angle then trans). Stds below min_std
        (constant coefficients) are raised to min_std."""
        for name, value, size in (("exp_mean", exp_mean, EXP_DIM), ("exp_std", exp_std, EXP_DIM),
                                  ("pose_mean", pose_mean, POSE_DIM), ("pose_std", pose_std, POSE_DIM)):
            value = torch.as_tensor(value)
            if tuple(value.shape) != (size,) or not bool(torch.isfinite(value).all()):
                raise ValueError(f"MotionModel.set_normalization: {name} must be finite and shaped ({size},), "
                                 f"got {tuple(value.shape)}")
            if name.endswith("std"):
                value = value.clamp(min=min_std)
            getattr(self, name).copy_(value)

    def set_data_range(self, exp: torch.Tensor, pose: torch.Tensor) -> None:
        """Store the per-coefficient range of the training motion, exp (N, 64) and pose (N, 6) raw frames, in
        normalised units (call after set_normalization): generate() keeps samples inside it."""
        if exp.ndim != 2 or exp.shape[1] != EXP_DIM or pose.ndim != 2 or pose.shape[1] != POSE_DIM:
            raise ValueError(f"MotionModel.set_data_range: exp must be (N, {EXP_DIM}) and pose (N, {POSE_DIM}), got "
                             f"{tuple(exp.shape)}, {tuple(pose.shape)}")
        exp, pose = self.normalize(exp.to(self.exp_mean), pose.to(self.pose_mean))
        self.exp_low.copy_(exp.amin(0))
        self.exp_high.copy_(exp.amax(0))
        self.pose_low.copy_(pose.amin(0))
        self.pose_high.copy_(pose.amax(0))

    def data_range(self, margin: float = 0.05) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(low, high) (70,) normalised box of the training motion widened by `margin` x its width on each side
        (and by at least `margin` standard deviations), or None for a model saved without it."""
        low = torch.cat([self.exp_low, self.pose_low])
        high = torch.cat([self.exp_high, self.pose_high])
        if not bool(torch.isfinite(low).all() and torch.isfinite(high).all()):
            return None
        pad = ((high - low) * margin).clamp(min=margin)
        return low - pad, high + pad

    def set_audio_normalization(self, audio_mean: torch.Tensor, audio_std: torch.Tensor,
                                min_std: float = 1e-4) -> None:
        """Store per-dimension statistics (A,) of the reduced audio vectors of the training data;
        audio_vector returns (audio - mean) / std (the identity until this is called)."""
        size = self.config.audio_dim
        for name, value in (("audio_mean", audio_mean), ("audio_std", audio_std)):
            value = torch.as_tensor(value)
            if tuple(value.shape) != (size,) or not bool(torch.isfinite(value).all()):
                raise ValueError(f"MotionModel.set_audio_normalization: {name} must be finite and shaped "
                                 f"({size},), got {tuple(value.shape)}")
            getattr(self, name).copy_(value.clamp(min=min_std) if name == "audio_std" else value)

    def normalize(self, exp: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """exp (..., 64), pose (..., 6) -> normalised (same shapes)."""
        return (exp - self.exp_mean) / self.exp_std, (pose - self.pose_mean) / self.pose_std

    def denormalize(self, exp: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of normalize."""
        return exp * self.exp_std + self.exp_mean, pose * self.pose_std + self.pose_mean

    # ---- audio -----------------------------------------------------------------------------------
    def check_features(self, features: SingerAudioFeatures) -> None:
        """Refuse features of another encoder, frame rate or shape than the model was trained on
        (singer_core.audio.features.check_features)."""
        config = self.config
        check_features(features, "MotionModel", encoder=config.audio_encoder, fps=config.fps, fps_tolerance=1e-3,
                       shape=(config.audio_rows, config.audio_width))

    def audio_vector(self, features: SingerAudioFeatures) -> torch.Tensor:
        """(F, A) per-frame audio vectors of `features`: checked, reduced by config.audio_reduce, standardised
        with audio_mean / audio_std, on the model's device and dtype. The DiTs' `audio` input."""
        self.check_features(features)
        return self.standardize_audio(reduce_audio_rows(features.features, self.config.audio_reduce))

    def standardize_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(..., A) reduced audio vectors -> (audio - audio_mean) / audio_std on the model's device and dtype
        (for a trainer that caches reduced vectors; audio_vector already applies it)."""
        if audio.shape[-1] != self.config.audio_dim:
            raise ValueError(f"MotionModel.standardize_audio: audio must end in {self.config.audio_dim} "
                             f"values, got {tuple(audio.shape)}")
        audio = audio.to(self.audio_mean.device, self.audio_mean.dtype)
        return (audio - self.audio_mean) / self.audio_std

    # ---- denoising -------------------------------------------------------------------------------
    def predict_x0(self, exp_t: torch.Tensor, pose_t: torch.Tensor, t: torch.Tensor,
                   audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x0-prediction of both DiTs (eqs. 8-9) on normalised coefficients.

        Args:
            exp_t: (B, F, 64) noisy normalised expression.
            pose_t: (B, F, 6) noisy normalised pose.
            t: (B,) long timesteps.
            audio: (B, F, A).

        Returns:
            (exp0_hat (B, F, 64), pose0_hat (B, F, 6)), normalised.
        """
        if self.config.joint:
            joint = self.joint_dit(torch.cat([exp_t, pose_t], dim=-1), t, audio)
            return joint[..., :EXP_DIM], joint[..., EXP_DIM:]
        return self.exp_dit(exp_t, t, audio), self.pose_dit(pose_t, t, audio)

    @torch.no_grad()
    def generate(self, features: SingerAudioFeatures, *, steps: int = 50, eta: float = 0.0,
                 seed: int | torch.Generator = 0, pose_scale: float = 1.0, expression_scale: float = 1.0,
                 overlap: int = 5, data_prior: bool = True, prior_margin: float = 0.05,
                 progress: Progress | None = None) -> SingerMotion:
        """Sample a motion for a whole song.

        Args:
            features: audio features from config.audio_encoder (any number of frames).
            steps: DDIM steps per DiT.
            eta: DDIM eta (0 deterministic).
            seed: int or CPU torch.Generator; the exp DiT samples first, then the pose DiT, from one stream.
            pose_scale: multiplies the pose's deviation from the data mean (0 = still head).
            expression_scale: multiplies the expression's deviation from the data mean.
            overlap: frames shared by neighbouring windows (see sampling.sample).
            data_prior: keep every coefficient inside the training range widened by prior_margin (the x0
                estimate is clipped to it at every DDIM step; see sampling.sample's x0_range); models saved
                before the range was stored sample without it.
            prior_margin: widening of that range, as a share of its width on each side.
            progress: progress(done, total) over all DiT steps; may raise to stop.

        Returns:
            SingerMotion at features.fps, CPU float32.
        """
        audio = self.audio_vector(features)[None]  # (1, F, A)
        generator = torch.Generator().manual_seed(seed) if not isinstance(seed, torch.Generator) else seed
        schedule = self.schedule
        models = [self.joint_dit] if self.config.joint else [self.exp_dit, self.pose_dit]
        box = self.data_range(prior_margin) if data_prior else None
        ranges = [None] * len(models)
        if box is not None:
            ranges = [box] if self.config.joint else [(box[0][:EXP_DIM], box[1][:EXP_DIM]),
                                                      (box[0][EXP_DIM:], box[1][EXP_DIM:])]
        was_training = self.training
        self.eval()
        try:
            outputs = []
            for number, dit in enumerate(models):
                def report(done: int, total: int, offset: int = number * steps) -> None:
                    if progress is not None:
                        progress(offset + done, len(models) * total)
                outputs.append(sample(dit, audio, steps=steps, eta=eta, seed=generator, overlap=overlap,
                                      schedule=schedule, x0_range=ranges[number], progress=report)[0])
        finally:
            self.train(was_training)
        motion = torch.cat(outputs, dim=-1)
        exp, pose = self.denormalize(motion[:, :EXP_DIM], motion[:, EXP_DIM:])
        exp = self.exp_mean + expression_scale * (exp - self.exp_mean)
        pose = self.pose_mean + pose_scale * (pose - self.pose_mean)
        pose = pose.float().cpu()
        return SingerMotion(exp=exp.float().cpu(), angle=pose[:, :ANGLE_DIM].contiguous(),
                            trans=pose[:, ANGLE_DIM:].contiguous(), fps=features.fps, source="motion DiT")
