"""DAMC's Dynamic-Sync Encoder (Fu et al., "Dual Audio-Centric Modality Coupling", §2.2): the encoder E_d
over Wav2Lip mel windows, its lip-sync expert discriminator D_lip, the mel and mouth reconstruction decoders,
their training losses, and the mouth-motion windows the expert sees.

Shapes used throughout: B batch, S/M mel steps/bins of a Wav2Lip window (16 x 80), Fm mouth frames per
window, P/C mouth points/coordinates.

The "visual" side of the sync expert is **mouth landmark motion**: landmarks 48..67 of the 68-point layout
(which every SINGER clip carries, real or SynthSinger) over the 5 video frames that a 16-step mel window spans
(Wav2Lip/SyncNet: window i starts at video frame i), normalised per frame by :func:`normalized_mouth` (origin
at the mouth-corner midpoint, eye line horizontal, unit outer-eye-corner distance). Any (W, P, C) mouth motion
works (e.g. 3D mouth vertices: set ``mouth_points``/``mouth_dims``).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig, check_positive_ints
from ..progress import Progress

logger = logging.getLogger(__name__)


MOUTH_LANDMARKS = slice(48, 68)  # 68-point layout: outer + inner lip contour
_LEFT_EYE_OUTER, _RIGHT_EYE_OUTER, _MOUTH_LEFT, _MOUTH_RIGHT = 36, 45, 48, 54

@dataclasses.dataclass(frozen=True)
class DynamicSyncConfig(JsonConfig):
    """Configuration of :class:`DynamicSyncEncoder` (E_d + D_lip + decoders)."""

    mel_steps: int = 16  # mel frames per window (Wav2Lip/SyncNet: 16 = 0.2 s at 80 Hz)
    mel_bins: int = 80  # mel bins (MelEncoder "mel-80")
    channels: tuple[int, ...] = (32, 64, 128, 256)  # conv stage widths; each stage halves bins and steps
    embed_dim: int = 256  # width of the per-frame dynamic feature f_d
    sync_dim: int = 128  # width of D_lip's shared audio/mouth embedding
    mouth_frames: int = 5  # video frames a mel window spans (0.2 s at 25 fps)
    mouth_points: int = 20  # mouth points per frame (landmarks 48..67)
    mouth_dims: int = 2  # coordinates per point (2 for landmarks, 3 for mesh vertices)
    hidden: int = 256  # hidden width of the mouth encoder and both decoders

    def __post_init__(self):
        check_positive_ints(
            "DynamicSyncConfig",
            mel_steps=self.mel_steps,
            mel_bins=self.mel_bins,
            embed_dim=self.embed_dim,
            sync_dim=self.sync_dim,
            mouth_frames=self.mouth_frames,
            mouth_points=self.mouth_points,
            mouth_dims=self.mouth_dims,
            hidden=self.hidden,
        )
        if not self.channels:
            raise ValueError("DynamicSyncConfig: channels must list at least one conv stage width")
        check_positive_ints("DynamicSyncConfig", **{f"channels[{i}]": c for i, c in enumerate(self.channels)})


@dataclasses.dataclass(frozen=True)
class DynamicSyncLossConfig(JsonConfig):
    """Weights of :func:`dynamic_sync_losses` (DAMC §2.2: lip-sync term + reconstruction term)."""

    sync_weight: float = 1.0  # D_lip binary cross-entropy on aligned vs. shifted pairs
    mel_weight: float = 1.0  # L1 reconstruction of the input mel window from f_d
    mouth_weight: float = 1.0  # L1 reconstruction of the aligned mouth motion from f_d (0 to disable)

    def __post_init__(self):
        for name in ("sync_weight", "mel_weight", "mouth_weight"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"DynamicSyncLossConfig: {name} must be a finite number >= 0, got {value!r}")


class DynamicSyncEncoder(nn.Module, PretrainedMixin):
    """Dynamic-Sync Encoder E_d (DAMC §2.2) with its training heads.

    ``forward(mel)`` is E_d: a Wav2Lip-style 2D conv encoder over one mel window -> f_d. The training heads:
    D_lip (``sync_probability``: audio head on f_d and a mouth-motion encoder, ReLU embeddings, cosine in
    [0, 1] as in Wav2Lip's SyncNet), the mel decoder (f_d -> the input window) and the mouth decoder
    (f_d -> the aligned mouth motion).

    Args:
        config: :class:`DynamicSyncConfig`.
    """

    config_class = DynamicSyncConfig

    def __init__(self, config: DynamicSyncConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels_in, bins, steps = 1, config.mel_bins, config.mel_steps
        for width in config.channels:
            layers += [nn.Conv2d(channels_in, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels_in, bins, steps = width, (bins + 1) // 2, (steps + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.to_embedding = nn.Linear(channels_in * bins * steps, config.embed_dim)
        mouth_size = config.mouth_frames * config.mouth_points * config.mouth_dims
        # D_lip: both sides map into one sync space
        self.sync_audio = nn.Sequential(
            nn.Linear(config.embed_dim, config.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(config.hidden, config.sync_dim),
        )
        self.sync_mouth = nn.Sequential(
            nn.Linear(mouth_size, config.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(config.hidden, config.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(config.hidden, config.sync_dim),
        )
        # reconstruction decoders
        self.mel_decoder = nn.Sequential(
            nn.Linear(config.embed_dim, config.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(config.hidden, config.mel_steps * config.mel_bins),
        )
        self.mouth_decoder = nn.Sequential(
            nn.Linear(config.embed_dim, config.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(config.hidden, mouth_size),
        )

    def _check_mel(self, who: str, mel: torch.Tensor) -> None:
        c = self.config
        if mel.ndim != 3 or tuple(mel.shape[1:]) != (c.mel_steps, c.mel_bins):
            raise ValueError(
                f"{who}: mel must be (B, {c.mel_steps}, {c.mel_bins}) windows (MelEncoder 'mel-80' "
                f"features), got {tuple(mel.shape)}"
            )

    def _check_mouth(self, who: str, mouth: torch.Tensor) -> None:
        c = self.config
        expected = (c.mouth_frames, c.mouth_points, c.mouth_dims)
        if mouth.ndim != 4 or tuple(mouth.shape[1:]) != expected:
            raise ValueError(
                f"{who}: mouth must be (B, {', '.join(map(str, expected))}) mouth motion "
                f"(see normalized_mouth / mouth_windows), got {tuple(mouth.shape)}"
            )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """E_d: mel windows (B, S, M) -> dynamic features f_d (B, embed_dim)."""
        self._check_mel("DynamicSyncEncoder", mel)
        # 1. (B, S, M) -> (B, 1, M, S): bins as height, time as width (Wav2Lip's layout)
        hidden = self.conv(mel.transpose(1, 2).unsqueeze(1))
        # 2. flatten and project to f_d
        return self.to_embedding(hidden.flatten(1))

    def embed_audio(self, dynamic: torch.Tensor) -> torch.Tensor:
        """D_lip audio side: f_d (B, embed_dim) -> unit-norm non-negative sync embedding (B, sync_dim)."""
        return F.normalize(F.relu(self.sync_audio(dynamic)), dim=-1, eps=1e-6)

    def embed_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        """D_lip visual side: mouth motion (B, Fm, P, C) -> unit-norm non-negative embedding (B, sync_dim)."""
        self._check_mouth("DynamicSyncEncoder.embed_mouth", mouth)
        return F.normalize(F.relu(self.sync_mouth(mouth.flatten(1))), dim=-1, eps=1e-6)

    def sync_probability(self, mel: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """P_sync in [0, 1] of each (mel window (B, S, M), mouth motion (B, Fm, P, C)) pair -> (B,)."""
        return (self.embed_audio(self(mel)) * self.embed_mouth(mouth)).sum(-1)

    def reconstruct_mel(self, dynamic: torch.Tensor) -> torch.Tensor:
        """Mel decoder: f_d (B, embed_dim) -> (B, S, M)."""
        return self.mel_decoder(dynamic).unflatten(-1, (self.config.mel_steps, self.config.mel_bins))

    def reconstruct_mouth(self, dynamic: torch.Tensor) -> torch.Tensor:
        """Mouth decoder: f_d (B, embed_dim) -> (B, Fm, P, C)."""
        c = self.config
        return self.mouth_decoder(dynamic).unflatten(-1, (c.mouth_frames, c.mouth_points, c.mouth_dims))

    @torch.no_grad()
    def encode_windows(
        self, mel: torch.Tensor, *, batch_size: int = 512, progress: Progress | None = None
    ) -> torch.Tensor:
        """f_d for a whole song: mel windows (F, S, M) (``SingerAudioFeatures.features`` of MelEncoder) ->
        (F, embed_dim), in batches of ``batch_size``, calling ``progress(done, total)`` after each."""
        self._check_mel("DynamicSyncEncoder.encode_windows", mel)
        check_positive_ints("DynamicSyncEncoder.encode_windows", batch_size=batch_size)
        parameter = next(self.parameters())
        out = torch.empty(mel.shape[0], self.config.embed_dim, dtype=parameter.dtype, device=parameter.device)
        for start in range(0, mel.shape[0], batch_size):
            chunk = mel[start : start + batch_size].to(device=parameter.device, dtype=parameter.dtype)
            out[start : start + chunk.shape[0]] = self(chunk)
            if progress is not None:
                progress(min(start + batch_size, mel.shape[0]), mel.shape[0])
        return out


def _bce(probability: torch.Tensor, target: float) -> torch.Tensor:
    probability = probability.clamp(1e-6, 1.0 - 1e-6)
    return F.binary_cross_entropy(probability, torch.full_like(probability, target))


def dynamic_sync_losses(
    model: DynamicSyncEncoder,
    mel: torch.Tensor,
    mouth: torch.Tensor,
    *,
    negative_mouth: torch.Tensor | None = None,
    weights: DynamicSyncLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Training losses of E_d (DAMC §2.2): lip-sync expert term + reconstruction term.

    sync = BCE(P_sync(mel, mouth), 1) / 2 + BCE(P_sync(mel, negative_mouth), 0) / 2 (Wav2Lip's expert loss on
    aligned and off-sync pairs; D_lip is trained jointly with E_d, so the gradient shapes f_d);
    mel = |decoder(f_d) - mel|_1; mouth = |mouth_decoder(f_d) - mouth|_1 (means);
    loss = sync_weight * sync + mel_weight * mel + mouth_weight * mouth.

    Args:
        model: the encoder with its heads.
        mel: (B, S, M) mel windows.
        mouth: (B, Fm, P, C) mouth motion aligned with each window.
        negative_mouth: (B, Fm, P, C) off-sync mouth motion for each window (the trainer takes it from
            the same clip shifted by >= 5 frames, SyncNet's rule); None rolls ``mouth`` by one in the batch
            (B >= 2, windows from different times).
        weights: term weights (default :class:`DynamicSyncLossConfig`()).
    Returns:
        {"loss", "sync", "mel", "mouth"} scalar tensors (``loss`` carries the gradient) plus detached
        "p_sync_positive" / "p_sync_negative" (mean P_sync of each pair kind) for logging.
    """
    weights = weights or DynamicSyncLossConfig()
    model._check_mel("dynamic_sync_losses", mel)
    model._check_mouth("dynamic_sync_losses", mouth)
    if mouth.shape[0] != mel.shape[0]:
        raise ValueError(
            f"dynamic_sync_losses: {mel.shape[0]} mel windows but {mouth.shape[0]} mouth windows"
        )
    if negative_mouth is None:
        if mel.shape[0] < 2:
            raise ValueError(
                "dynamic_sync_losses: with negative_mouth=None the batch needs >= 2 windows (the "
                "negatives are the batch rolled by one); give a larger batch or negative_mouth"
            )
        negative_mouth = mouth.roll(1, dims=0)
    else:
        model._check_mouth("dynamic_sync_losses (negative_mouth)", negative_mouth)
        if negative_mouth.shape[0] != mel.shape[0]:
            raise ValueError(
                f"dynamic_sync_losses: negative_mouth has {negative_mouth.shape[0]} windows, "
                f"mel has {mel.shape[0]}"
            )
    # 1. E_d
    dynamic = model(mel)
    # 2. lip-sync expert term on aligned and off-sync pairs
    audio = model.embed_audio(dynamic)
    positive = (audio * model.embed_mouth(mouth)).sum(-1)
    negative = (audio * model.embed_mouth(negative_mouth)).sum(-1)
    sync = 0.5 * (_bce(positive, 1.0) + _bce(negative, 0.0))
    # 3. reconstruction terms
    mel_loss = (model.reconstruct_mel(dynamic) - mel).abs().mean()
    mouth_loss = (model.reconstruct_mouth(dynamic) - mouth).abs().mean()
    loss = weights.sync_weight * sync + weights.mel_weight * mel_loss + weights.mouth_weight * mouth_loss
    return {
        "loss": loss,
        "sync": sync,
        "mel": mel_loss,
        "mouth": mouth_loss,
        "p_sync_positive": positive.detach().mean(),
        "p_sync_negative": negative.detach().mean(),
    }


def normalized_mouth(landmarks: torch.Tensor) -> torch.Tensor:
    """Pose-normalised mouth shape per frame from 68-point landmarks.

    Origin at the midpoint of the mouth corners (48, 54), rotated so the outer eye corners (36 -> 45) lie on
    the +x axis, scaled so their distance is 1. Invariant to image translation, in-plane rotation and scale.

    Args:
        landmarks: (T, 68, 2) pixels (x right, y down), as in a clip's landmarks.safetensors.
    Returns:
        (T, 20, 2) float32 mouth points 48..67.
    """
    if landmarks.ndim != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        raise ValueError(f"normalized_mouth: landmarks must be (T, 68, 2), got {tuple(landmarks.shape)}")
    points = landmarks.to(torch.float32)
    eye = points[:, _RIGHT_EYE_OUTER] - points[:, _LEFT_EYE_OUTER]  # (T, 2)
    scale = eye.norm(dim=-1, keepdim=True)  # (T, 1)
    if bool((scale < 1e-6).any()):
        raise ValueError(
            "normalized_mouth: the outer eye corners coincide in some frame; the landmarks are "
            "degenerate (re-run landmark detection)"
        )
    cos, sin = (eye / scale).unbind(-1)
    origin = 0.5 * (points[:, _MOUTH_LEFT] + points[:, _MOUTH_RIGHT])
    mouth = points[:, MOUTH_LANDMARKS] - origin[:, None]
    x, y = mouth.unbind(-1)
    # rotate by -angle(eye)
    rotated = torch.stack([cos[:, None] * x + sin[:, None] * y, -sin[:, None] * x + cos[:, None] * y], dim=-1)
    return rotated / scale[:, None]


def mouth_windows(mouth: torch.Tensor, starts: torch.Tensor, frames: int = 5) -> torch.Tensor:
    """Mouth motion windows: ``frames`` consecutive frames from each start (clamped to the clip's last frame).

    Args:
        mouth: (T, P, C) per-frame mouth shapes (e.g. :func:`normalized_mouth`).
        starts: (B,) int64 first video frame of each window (window i of a MelEncoder song starts at frame i).
        frames: frames per window.
    Returns:
        (B, frames, P, C).
    """
    if mouth.ndim != 3 or mouth.shape[0] < 1:
        raise ValueError(f"mouth_windows: mouth must be (T, P, C) with T >= 1, got {tuple(mouth.shape)}")
    index = (starts.reshape(-1, 1).to(torch.int64) + torch.arange(frames)).clamp_(0, mouth.shape[0] - 1)
    return mouth[index.to(mouth.device)]
