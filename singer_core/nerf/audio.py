"""DAMC audio side (Fu et al., "Dual Audio-Centric Modality Coupling", §2.2): the Dynamic-Sync Encoder
E_d with its lip-sync expert D_lip and reconstruction decoders, the Cross-Synchronized Fusion Module
(CSFM: projections, two Content-Dynamic Cross Attentions, Feature Self-Refinement, merge to f_a) with the
Table 3 ablation modes, and ER-NeRF's attention-weighted temporal smoothing of per-frame audio codes over an
8-frame window.

Shapes used throughout: B batch, W frames in the smoothing window, Rc/Dc content rows/width (HuBERT: 2 x 1024
per 25 fps frame), S/M mel steps/bins of a Wav2Lip window (16 x 80), P/C mouth points/coordinates.

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
from ..io.config import JsonConfig
from ..progress import Progress

logger = logging.getLogger(__name__)

CSFM_MODES = ("content", "dynamic", "concat", "cross", "csfm")  # DAMC Table 3 rows, in order
CONTENT_REDUCTIONS = ("flatten", "mean")
MOUTH_LANDMARKS = slice(48, 68)  # 68-point layout: outer + inner lip contour
_LEFT_EYE_OUTER, _RIGHT_EYE_OUTER, _MOUTH_LEFT, _MOUTH_RIGHT = 36, 45, 48, 54


def _positive(who: str, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")


# ----------------------------------------------------------------------------------------------------------
# Dynamic-Sync Encoder E_d, lip-sync expert D_lip, reconstruction decoders
# ----------------------------------------------------------------------------------------------------------


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
        _positive(
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
        _positive("DynamicSyncConfig", **{f"channels[{i}]": c for i, c in enumerate(self.channels)})


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
        _positive("DynamicSyncEncoder.encode_windows", batch_size=batch_size)
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


# ----------------------------------------------------------------------------------------------------------
# CSFM and temporal smoothing
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CsfmConfig(JsonConfig):
    """Configuration of :class:`DamcAudioFusion` (CSFM + temporal smoothing)."""

    mode: str = "csfm"  # "content" | "dynamic" | "concat" | "cross" | "csfm" (DAMC Table 3 rows)
    content_dim: int = 1024  # content feature width Dc (HuBERT large: 1024)
    content_rows: int = 2  # content rows Rc per frame (ER-NeRF HuBERT layout: 2 steps of 20 ms)
    content_reduce: str = "flatten"  # "flatten" (Rc * Dc inputs) or "mean" (average the rows: Dc inputs)
    dynamic_dim: int = 256  # dynamic feature width (DynamicSyncConfig.embed_dim)
    width: int = 128  # shared width after the modality projections
    heads: int = 4  # attention heads in CDCA and FSR (width must divide by it)
    ffn_mult: int = 2  # FSR feed-forward hidden width = ffn_mult * width
    out_dim: int = 64  # width of f_a (DAMC swept 32, 64, 128, 256; 64 was best)
    window: int = 8  # frames smoothed per output (ER-NeRF AudioAttNet: 8); 1 disables smoothing

    def __post_init__(self):
        if self.mode not in CSFM_MODES:
            raise ValueError(f"CsfmConfig: mode must be one of {CSFM_MODES}, got {self.mode!r}")
        if self.content_reduce not in CONTENT_REDUCTIONS:
            raise ValueError(
                f"CsfmConfig: content_reduce must be one of {CONTENT_REDUCTIONS}, got {self.content_reduce!r}"
            )
        _positive(
            "CsfmConfig",
            content_dim=self.content_dim,
            content_rows=self.content_rows,
            dynamic_dim=self.dynamic_dim,
            width=self.width,
            heads=self.heads,
            ffn_mult=self.ffn_mult,
            out_dim=self.out_dim,
            window=self.window,
        )
        if self.width % self.heads:
            raise ValueError(f"CsfmConfig: width {self.width} must be divisible by heads {self.heads}")

    @property
    def content_inputs(self) -> int:
        """Width of the content vector fed to Proj_content."""
        return self.content_dim * (self.content_rows if self.content_reduce == "flatten" else 1)


class ContentDynamicAttention(nn.Module):
    """Multi-head attention whose query, key and value come from given sources (CDCA when query = key source).

    CDCA(a, b) (DAMC §2.2) = ``forward(a, a, b)``: a gives query and key, b the value:
    softmax((a Wq)(a Wk)^T / sqrt(d_head)) (b Wv) Wo, per head.
    The "cross" ablation uses ``forward(a, b, b)``.

    Args:
        width: token width (in and out).
        heads: attention heads.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)

    def forward(
        self, query_source: torch.Tensor, key_source: torch.Tensor, value_source: torch.Tensor
    ) -> torch.Tensor:
        """(B, N, width) x3 -> (B, N, width)."""

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, width) -> (B, heads, N, d_head)
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.query(query_source)), split(self.key(key_source)), split(self.value(value_source))
        )
        return self.out(attended.transpose(1, 2).flatten(2))


