"""Vocal isolation with an MDX-Net ONNX model (KUIELab-MDX-Net, Kim et al. 2021) through OpenCV's DNN
module: the separator Hallo and SINGER run first (UVR's Kim_Vocal_2.onnx, hub fudan-generative-ai/hallo,
file audio_separator/Kim_Vocal_2.onnx).

An MDX-Net model maps one chunk's spectrogram to the spectrogram of its stem. The chunk is
hop * (dim_t - 1) samples of 2-channel audio at the model's rate; its centred STFT (periodic Hann,
n_fft, hop) has dim_t frames, of which the lowest dim_f bins enter as a (1, 4, dim_f, dim_t) tensor
[L real, L imag, R real, R imag]; the output has the same layout (higher bins are zero). Chunks
overlap by n_fft // 2 samples on each side, which are discarded after the inverse STFT; the stem is
multiplied by the model's `compensate` gain. Written from these published facts, not from UVR code.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..io.config import JsonConfig
from ..progress import Progress
from .io import resample
from .separation import Separation

logger = logging.getLogger(__name__)

STEMS = ("vocals", "instrumental")


@dataclasses.dataclass(frozen=True)
class MdxNetParams(JsonConfig):
    """How an MDX-Net ONNX model was trained (UVR model data names in brackets)."""

    sample_rate: int = 44100  # rate the model expects; audio is resampled to it and back
    n_fft: int = 7680  # STFT size [mdx_n_fft_scale_set]
    hop: int = 1024  # STFT hop in samples
    dim_f: int = 3072  # lowest frequency bins fed to the model [mdx_dim_f_set]
    dim_t: int = 256  # STFT frames per chunk [2 ** mdx_dim_t_set]
    compensate: float = 1.009  # gain applied to the model's stem [compensate]
    primary_stem: str = "vocals"  # what the model outputs: "vocals" or "instrumental" [primary_stem]
    denoise: bool = False  # average model(x) and -model(-x): cancels odd model noise, twice the compute

    def __post_init__(self):
        checks = [
            (self.sample_rate >= 8000, f"sample_rate must be >= 8000, got {self.sample_rate}"),
            (
                self.n_fft >= 16 and self.n_fft % 2 == 0,
                f"n_fft must be an even number >= 16, got {self.n_fft}",
            ),
            (0 < self.hop <= self.n_fft, f"hop must be in [1, n_fft], got {self.hop}"),
            (
                0 < self.dim_f <= self.n_fft // 2 + 1,
                f"dim_f must be in [1, n_fft // 2 + 1], got {self.dim_f}",
            ),
            (
                self.hop * (self.dim_t - 1) > 2 * (self.n_fft // 2),
                f"a chunk of hop * (dim_t - 1) = {self.hop * (self.dim_t - 1)} samples must be longer "
                f"than n_fft "
                f"= {self.n_fft} (the part trimmed off its two ends); raise dim_t",
            ),
            (self.compensate > 0, f"compensate must be positive, got {self.compensate}"),
            (self.primary_stem in STEMS, f"primary_stem must be one of {STEMS}, got {self.primary_stem!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"MdxNetParams: {message}")

    @property
    def chunk(self) -> int:
        """Samples per model call: hop * (dim_t - 1)."""
        return self.hop * (self.dim_t - 1)

    @property
    def trim(self) -> int:
        """Samples discarded at each end of a chunk: n_fft // 2."""
        return self.n_fft // 2



# UVR model data for Kim_Vocal_2.onnx: compensate 1.009, mdx_dim_f_set 3072, mdx_dim_t_set 8,
# mdx_n_fft_scale_set 7680, primary stem Vocals; hop 1024 and 44.1 kHz stereo for all MDX-Net models.
KIM_VOCAL_2 = MdxNetParams()

MISSING_MODEL_HELP = (
    "download Kim_Vocal_2.onnx (Hugging Face hub repo fudan-generative-ai/hallo, file "
    "audio_separator/Kim_Vocal_2.onnx) and put it at ComfyUI/models/audio_separator/Kim_Vocal_2.onnx, "
    "or pass its path (any folder) when running headless"
)


# ---------------------------------------------------------------------------------------------
# reading the declared graph inputs of an ONNX file (a minimal protobuf walk; `onnx` not needed)
# ---------------------------------------------------------------------------------------------


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("malformed varint")


