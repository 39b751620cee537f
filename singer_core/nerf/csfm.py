"""DAMC's Cross-Synchronized Fusion Module (Fu et al., "Dual Audio-Centric Modality Coupling", §2.2, Fig. 2):
modality projections, two Content-Dynamic Cross Attentions, Feature Self-Refinement and the merge to f_a, with
the Table 3 ablation modes; then ER-NeRF's attention-weighted temporal smoothing of the per-frame audio codes
over an 8-frame window, and the batched per-song codes the NeRF consumes.

Shapes used throughout: B batch, W frames in the smoothing window, N frames, Rc/Dc content rows/width
(HuBERT: 2 x 1024 per 25 fps frame), Dd dynamic width (the Dynamic-Sync Encoder's f_d,
:mod:`singer_core.nerf.dynamic_sync`).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig, check_positive_ints
from ..progress import Progress

logger = logging.getLogger(__name__)


CSFM_MODES = ("content", "dynamic", "concat", "cross", "csfm")  # DAMC Table 3 rows, in order
CONTENT_REDUCTIONS = ("flatten", "mean")


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
        check_positive_ints(
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
    check_positive_ints("temporal_windows", window=window)
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
    check_positive_ints("damc_audio_codes", batch_size=batch_size)
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
