"""Lip expert on 3D mouth-vertex motion (FD2Talk Sec. 3.4.1, eqs. 10-11; a SyncNet / Wav2Lip-expert style
two-tower model trained contrastively on in-sync vs shifted audio)."""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.encoders import MEL_ENCODER_NAME
from ..face.morphable import MorphableModel
from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig

logger = logging.getLogger(__name__)

MOUTH_LANDMARKS = slice(48, 68)  # iBUG 68: outer lip 48-59, inner lip 60-67


def mouth_vertex_indices(model: MorphableModel, count: int = 64, radius: float = 0.35) -> torch.Tensor:
    """A fixed set of `count` vertices spread over the mouth region (FD2Talk selects mouth vertices [26]).

    The mouth landmark vertices (landmarks68[48:68], duplicates removed) come first; the rest are chosen by
    farthest-point sampling among the vertices of the mean shape lying within `radius` x mouth width
    (distance landmark 48 - landmark 54) of any mouth landmark. Deterministic for a given model.

    Args:
        model: the MorphableModel.
        count: M, number of vertices returned.
        radius: region size as a fraction of the mouth width.

    Returns:
        (M,) int64 vertex ids (CPU).
    """
    shape = model.mean_shape.detach().double().cpu()
    landmarks = model.landmarks68.cpu()[MOUTH_LANDMARKS]
    chosen = list(dict.fromkeys(int(i) for i in landmarks))
    if count < len(chosen):
        return torch.tensor(chosen[:count], dtype=torch.long)
    mouth_width = float((shape[landmarks[0]] - shape[landmarks[6]]).norm())
    distance = torch.cdist(shape, shape[landmarks]).min(dim=1).values
    region = torch.nonzero(distance <= radius * mouth_width).flatten()
    if region.numel() < count:
        raise ValueError(f"mouth_vertex_indices: only {region.numel()} vertices of '{model.name}' lie within "
                         f"{radius} mouth widths of the mouth landmarks, {count} asked; lower count or raise "
                         "radius")
    points = shape[region]
    nearest = torch.cdist(points, shape[torch.tensor(chosen)]).min(dim=1).values
    selected = set(chosen)
    while len(chosen) < count:
        pick = int(torch.argmax(nearest))
        vertex = int(region[pick])
        if vertex in selected:  # every remaining distance is 0: the region is exhausted
            break
        chosen.append(vertex)
        selected.add(vertex)
        nearest = torch.minimum(nearest, (points - points[pick]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


def mouth_motion(model: MorphableModel, exp: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Mouth vertex displacement from the neutral face: vertices(id, exp) - vertices(id, 0) at `indices`.

    In a linear 3DMM (eq. 1) the identity cancels, leaving B_exp[indices] @ exp, so no identity is needed.
    Differentiable in `exp` (used for the sync loss on the predicted beta_0).

    Args:
        model: the MorphableModel.
        exp: (..., 64) expression coefficients (unnormalised).
        indices: (M,) vertex ids from mouth_vertex_indices.

    Returns:
        (..., M, 3) displacements in model units, exp's dtype.
    """
    if exp.shape[-1] != 64:
        raise ValueError(f"mouth_motion: exp must end in 64 coefficients, got {tuple(exp.shape)}")
    basis = model.exp_basis[indices.to(model.exp_basis.device)].to(device=exp.device, dtype=exp.dtype)
    return torch.einsum("mck,...k->...mc", basis, exp)


def sliding_windows(sequence: torch.Tensor, window: int, stride: int = 1) -> torch.Tensor:
    """All windows of `window` consecutive frames: (B, F, ...) -> (B * N, W, ...), N = (F - W) // stride + 1,
    batch-major (window n of item b is row b * N + n). Cuts a 25-frame prediction into the expert's
    5-frame inputs (apply to the audio (B, F, A) and the mouth motion (B, F, M, 3) alike)."""
    if sequence.ndim < 2 or sequence.shape[1] < window or window < 1 or stride < 1:
        raise ValueError(f"sliding_windows: need (B, F, ...) with F >= window >= 1 and stride >= 1, got shape "
                         f"{tuple(sequence.shape)}, window {window}, stride {stride}")
    windows = sequence.unfold(1, window, stride)  # (B, N, ..., W)
    windows = windows.movedim(-1, 2)  # (B, N, W, ...)
    return windows.reshape(-1, *windows.shape[2:])


def sync_probability(audio_embedding: torch.Tensor, mouth_embedding: torch.Tensor,
                     eps: float = 1e-8) -> torch.Tensor:
    """FD2Talk eq. (10): P_sync = v . a / max(|v| |a|, eps).

    Args:
        audio_embedding: (B, E).
        mouth_embedding: (B, E).
        eps: the division guard.

    Returns:
        (B,) cosine similarity (in [0, 1] for the expert's ReLU embeddings).
    """
    dot = (audio_embedding * mouth_embedding).sum(dim=-1)
    norms = audio_embedding.norm(dim=-1) * mouth_embedding.norm(dim=-1)
    return dot / norms.clamp(min=eps)


def sync_loss(probability: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """FD2Talk eq. (11): mean of -log(P_sync), P clamped to [eps, 1] so an orthogonal pair stays finite.

    Args:
        probability: (B,) P_sync.

    Returns:
        scalar.
    """
    return -torch.log(probability.clamp(min=eps, max=1.0)).mean()


@dataclasses.dataclass(frozen=True)
class LipExpertConfig(JsonConfig):
    """Size of the lip expert."""

    audio_dim: int = 1280  # A: audio features per video frame (mel-80 flattened: 16 x 80)
    mouth_vertices: int = 64  # M: mouth vertices per frame (mouth_vertex_indices count)
    window: int = 5  # W: video frames per sync window (Wav2Lip / SyncNet use 5)
    hidden: int = 256  # channel width of both towers
    embedding: int = 128  # E: embedding width
    layers: int = 3  # temporal conv layers per tower (kernel 3)
    motion_scale: float = 10.0  # mouth displacements are multiplied by this (model units are decimetres)
    audio_encoder: str = MEL_ENCODER_NAME  # encoder the audio features come from (checked by users of the expert)
    audio_reduce: str = "flatten"  # how (R, D) rows per frame became A (see generator.reduce_audio_rows)

    def __post_init__(self):
        for name in ("audio_dim", "mouth_vertices", "window", "hidden", "embedding", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LipExpertConfig: {name} must be a positive integer, got {value!r}")
        if not self.motion_scale > 0:
            raise ValueError(f"LipExpertConfig: motion_scale must be > 0, got {self.motion_scale!r}")


def _tower(inputs: int, config: LipExpertConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(config.layers):
        layers += [nn.Conv1d(width, config.hidden, kernel_size=3, padding=1), nn.BatchNorm1d(config.hidden),
                   nn.ReLU()]
        width = config.hidden
    return nn.Sequential(*layers)


class LipExpert(nn.Module, PretrainedMixin):
    """Two towers mapping an audio window and a mouth-vertex motion window to unit embeddings whose cosine
    is P_sync (eq. 10). Each tower: temporal convs over the W frames, mean over time, linear, ReLU, L2 norm.

    Args:
        config: a LipExpertConfig.
    """

    config_class = LipExpertConfig

    def __init__(self, config: LipExpertConfig):
        super().__init__()
        self.config = config
        self.audio_norm = nn.BatchNorm1d(config.audio_dim, affine=False)  # data statistics, kept in the weights
        self.audio_tower = _tower(config.audio_dim, config)
        self.audio_head = nn.Linear(config.hidden, config.embedding)
        self.mouth_tower = _tower(config.mouth_vertices * 3, config)
        self.mouth_head = nn.Linear(config.hidden, config.embedding)

    def _embed(self, sequence: torch.Tensor, tower: nn.Module, head: nn.Module) -> torch.Tensor:
        features = tower(sequence.transpose(1, 2)).mean(dim=2)  # (B, hidden)
        return F.normalize(F.relu(head(features)), dim=-1, eps=1e-8)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, W, A) per-frame features -> (B, E) unit (or zero) embedding."""
        config = self.config
        if audio.ndim != 3 or audio.shape[1:] != (config.window, config.audio_dim):
            raise ValueError(f"LipExpert.embed_audio: audio must be (B, {config.window}, {config.audio_dim}), "
                             f"got {tuple(audio.shape)}")
        normed = self.audio_norm(audio.transpose(1, 2)).transpose(1, 2)
        return self._embed(normed, self.audio_tower, self.audio_head)

    def embed_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        """mouth: (B, W, M, 3) mouth vertex displacements from the neutral face (mouth_motion) -> (B, E)."""
        config = self.config
        if mouth.ndim != 4 or mouth.shape[1:] != (config.window, config.mouth_vertices, 3):
            raise ValueError(f"LipExpert.embed_mouth: mouth must be (B, {config.window}, "
                             f"{config.mouth_vertices}, 3), got {tuple(mouth.shape)}")
        flat = mouth.reshape(mouth.shape[0], config.window, -1) * config.motion_scale
        return self._embed(flat, self.mouth_tower, self.mouth_head)

    def forward(self, audio: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """P_sync (B,) of audio (B, W, A) and mouth (B, W, M, 3) windows (eq. 10)."""
        return sync_probability(self.embed_audio(audio), self.embed_mouth(mouth))

    def sync_probability(self, audio: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """Same as forward: (B,) P_sync."""
        return self(audio, mouth)

    def sync_loss(self, audio: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """Scalar L_sync = mean -log P_sync (eq. 11); the generator's loss (freeze the expert: eval mode,
        requires_grad False)."""
        return sync_loss(self(audio, mouth))

    def contrastive_loss(self, audio: torch.Tensor, mouth: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The expert's own training loss (Wav2Lip expert): BCE of P_sync against labels.

        Args:
            audio: (B, W, A); mouth: (B, W, M, 3).
            labels: (B,) 1 for in-sync pairs, 0 for pairs with shifted (off-sync) audio.

        Returns:
            scalar.
        """
        probability = self(audio, mouth).clamp(1e-7, 1 - 1e-7)
        return F.binary_cross_entropy(probability, labels.to(probability.dtype))
