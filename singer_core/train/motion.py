"""The ``motion`` training task: FD2Talk stage 1 (Sec. 3.4.1), expression + pose DiTs trained with
L_first = lambda_exp L_exp + lambda_pose L_pose + lambda_sync L_sync (eq. 12).

L_exp, L_pose (eqs. 8-9): MSE of the x0-prediction on normalised coefficients at uniformly random timesteps;
L_sync (eq. 11): -log P_sync of a frozen lip expert (eq. 10) on the mouth-vertex motion of the predicted,
de-normalised expression, over every W-frame sub-window of the training window.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from ..audio.encoders import MEL_ENCODER_NAME
from .loop import EpochSampler, TrainParts, step_generator
from .motion_data import MotionClips, MotionDataConfig, load_motion_clips

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MotionTrainConfig(MotionDataConfig):
    """Everything of a motion run: loop settings, the MotionModel size, the losses and the data."""

    # model (MotionModelConfig fields)
    frames: int = 25  # F: training window (FD2Talk: sequence length 25)
    width: int = 256  # DiT hidden width
    layers: int = 6  # DiT layers (FD2Talk: 6)
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP width / width
    time_dim: int = 128  # timestep embedding width
    dropout: float = 0.0  # DiT dropout
    mask_k: int | None = 3  # alignment mask radius k (eq. 4); None = no mask (ablation)
    joint: bool = False  # one joint exp+pose DiT (ablation) instead of FD2Talk's two DiTs
    diffusion_steps: int = 1000  # T (FD2Talk: 1000 in training)
    beta_schedule: str = "linear"  # "linear", "scaled_linear" or "cosine"
    # losses (eq. 12)
    lambda_exp: float = 1.0  # weight of L_exp
    lambda_pose: float = 1.0  # weight of L_pose
    lambda_sync: float = 0.05  # weight of L_sync (0 = no sync loss, ablation)
    lip_expert: str | None = None  # folder of a trained LipExpert (lip-expert task's out/final); None = no sync
    sync_max_t: int | None = None  # sync loss only on samples with t < this (None = every timestep)
    # data (see MotionDataConfig for the others)
    window_stride: int = 5  # frames between training window starts

    def __post_init__(self):
        super().__post_init__()
        if self.frames < 2 or self.window_stride < 1:
            raise ValueError(f"MotionTrainConfig: frames must be >= 2 and window_stride >= 1, got {self.frames}, "
                             f"{self.window_stride}")
        if min(self.lambda_exp, self.lambda_pose, self.lambda_sync) < 0:
            raise ValueError("MotionTrainConfig: the loss weights lambda_* must be >= 0")
        self.model_config(MEL_ENCODER_NAME, 16, 80)  # validates the model fields

    def model_config(self, encoder: str, rows: int, width: int, fps: float = 25.0):
        from ..motion.generator import MotionModelConfig

        return MotionModelConfig(audio_encoder=encoder, audio_rows=rows, audio_width=width, fps=fps,
                                 audio_reduce=self.audio_reduce, joint=self.joint, frames=self.frames,
                                 max_frames=max(256, self.frames), width=self.width, layers=self.layers,
                                 heads=self.heads, mlp_ratio=self.mlp_ratio, mask_k=self.mask_k,
                                 time_dim=self.time_dim, dropout=self.dropout, diffusion_steps=self.diffusion_steps,
                                 beta_schedule=self.beta_schedule)


_TINY = MotionTrainConfig(steps=40, batch_size=2, lr=1e-3, warmup_steps=5, checkpoint_every=20, log_every=5,
                          width=32, layers=2, heads=2, mlp_ratio=2.0, time_dim=32, synth_clips=3,
                          synth_seconds=2.0, synth_size=32, window_stride=5)
# `make demo`: a small model that learns to open the mouth on sung vowels in a couple of CPU minutes
_DEMO = MotionTrainConfig(steps=600, batch_size=8, lr=1e-3, warmup_steps=30, checkpoint_every=200, log_every=25,
                          width=64, layers=3, heads=4, mlp_ratio=2.0, time_dim=64, synth_clips=12,
                          synth_seconds=4.0, synth_size=32, window_stride=3)
_PAPER = MotionTrainConfig(steps=200_000, batch_size=1, lr=1e-4, checkpoint_every=5000, log_every=50,
                           frames=25, layers=6, audio_encoder="facebook/wav2vec2-base-960h", audio_layers="last",
                           audio_reduce="last_row", synth_clips=400, synth_seconds=10.0)


class MotionBatches:
    """Batches of the motion task: windows of normalised coefficients + audio, timesteps and noise, all a
    function of (seed, step, rank, world).

    Args:
        clips: the training clips.
        stats: normalisation statistics (MotionClips.statistics()).
        config: the run config.
        timesteps: T of the noise schedule.
    """

    def __init__(self, clips: MotionClips, stats: Mapping[str, torch.Tensor], config: MotionTrainConfig,
                 timesteps: int):
        self.clips, self.config, self.timesteps = clips, config, timesteps
        self.windows = clips.windows(config.frames, config.window_stride)
        if not self.windows:
            longest = max(exp.shape[0] for exp in clips.exp)
            raise ValueError(f"motion task: frames={config.frames} is longer than every clip (longest {longest} "
                             "frames); lower frames or use longer clips")
        self.sampler = EpochSampler(len(self.windows), config.batch_size, config.seed)
        self.stats = dict(stats)

    def batch(self, step: int, *, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """exp (B, F, 64) and pose (B, F, 6) normalised, audio (B, F, A), t (B,), noise_exp, noise_pose."""
        frames, stats = self.config.frames, self.stats
        exp, pose, audio = [], [], []
        for index in self.sampler.indices(step, rank=rank, world=world):
            number, start = self.windows[index]
            rows = slice(start, start + frames)
            exp.append((self.clips.exp[number][rows] - stats["exp_mean"]) / stats["exp_std"])
            pose.append((self.clips.pose[number][rows] - stats["pose_mean"]) / stats["pose_std"])
            audio.append(self.clips.audio[number][rows])
        generator = step_generator(self.config.seed, step, rank)
        batch = len(exp)
        return {"exp": torch.stack(exp), "pose": torch.stack(pose), "audio": torch.stack(audio),
                "t": torch.randint(0, self.timesteps, (batch,), generator=generator),
                "noise_exp": torch.randn(batch, frames, 64, generator=generator),
                "noise_pose": torch.randn(batch, frames, 6, generator=generator)}


class MotionTask:
    """FD2Talk motion stage: train the expression and pose DiTs (MotionModel) on SINGER clips."""

    name = "motion"
    config_class = MotionTrainConfig
    presets = {
        "tiny": _TINY,
        "demo": _DEMO,
        "paper": _PAPER,
        "paper-joint": dataclasses.replace(_PAPER, joint=True),  # ablation: one DiT for exp + pose
        "paper-no-mask": dataclasses.replace(_PAPER, mask_k=None),  # ablation: no alignment mask
        "paper-no-sync": dataclasses.replace(_PAPER, lambda_sync=0.0),  # ablation: no lip expert
    }
    default_preset = "tiny"

    def build(self, config: MotionTrainConfig, data_dir: Path | None, cache_dir: Path, device) -> TrainParts:
        from ..motion.generator import MotionModel

        # 1. data: SynthSinger in the cache unless a dataset is given; audio features cached per clip
        root = config.dataset(data_dir, cache_dir)
        clips = load_motion_clips(root, config.split, config.audio_spec(), cache_dir)
        stats = clips.statistics()
        logger.info("motion task: %d clips, audio %s (%d x %d -> %d per frame)", len(clips.clip_ids),
                    clips.encoder, clips.rows, clips.width, clips.audio[0].shape[-1])

        # 2. the model, with the data's normalisation
        from ..data.format import read_index

        rates = {float(read_index(root).clips[clip_id].fps) for clip_id in clips.clip_ids}
        if len(rates) != 1:
            raise ValueError(f"motion task: the training clips mix frame rates {sorted(rates)}; a motion model "
                             "learns one rate: preprocess the videos at one fps (e.g. --fps 25)")
        model = MotionModel(config.model_config(clips.encoder, clips.rows, clips.width, fps=rates.pop()))
        model.set_normalization(stats["exp_mean"], stats["exp_std"], stats["pose_mean"], stats["pose_std"])
        model.set_data_range(torch.cat(clips.exp), torch.cat(clips.pose))  # the data-range prior of generate()
        stats = {key: getattr(model, key).detach().clone() for key in stats}  # the clamped stds the model keeps
        self.timesteps = model.config.diffusion_steps
        self.alphas_cumprod = model.schedule.alphas_cumprod  # (T,) float64

        # 3. the frozen lip expert for L_sync, or none
        frozen: dict[str, torch.nn.Module] = {}
        self.lambda_sync = config.lambda_sync
        if config.lambda_sync > 0 and config.lip_expert:
            frozen = self._lip_expert(config, model)
            logger.info("motion task: sync loss ON (lambda_sync=%g, expert '%s')", config.lambda_sync,
                        config.lip_expert)
        else:
            self.lambda_sync = 0.0
            logger.info("motion task: sync loss OFF (%s)", "lambda_sync = 0" if config.lambda_sync == 0
                        else "no lip_expert given")
        self.config = config
        return TrainParts(trainable={"motion": MotionDenoiser(model)}, frozen=frozen,
                          data=MotionBatches(clips, stats, config, self.timesteps))

    def _lip_expert(self, config: MotionTrainConfig, model) -> dict[str, torch.nn.Module]:
        from ..face.procedural import procedural_model
        from ..motion.lip_expert import LipExpert, mouth_vertex_indices

        expert = LipExpert.from_pretrained(config.lip_expert)
        ours = model.config
        if expert.config.audio_encoder != ours.audio_encoder or expert.config.audio_dim != ours.audio_dim or \
                expert.config.audio_reduce != ours.audio_reduce:
            raise ValueError(f"motion task: lip expert '{config.lip_expert}' was trained on audio "
                             f"'{expert.config.audio_encoder}' ({expert.config.audio_reduce}, {expert.config.audio_dim}"
                             f" per frame), this run uses '{ours.audio_encoder}' ({ours.audio_reduce}, "
                             f"{ours.audio_dim}); train the expert with the same audio settings")
        if expert.config.window > config.frames:
            raise ValueError(f"motion task: the lip expert's window ({expert.config.window} frames) is longer "
                             f"than the training window frames={config.frames}")
        face = procedural_model(seed=0)
        indices = mouth_vertex_indices(face, count=expert.config.mouth_vertices)
        basis = face.exp_basis[indices].float()  # (M, 3, 64): mouth motion = basis @ exp (eq. 1, id cancels)
        return {"lip_expert": expert, "mouth_basis": _Constant(basis)}

    def loss(self, models: Mapping[str, torch.nn.Module], batch: Mapping[str, torch.Tensor]):
        from ..motion.lip_expert import sync_loss
        from ..ops.noise_schedule import q_sample

        denoiser = models["motion"]
        model = getattr(denoiser, "module", denoiser).model  # unwrapped from accelerate's DDP, if any

        # 1. forward diffusion (eq. 2) of both coefficient sequences, x0-prediction (eqs. 8-9)
        exp_t = q_sample(batch["exp"], batch["noise_exp"], batch["t"], self.alphas_cumprod)
        pose_t = q_sample(batch["pose"], batch["noise_pose"], batch["t"], self.alphas_cumprod)
        exp0, pose0 = denoiser(exp_t, pose_t, batch["t"], batch["audio"])
        loss_exp = F.mse_loss(exp0, batch["exp"])
        loss_pose = F.mse_loss(pose0, batch["pose"])
        loss = self.config.lambda_exp * loss_exp + self.config.lambda_pose * loss_pose
        scalars = {"loss_exp": float(loss_exp.detach()), "loss_pose": float(loss_pose.detach())}

        # 2. lip-sync loss of the frozen expert (eqs. 10-11) on every W-frame sub-window
        if self.lambda_sync > 0:
            expert = models["lip_expert"]
            window = expert.config.window
            exp_raw = exp0 * model.exp_std + model.exp_mean  # (B, F, 64) de-normalised prediction
            mouth = torch.einsum("mck,bfk->bfmc", models["mouth_basis"].value, exp_raw)  # (B, F, M, 3)
            keep = torch.ones_like(batch["t"], dtype=torch.bool)
            if self.config.sync_max_t is not None:
                keep = batch["t"] < self.config.sync_max_t
            if bool(keep.any()):
                mouth_windows = mouth[keep].unfold(1, window, 1).permute(0, 1, 4, 2, 3)  # (b, n, W, M, 3)
                audio_windows = batch["audio"][keep].unfold(1, window, 1).permute(0, 1, 3, 2)  # (b, n, W, A)
                loss_sync = sync_loss(expert(audio_windows.flatten(0, 1), mouth_windows.flatten(0, 1)))
            else:
                loss_sync = exp0.sum() * 0.0
            loss = loss + self.lambda_sync * loss_sync
            scalars["loss_sync"] = float(loss_sync.detach())
        return loss, scalars

    def export(self, models: Mapping[str, torch.nn.Module], folder: Path) -> Path:
        return models["motion"].model.save_pretrained(folder)


class MotionDenoiser(torch.nn.Module):
    """The trained module: forward = MotionModel.predict_x0, so accelerate / DDP see a forward call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, exp_t: torch.Tensor, pose_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor):
        """exp_t (B, F, 64), pose_t (B, F, 6), t (B,), audio (B, F, A) -> (exp0_hat, pose0_hat), normalised."""
        return self.model.predict_x0(exp_t, pose_t, t, audio)


class _Constant(torch.nn.Module):
    """A frozen tensor the loop moves to the device with the other frozen parts."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)