class FeatureSelfRefinement(nn.Module):
    """FSR (DAMC §2.2): a pre-norm self-attention block refining one modality.

    h = x + SelfAttention(LN1(x)); FSR(x) = h + FFN(LN2(h)), FFN = Linear -> GELU -> Linear.

    Args:
        width: token width.
        heads: attention heads.
        ffn_mult: FFN hidden width multiple.
    """

    def __init__(self, width: int, heads: int, ffn_mult: int):
        super().__init__()
        self.norm_attention = nn.LayerNorm(width)
        self.attention = ContentDynamicAttention(width, heads)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_mult * width), nn.GELU(), nn.Linear(ffn_mult * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, width) -> (B, N, width)."""
        normed = self.norm_attention(x)
        hidden = x + self.attention(normed, normed, normed)
        return hidden + self.ffn(self.norm_ffn(hidden))


class AudioSmoothing(nn.Module):
    """Attention-weighted temporal smoothing of per-frame audio codes (ER-NeRF's AudioAttNet design).

    A 1D conv stack over the window (channels width -> 16 -> 8 -> 4 -> 2 -> 1, kernel 3, padding 1, each
    followed by LeakyReLU(0.02)) scores each frame; a Linear(window, window) + softmax over the window turns
    the scores into weights; the output is the weighted sum of the window's codes.

    Args:
        width: code width D.
        window: frames per window W.
    """

    def __init__(self, width: int, window: int):
        super().__init__()
        self.window = window
        sizes = (width, 16, 8, 4, 2, 1)
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Conv1d(size_in, size_out, 3, padding=1), nn.LeakyReLU(0.02)]
        self.score = nn.Sequential(*layers)
        self.mix = nn.Linear(window, window)

    def weights(self, codes: torch.Tensor) -> torch.Tensor:
        """Smoothing weights (B, W) (rows sum to 1) for codes (B, W, D)."""
        if codes.ndim != 3 or codes.shape[1] != self.window:
            raise ValueError(f"AudioSmoothing: codes must be (B, {self.window}, D), got {tuple(codes.shape)}")
        scores = self.score(codes.transpose(1, 2)).squeeze(1)  # (B, W)
        return torch.softmax(self.mix(scores), dim=-1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, W, D) -> (B, D): sum_t weights[:, t] * codes[:, t]."""
        return (self.weights(codes).unsqueeze(-1) * codes).sum(1)


class DamcAudioFusion(nn.Module, PretrainedMixin):
    """CSFM (DAMC §2.2, Fig. 2) over a window of frames, then temporal smoothing to one f_a per frame.

    Per frame of the window (tokens = the W frames):
      f_c1 = Proj_content(f_c), f_d1 = Proj_dynamic(f_d)                (Proj = Linear -> LayerNorm)
      f_c2 = CDCA(f_c1, f_d1)  (query & key from content, value from dynamic)
      f_d2 = CDCA(f_d1, f_c1)  (query & key from dynamic, value from content)
      f_c3 = FSR_c(f_c1 + f_c2), f_d3 = FSR_d(f_d1 + f_d2)
      f_a  = Merge([f_c3, f_d3])                                          (Merge = Linear(2 width, out_dim))
    Ablations (Table 3): "content": f_a = Head(f_c1); "dynamic": f_a = Head(f_d1); "concat": f_a =
    Merge([f_c1, f_d1]); "cross": ordinary bidirectional cross-attention with residuals and no FSR,
    f_a = Merge([f_c1 + Attn(q=f_c1, kv=f_d1), f_d1 + Attn(q=f_d1, kv=f_c1)]).
    Then f_a of the W frames is smoothed by :class:`AudioSmoothing` (skipped when window == 1).

    Args:
        config: :class:`CsfmConfig`.
    """

    config_class = CsfmConfig

    def __init__(self, config: CsfmConfig):
        super().__init__()
        self.config = config
        mode, width = config.mode, config.width
        if mode != "dynamic":
            self.proj_content = nn.Sequential(nn.Linear(config.content_inputs, width), nn.LayerNorm(width))
        if mode != "content":
            self.proj_dynamic = nn.Sequential(nn.Linear(config.dynamic_dim, width), nn.LayerNorm(width))
        if mode in ("content", "dynamic"):
            self.head = nn.Linear(width, config.out_dim)
        else:
            self.merge = nn.Linear(2 * width, config.out_dim)
        if mode in ("cross", "csfm"):
            self.attend_content = ContentDynamicAttention(width, config.heads)
            self.attend_dynamic = ContentDynamicAttention(width, config.heads)
        if mode == "csfm":
            self.refine_content = FeatureSelfRefinement(width, config.heads, config.ffn_mult)
            self.refine_dynamic = FeatureSelfRefinement(width, config.heads, config.ffn_mult)
        self.smoothing = AudioSmoothing(config.out_dim, config.window) if config.window > 1 else None

    @property
    def uses_content(self) -> bool:
        return self.config.mode != "dynamic"

    @property
    def uses_dynamic(self) -> bool:
        return self.config.mode != "content"

    def content_vector(self, content: torch.Tensor) -> torch.Tensor:
        """(..., Rc, Dc) content rows -> (..., content_inputs) by ``content_reduce`` (flatten or mean)."""
        c = self.config
        if content.ndim < 2 or tuple(content.shape[-2:]) != (c.content_rows, c.content_dim):
            raise ValueError(
                f"DamcAudioFusion: content must end in ({c.content_rows}, {c.content_dim}) (rows, "
                f"width of the content encoder), got {tuple(content.shape)}"
            )
        return content.flatten(-2) if c.content_reduce == "flatten" else content.mean(-2)

    def fuse(self, content: torch.Tensor | None, dynamic: torch.Tensor | None) -> torch.Tensor:
        """Per-frame f_a before smoothing.

        Args:
            content: (B, N, Rc, Dc) content rows (None in "dynamic" mode).
            dynamic: (B, N, Dd) dynamic features (None in "content" mode).
        Returns:
            (B, N, out_dim).
        """
        mode = self.config.mode
        # 1. modality projections
        content_1 = dynamic_1 = None
        if self.uses_content:
            if content is None or content.ndim != 4:
                raise ValueError(
                    f"DamcAudioFusion ({mode}): content must be (B, N, Rc, Dc), got "
                    f"{None if content is None else tuple(content.shape)}"
                )
            content_1 = self.proj_content(self.content_vector(content))
        if self.uses_dynamic:
            if dynamic is None or dynamic.ndim != 3 or dynamic.shape[-1] != self.config.dynamic_dim:
                raise ValueError(
                    f"DamcAudioFusion ({mode}): dynamic must be (B, N, {self.config.dynamic_dim}), "
                    f"got {None if dynamic is None else tuple(dynamic.shape)}"
                )
            dynamic_1 = self.proj_dynamic(dynamic)
        if content_1 is not None and dynamic_1 is not None and content_1.shape[:2] != dynamic_1.shape[:2]:
            raise ValueError(
                f"DamcAudioFusion: content has (B, N) = {tuple(content_1.shape[:2])} but dynamic "
                f"has {tuple(dynamic_1.shape[:2])}; give both for the same frames"
            )
        if mode == "content":
            return self.head(content_1)
        if mode == "dynamic":
            return self.head(dynamic_1)
        if mode == "concat":
            return self.merge(torch.cat([content_1, dynamic_1], dim=-1))
        if mode == "cross":
            content_3 = content_1 + self.attend_content(content_1, dynamic_1, dynamic_1)
            dynamic_3 = dynamic_1 + self.attend_dynamic(dynamic_1, content_1, content_1)
            return self.merge(torch.cat([content_3, dynamic_3], dim=-1))
        # 2. CDCA: query and key from one modality, value from the other
        content_2 = self.attend_content(content_1, content_1, dynamic_1)
        dynamic_2 = self.attend_dynamic(dynamic_1, dynamic_1, content_1)
        # 3. FSR on each branch, 4. merge
        content_3 = self.refine_content(content_1 + content_2)
        dynamic_3 = self.refine_dynamic(dynamic_1 + dynamic_2)
        return self.merge(torch.cat([content_3, dynamic_3], dim=-1))

    def forward(self, content: torch.Tensor | None, dynamic: torch.Tensor | None) -> torch.Tensor:
        """One smoothed f_a per window: content (B, W, Rc, Dc), dynamic (B, W, Dd) -> (B, out_dim).

        W must equal ``config.window`` (build windows with :func:`temporal_windows`).
        """
        fused = self.fuse(content, dynamic)
        if fused.shape[1] != self.config.window:
            raise ValueError(
                f"DamcAudioFusion: got windows of {fused.shape[1]} frames, config.window is "
                f"{self.config.window}; build them with temporal_windows(x, {self.config.window})"
            )
        return fused[:, 0] if self.smoothing is None else self.smoothing(fused)


def temporal_windows(
    features: torch.Tensor, window: int = 8, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """ER-NeRF's audio windows: for frame i the frames i - window//2 ... i + window - window//2 - 1, zeros
    outside the clip.

    Args:
        features: (F, ...) per-frame features.
        window: frames per window.
        start, stop: the frames i to build windows for (default all: 0 .. F), so long songs go in batches.
    Returns:
        (stop - start, window, ...) (a new tensor).
    """
    _positive("temporal_windows", window=window)
    if features.ndim < 1 or features.shape[0] < 1:
        raise ValueError(
            f"temporal_windows: features must be (F, ...) with F >= 1, got {tuple(features.shape)}"
        )
    count = features.shape[0]
    stop = count if stop is None else stop
    if not 0 <= start <= stop <= count:
        raise ValueError(
            f"temporal_windows: need 0 <= start <= stop <= {count}, got start={start}, stop={stop}"
        )
    index = (
        torch.arange(start, stop, device=features.device)[:, None]
        + torch.arange(window, device=features.device)
        - window // 2
    )  # (stop - start, window)
    inside = (index >= 0) & (index < count)
    windows = features[index.clamp(0, count - 1)]
    return windows * inside.reshape(*inside.shape, *([1] * (features.ndim - 1))).to(windows.dtype)


@torch.no_grad()
def damc_audio_codes(
    fusion: DamcAudioFusion,
    *,
    content: torch.Tensor | None = None,
    dynamic: torch.Tensor | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> torch.Tensor:
    """f_a for every frame of a song (what the NeRF consumes), in batches.

    Args:
        fusion: the fusion model (its mode says which inputs it needs).
        content: (F, Rc, Dc) content features (e.g. HuBERT SingerAudioFeatures.features), or None.
        dynamic: (F, Dd) dynamic features (:meth:`DynamicSyncEncoder.encode_windows`), or None.
        batch_size: frames per batch.
        progress: called as progress(done, total) after each batch; may raise to stop.
    Returns:
        (F, out_dim) on the fusion's device.
    """
    _positive("damc_audio_codes", batch_size=batch_size)
    frames = {name: x.shape[0] for name, x in (("content", content), ("dynamic", dynamic)) if x is not None}
    if len(set(frames.values())) > 1:
        raise ValueError(
            f"damc_audio_codes: inputs have different frame counts {frames}; encode both from the "
            "same audio at the same fps"
        )
    if fusion.uses_content and content is None or fusion.uses_dynamic and dynamic is None:
        raise ValueError(
            f"damc_audio_codes: mode {fusion.config.mode!r} needs "
            f"{'content ' if fusion.uses_content else ''}{'dynamic' if fusion.uses_dynamic else ''} "
            "features"
        )
    parameter = next(fusion.parameters())
    total = next(iter(frames.values()))
    window = fusion.config.window
    out = torch.empty(total, fusion.config.out_dim, dtype=parameter.dtype, device=parameter.device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        content_windows = dynamic_windows = None
        if fusion.uses_content:
            content_windows = temporal_windows(content, window, start, stop).to(
                parameter.device, parameter.dtype
            )
        if fusion.uses_dynamic:
            dynamic_windows = temporal_windows(dynamic, window, start, stop).to(
                parameter.device, parameter.dtype
            )
        out[start:stop] = fusion(content_windows, dynamic_windows)
        if progress is not None:
            progress(stop, total)
    return out
