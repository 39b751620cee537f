"""The 3DMM values that travel between nodes: SINGER_MOTION (per-frame expression + head pose in
the Deep3DFaceRecon coefficient layout, FD2Talk's targets) and a face identity to render them on."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

EXP_DIM, ANGLE_DIM, TRANS_DIM = 64, 3, 3  # Deep3DFaceRecon: exp 80:144, angle 224:227, trans 254:257
ID_DIM, TEX_DIM, GAMMA_DIM = 80, 80, 27  # id 0:80, tex 144:224, gamma 227:254
_FORMAT = "singer-motion/1"


def _check(name: str, tensor, shape: tuple) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(tensor).__name__}")
    if tensor.ndim != len(shape) or any(want is not None and got != want for got, want in zip(tensor.shape, shape, strict=True)):
        wanted = "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values; the model that made it diverged or the file "
                         "is damaged: generate it again (in float32) or reload the file")
    return tensor


@dataclasses.dataclass(frozen=True)
class SingerMotion:
    """A per-frame 3DMM motion sequence.

    Args:
        exp: (T, 64) expression coefficients (Deep3DFaceRecon exp block; the procedural model's
            units jaw_open, lip_round, lip_spread, smile, brow_raise, blink are indices 0..5).
        angle: (T, 3) head rotation in radians (pitch, yaw, roll).
        trans: (T, 3) head translation in model units.
        fps: frames per second.
        source: where it came from ("synthsinger ground truth", "motion DiT", a file name...).
    """

    exp: torch.Tensor
    angle: torch.Tensor
    trans: torch.Tensor
    fps: float
    source: str = ""

    def __post_init__(self):
        exp = _check("SingerMotion.exp", self.exp, (None, EXP_DIM))
        _check("SingerMotion.angle", self.angle, (exp.shape[0], ANGLE_DIM))
        _check("SingerMotion.trans", self.trans, (exp.shape[0], TRANS_DIM))
        if exp.shape[0] == 0:
            raise ValueError("SingerMotion has no frames")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"SingerMotion.fps must be a positive number, got {self.fps!r}")

    @property
    def frames(self) -> int:
        return self.exp.shape[0]

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def check_audio_length(self, num_samples: int, sample_rate: int, who: str = "SingerMotion",
                           tolerance_frames: float = 1.0) -> None:
        """Refuse audio whose length differs from the motion's by more than `tolerance_frames` frames (audio
        made for another clip, or features encoded at another fps than the motion's).

        Args:
            num_samples: T of the (C, T) audio.
            sample_rate: its Hz.
            who: the caller's name, used in the message.
            tolerance_frames: allowed difference in frames (1: the last partial frame).
        """
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"{who}: sample_rate must be a positive integer, got {sample_rate!r}")
        audio_seconds = num_samples / sample_rate
        if abs(audio_seconds - self.seconds) * self.fps > tolerance_frames:
            raise ValueError(
                f"{who}: the audio is {audio_seconds:.2f} s long but the motion is {self.seconds:.2f} s "
                f"({self.frames} frames at {self.fps:g} fps); they do not belong together. Connect the song the "
                f"motion was made from, or re-encode that song at {self.fps:g} fps and sample the motion again")

    def slice(self, start: int, stop: int | None = None) -> SingerMotion:
        """Frames start..stop (Python slice semantics, at least one frame)."""
        return dataclasses.replace(self, exp=self.exp[start:stop], angle=self.angle[start:stop],
                                   trans=self.trans[start:stop])

    def save(self, path: str | Path) -> Path:
        """One .safetensors file (tensors) with fps/source in its metadata; written atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {"exp": self.exp.float().contiguous(), "angle": self.angle.float().contiguous(),
                   "trans": self.trans.float().contiguous()}
        save_file(tensors, str(tmp), metadata={"format": _FORMAT, "fps": json.dumps(float(self.fps)),
                                               "source": self.source})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SingerMotion:
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != _FORMAT:
                    raise ValueError(f"SingerMotion.load: '{path}' is not a SINGER motion file "
                                     f"(format {metadata.get('format')!r}); save one with SingerMotion.save")
                tensors = {key: handle.get_tensor(key) for key in ("exp", "angle", "trans")}
        except (SafetensorError, OSError, KeyError) as error:  # junk, truncation, missing tensors
            raise ValueError(f"SingerMotion.load: cannot read '{path}' ({error}); the file is missing, "
                             "truncated or not a safetensors file") from error
        return cls(fps=float(json.loads(metadata["fps"])), source=metadata.get("source", ""), **tensors)


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
    """Who is rendered: identity shape, texture and lighting coefficients, and the background.

    Args:
        id: (80,) identity shape coefficients.
        tex: (80,) texture coefficients.
        gamma: (27,) spherical-harmonics lighting (3 colours x 9 bands).
        background: RGB in 0..1.
        name: a label (e.g. "synthsinger-00003").
    """

    id: torch.Tensor
    tex: torch.Tensor
    gamma: torch.Tensor
    background: tuple[float, float, float] = (0.2, 0.2, 0.25)
    name: str = ""

    def __post_init__(self):
        _check("FaceIdentity.id", self.id, (ID_DIM,))
        _check("FaceIdentity.tex", self.tex, (TEX_DIM,))
        _check("FaceIdentity.gamma", self.gamma, (GAMMA_DIM,))
        if len(self.background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.background):
            raise ValueError(f"FaceIdentity.background must be an RGB triple in 0..1, got {self.background!r}")

    def coefficients(self, motion: SingerMotion) -> torch.Tensor:
        """(T, 257) Deep3DFaceRecon coefficients of this identity performing the motion."""
        from .morphable import join_coeffs

        frames = motion.frames
        return join_coeffs(id=self.id.float().expand(frames, -1), exp=motion.exp.float(),
                           tex=self.tex.float().expand(frames, -1), angle=motion.angle.float(),
                           gamma=self.gamma.float().expand(frames, -1), trans=motion.trans.float())