def _fields(data: memoryview, start: int, end: int):
    """Yield (field number, wire type, value) of one protobuf message; value is an int (varint) or
    the (start, end) span of a length-delimited field; fixed-width fields are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise ValueError("truncated protobuf message")


def onnx_graph_inputs(path: str | Path) -> dict[str, tuple[int | str | None, ...] | None]:
    """Declared inputs of an ONNX model's graph (initializers excluded).

    Returns:
        {input name: dims or None when no shape is declared}; each dim is an int, a symbolic name
        (str, e.g. "batch") or None when unknown.
    """
    data = memoryview(Path(path).read_bytes())
    # ModelProto.graph = 7; GraphProto.initializer = 5 (TensorProto.name = 8), .input = 11;
    # ValueInfoProto.name = 1, .type = 2; TypeProto.tensor_type = 1; Tensor.shape = 2;
    # TensorShapeProto.dim = 1; Dimension.dim_value = 1, .dim_param = 2.
    graphs = [span for number, wire, span in _fields(data, 0, len(data)) if number == 7 and wire == 2]
    if not graphs:
        raise ValueError("no graph in the file")
    initializers, inputs = set(), {}
    for number, wire, span in _fields(data, *graphs[-1]):
        if number == 5 and wire == 2:
            for field, kind, value in _fields(data, *span):
                if field == 8 and kind == 2:
                    initializers.add(bytes(data[value[0] : value[1]]).decode("utf-8", "replace"))
        elif number == 11 and wire == 2:
            name, dims = "", None
            for field, kind, value in _fields(data, *span):
                if field == 1 and kind == 2:
                    name = bytes(data[value[0] : value[1]]).decode("utf-8", "replace")
                elif field == 2 and kind == 2:
                    dims = _tensor_dims(data, value)
            inputs[name] = dims
    return {name: dims for name, dims in inputs.items() if name not in initializers}


def _tensor_dims(data: memoryview, type_span: tuple[int, int]):
    for field, kind, tensor in _fields(data, *type_span):
        if field != 1 or kind != 2:
            continue
        for inner, inner_kind, shape in _fields(data, *tensor):
            if inner != 2 or inner_kind != 2:
                continue
            dims = []
            for dim_field, dim_kind, dim in _fields(data, *shape):
                if dim_field != 1 or dim_kind != 2:
                    continue
                value = None
                for part, part_kind, content in _fields(data, *dim):
                    if part == 1 and part_kind == 0:
                        value = content
                    elif part == 2 and part_kind == 2:
                        value = bytes(data[content[0] : content[1]]).decode("utf-8", "replace")
                dims.append(value)
            return tuple(dims)
    return None


# ---------------------------------------------------------------------------------------------
# the separator
# ---------------------------------------------------------------------------------------------


class MdxNetSeparator:
    """An MDX-Net ONNX model run through OpenCV DNN, with the chunked STFT around it.

    Build with `MdxNetSeparator.from_onnx(path, params=...)`; `separate(waveform, sample_rate)` returns
    a `Separation`.

    Args:
        net: a cv2.dnn.Net holding the model.
        params: the model's MdxNetParams.
        name: the model file's name, for messages.
    """

    def __init__(self, net, params: MdxNetParams, name: str = "model"):
        self.net = net
        self.params = params
        self.name = name

    @classmethod
    def from_onnx(
        cls, path: str | Path, *, params: MdxNetParams = KIM_VOCAL_2, denoise: bool | None = None
    ) -> MdxNetSeparator:
        """Load an MDX-Net ONNX file and check that its declared input matches `params`.

        Args:
            path: the .onnx file (ComfyUI: models/audio_separator/Kim_Vocal_2.onnx).
            params: MdxNetParams of this model (default: KIM_VOCAL_2).
            denoise: when given, overrides params.denoise (average of model(x) and -model(-x)).
        """
        if denoise is not None:
            params = dataclasses.replace(params, denoise=bool(denoise))
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MdxNetSeparator: no model file at '{path}'; {MISSING_MODEL_HELP}")
        # 1. the declared input must be (batch, 4, dim_f, dim_t)
        try:
            inputs = onnx_graph_inputs(path)
        except (ValueError, IndexError) as error:
            raise ValueError(
                f"MdxNetSeparator: '{path}' is not a readable ONNX model ({error}); {MISSING_MODEL_HELP}"
            ) from error
        if len(inputs) != 1:
            raise ValueError(
                f"MdxNetSeparator: '{path.name}' has {len(inputs)} graph inputs {sorted(inputs)}; "
                "an MDX-Net model has exactly one (the 4-channel spectrogram)"
            )
        dims = next(iter(inputs.values()))
        expected = (None, 4, params.dim_f, params.dim_t)
        if dims is not None and (
            len(dims) != 4
            or any(
                isinstance(have, int) and want is not None and have != want
                for have, want in zip(dims, expected, strict=True)
            )
        ):
            raise ValueError(
                f"MdxNetSeparator: '{path.name}' takes input {tuple(dims)} but the params describe "
                f"(batch, 4, dim_f={params.dim_f}, dim_t={params.dim_t}); pass the MdxNetParams of this "
                "model (UVR model data: dim_f = mdx_dim_f_set, dim_t = 2 ** mdx_dim_t_set, "
                "n_fft = mdx_n_fft_scale_set)"
            )
        # 2. OpenCV's ONNX importer
        try:
            import cv2
        except ImportError as error:
            raise RuntimeError("MdxNetSeparator needs OpenCV: pip install opencv-python") from error
        try:
            net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as error:
            raise RuntimeError(f"MdxNetSeparator: OpenCV could not load '{path}': {error}") from error
        logger.info("MdxNetSeparator: loaded %s (input %s)", path.name, dims)
        return cls(net, params, path.name)

    def _model(self, spec: np.ndarray) -> np.ndarray:
        """(1, 4, dim_f, dim_t) float32 -> the model's stem spectrogram, same shape."""
        expected = (1, 4, self.params.dim_f, self.params.dim_t)
        self.net.setInput(spec)
        out = np.asarray(self.net.forward())
        if out.shape != expected:
            raise RuntimeError(
                f"MdxNetSeparator: '{self.name}' returned shape {out.shape}, expected {expected}; "
                "is it an MDX-Net model with these params?"
            )
        return out

    def _stem_of_chunk(self, chunk: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """(2, chunk) float32 at the model rate -> the model's stem for it, (2, chunk)."""
        p = self.params
        # 1. centred STFT -> [L re, L im, R re, R im] of the lowest dim_f bins
        spec = torch.stft(chunk, p.n_fft, p.hop, window=window, center=True, return_complex=True)
        planes = torch.view_as_real(spec[:, : p.dim_f]).permute(0, 3, 1, 2).reshape(1, 4, p.dim_f, p.dim_t)
        # 2. the model (optionally symmetrised: half of model(x) - model(-x))
        x = np.ascontiguousarray(planes.numpy(), dtype=np.float32)
        out = self._model(x)
        if p.denoise:
            out = 0.5 * (out - self._model(-x))
        # 3. back to a complex spectrogram (bins above dim_f are zero) and the inverse STFT
        stem = torch.from_numpy(np.ascontiguousarray(out)).reshape(2, 2, p.dim_f, p.dim_t).permute(0, 2, 3, 1)
        full = torch.zeros(2, p.n_fft // 2 + 1, p.dim_t, dtype=torch.complex64)
        full[:, : p.dim_f] = torch.view_as_complex(stem.contiguous())
        return torch.istft(full, p.n_fft, p.hop, window=window, center=True, length=p.chunk)

    def separate(
        self, waveform: torch.Tensor, sample_rate: int, *, progress: Progress | None = None
    ) -> Separation:
        """Separate vocals from accompaniment.

        Args:
            waveform: (C, T) float audio, C = 1 (duplicated to stereo for the model, mixed back) or 2.
            sample_rate: Hz; resampled to params.sample_rate for the model and back.
            progress: optional callback (done_chunks, total_chunks); may raise to stop.

        Returns:
            Separation(vocals (C, T), accompaniment (C, T) = waveform - vocals, sample_rate).
        """
        p = self.params
        if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2 or waveform.shape[0] not in (1, 2):
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(
                f"MdxNetSeparator.separate: expected a (channels, samples) tensor with 1 or 2 "
                f"channels, got {shape}; mix other layouts down to stereo first"
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(
                f"MdxNetSeparator.separate: sample_rate must be a positive integer, got {sample_rate!r}"
            )
        waveform = waveform.float().cpu()
        total = waveform.shape[-1]
        if total == 0 or not torch.isfinite(waveform).all():
            raise ValueError("MdxNetSeparator.separate: the audio is empty or contains NaN/inf samples")
        # 1. to the model's rate, stereo, zero-padded so that chunks tile it with n_fft // 2 margins
        audio = resample(waveform, sample_rate, p.sample_rate)
        if audio.shape[0] == 1:
            audio = audio.expand(2, -1)
        length = audio.shape[-1]
        step = p.chunk - 2 * p.trim
        padded = torch.nn.functional.pad(audio, (p.trim, p.trim + (-length) % step))
        stem = torch.empty(2, length + (-length) % step)
        window = torch.hann_window(p.n_fft, periodic=True)
        # 2. chunk by chunk: model, inverse STFT, keep the centre
        chunks = stem.shape[-1] // step
        for index in range(chunks):
            start = index * step
            stem[:, start : start + step] = self._stem_of_chunk(padded[:, start : start + p.chunk], window)[
                :, p.trim : p.trim + step
            ]
            if progress is not None:
                progress(index + 1, chunks)
        stem = stem[:, :length] * p.compensate
        # 3. back to the input's rate and channels
        stem = resample(stem, p.sample_rate, sample_rate)
        stem = torch.nn.functional.pad(stem[:, :total], (0, max(0, total - stem.shape[-1])))
        if waveform.shape[0] == 1:
            stem = stem.mean(dim=0, keepdim=True)
        vocals = stem if p.primary_stem == "vocals" else waveform - stem
        return Separation(vocals=vocals, accompaniment=waveform - vocals, sample_rate=sample_rate)
