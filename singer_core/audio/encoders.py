"""Speech encoders for singing audio, chunked so memory stays flat in song length: wav2vec 2.0 and
HuBERT through transformers (Hallo's frame-interpolated wav2vec2 features, ER-NeRF's HuBERT layout
with two steps per frame) and Wav2Lip's 80-bin log-mel front end with SyncNet's 16-frame windows.

Hallo's ``Wav2VecModel`` runs the CNN feature extractor at 50 Hz, linearly interpolates its output
(align_corners=True) to the F = ceil(T / 16000 * fps) video frames, then applies the feature
projection and the transformer and stacks hidden states 1..L -> (F, L, D). :class:`AudioEncoder`
computes the same thing chunk by chunk: the global interpolation positions are exact, every chunk
runs the CNN on hop-aligned samples (so its CNN frames are the global ones; wav2vec2-base's first
GroupNorm normalises over the whole song, so its statistics are gathered in a first streaming
pass), and only the transformer sees a window (core + context seconds on each side). Audio shorter
than one chunk gives the unchunked result. Whole-song allocations besides the output: only the mono
mix (stereo input) and the 16 kHz copy (other rates), 4 bytes per 16 kHz sample.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from fractions import Fraction

import torch

from ..progress import Progress
from .features import SingerAudioFeatures
from .frames import (
    as_fraction,
    frame_count,
    interpolate_at,
    interpolation_positions,
    mel_window_starts,
    plan_chunks,
)
from .io import check_channels_first, resample

logger = logging.getLogger(__name__)

ENCODER_SAMPLE_RATE = 16000  # every encoder here consumes 16 kHz mono
ENCODER_KINDS = ("wav2vec2", "hubert")
MEL_ENCODER_NAME = "mel-80"  # MelEncoder.name: Wav2Lip's mel front end (no weights); stored in feature files
SILENCE_PEAK = 2.0**-20  # about -120 dBFS, below 16-bit quantisation: "digital silence"
_STATS_ELEMENTS = 1 << 20  # conv outputs per block of the GroupNorm statistics pass (4 MB in float32)
_SCAN_BLOCK = 1 << 18  # samples per block when scanning the waveform


@dataclasses.dataclass(frozen=True)
class KnownAudioEncoder:
    """An encoder the pipelines were published with."""

    name: str  # hub id, or a built-in name
    kind: str  # "wav2vec2", "hubert" or "mel"
    width: int  # feature width D
    rows: int  # transformer layers L (all-layer layout) or mel frames per window
    used_by: str  # which published system consumes it, and how


KNOWN_AUDIO_ENCODERS: dict[str, KnownAudioEncoder] = {
    "facebook/wav2vec2-base-960h": KnownAudioEncoder(
        "facebook/wav2vec2-base-960h", "wav2vec2", 768, 12,
        "Hallo / SINGER / FD2Talk: all 12 layers, interpolated to 25 fps, 5-frame windows"),
    "facebook/hubert-large-ls960-ft": KnownAudioEncoder(
        "facebook/hubert-large-ls960-ft", "hubert", 1024, 24,
        "ER-NeRF / DAMC content encoder: last layer, two 50 Hz steps per frame (F, 2, 1024)"),
    MEL_ENCODER_NAME: KnownAudioEncoder(
        MEL_ENCODER_NAME, "mel", 80, 16, "Wav2Lip / SyncNet lip-sync expert, DAMC dynamic encoder: (F, 16, 80)"),
}


# ---- shared input handling ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Song:
    samples: torch.Tensor  # (T,) mono at the encoder rate (a view of the caller's tensor when possible)
    frames: int  # output frames F, including padding frames
    num_samples: int  # T plus padding samples: what the encoder consumes
    mean: float  # of the unpadded samples, float64
    scale: float  # 1 / sqrt(var + 1e-7) (Wav2Vec2FeatureExtractor's do_normalize)
    fps: Fraction  # video frame rate


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _prepare(who: str, waveform, sample_rate, fps, pad_frames_to_multiple, allow_silence, rate, *,
             variance: bool = True) -> _Song:
    """Validate, mono-mix and resample (span by span, never a whole-song copy) and scan the waveform; without
    `variance` (encoders that do not normalise, e.g. the mel) the second scan is skipped and scale is 1."""
    if not isinstance(waveform, torch.Tensor) or waveform.ndim not in (1, 2):
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"{who}: waveform must be a (channels, samples) or (samples,) tensor, got {shape}")
    if not waveform.is_floating_point():
        raise ValueError(f"{who}: waveform must be float audio in [-1, 1], got {waveform.dtype}; "
                         "divide integer PCM by its full scale (32768 for 16-bit)")
    if not _is_count(sample_rate, 1):
        raise ValueError(f"{who}: sample_rate must be a positive integer, got {sample_rate!r}")
    fps = as_fraction(fps)
    if not _is_count(pad_frames_to_multiple, 0):
        raise ValueError(f"{who}: pad_frames_to_multiple must be an integer >= 0, "
                         f"got {pad_frames_to_multiple!r}")
    if waveform.shape[-1] == 0 or waveform.shape[0] == 0:
        raise ValueError(f"{who}: the audio is empty (shape {tuple(waveform.shape)}); give audio with sound")
    check_channels_first(waveform, who)
    if sample_rate < rate:
        logger.warning("%s: the audio is sampled at %d Hz, below the encoder's %d Hz: it holds nothing above "
                       "%d Hz, so the features see a muffled voice; use the original recording if there is one",
                       who, sample_rate, rate, sample_rate // 2)
    frames = frame_count(waveform.shape[-1], int(sample_rate), fps)
    if waveform.ndim == 1 or waveform.shape[0] == 1:  # mono: a view, resampled span by span when needed
        mono = waveform.detach() if waveform.ndim == 1 else waveform.detach()[0]
        samples = mono if int(sample_rate) == rate else _MonoSpans(mono, int(sample_rate), rate)
    else:  # mixed down (and resampled) span by span: no whole-song copy at any rate or channel count
        samples = _MonoSpans(waveform.detach(), int(sample_rate), rate)
    total = samples.shape[0]
    if pad_frames_to_multiple > 1 and frames % pad_frames_to_multiple:
        # Hallo pads the normalised audio with zeros: (clip - F % clip) frames of sr // fps samples
        extra = pad_frames_to_multiple - frames % pad_frames_to_multiple
        frames += extra
        total += math.floor(extra * Fraction(rate) / fps)
    # streaming scans in float64: finiteness, peak and mean; then the variance about the mean
    count, peak, accumulated = samples.shape[0], 0.0, 0.0
    for start in range(0, count, _SCAN_BLOCK):
        block = samples[start:start + _SCAN_BLOCK].double()
        block_sum = float(block.sum())
        if not math.isfinite(block_sum):
            raise ValueError(f"{who}: the audio contains NaN or infinite samples (near "
                             f"{start / rate:.1f} s); the file is corrupt or the upstream node overflowed")
        accumulated += block_sum
        peak = max(peak, float(block.abs().max()))
    if peak < SILENCE_PEAK and not allow_silence:
        raise ValueError(f"{who}: the audio is silent (peak {peak:.2g}, below -120 dBFS), so there is "
                         "nothing to encode; check the input file or the vocal separation, or pass "
                         "allow_silence=True to encode silence on purpose")
    mean = accumulated / count
    if not variance:
        return _Song(samples, frames, total, mean, 1.0, fps)
    squares = sum(float(((samples[s:s + _SCAN_BLOCK].double() - mean) ** 2).sum())
                  for s in range(0, count, _SCAN_BLOCK))
    return _Song(samples, frames, total, mean, 1.0 / math.sqrt(squares / count + 1e-7), fps)


class _MonoSpans:
    """The mono mix of a (C, T) or (T,) waveform resampled from `orig` to `rate` Hz, computed per requested span
    [lo, hi) (slicing gives a (hi - lo,) float tensor), so an encoder never holds a whole-song copy.

    Each span is resampled from whole polyphase groups of the input (orig/g samples <-> rate/g outputs, g the
    gcd) with a margin of groups wider than torchaudio's sinc kernel on both sides, so it equals the same span of
    the whole song resampled at once (the mix is the per-sample channel mean, as to_mono).
    """

    def __init__(self, waveform: torch.Tensor, orig: int, rate: int):
        self.waveform, self.orig, self.rate = waveform, int(orig), int(rate)
        gcd = math.gcd(self.orig, self.rate)
        self.group_in, self.group_out = self.orig // gcd, self.rate // gcd
        width = math.ceil(6 * self.group_in / (min(self.group_in, self.group_out) * 0.99))  # resample()'s
        self.margin = width // self.group_in + 2  # whole groups beyond the kernel's reach
        self.length = -(-waveform.shape[-1] * self.rate // self.orig)  # torchaudio: ceil(T * rate / orig)
        self.shape = (self.length,)

    def __getitem__(self, span: slice) -> torch.Tensor:
        lo, hi = max(0, span.start or 0), min(self.length, self.length if span.stop is None else span.stop)
        if hi <= lo:
            return torch.zeros(0, dtype=self.waveform.dtype)
        if self.orig == self.rate:
            first, source = lo, self.waveform[..., lo:hi]
        else:
            group = max(0, lo // self.group_out - self.margin)
            stop = (hi // self.group_out + 1 + self.margin) * self.group_in
            first, source = group * self.group_out, self.waveform[..., group * self.group_in:stop]
        mono = source.mean(dim=0) if source.ndim == 2 else source
        if self.orig != self.rate:
            mono = resample(mono, self.orig, self.rate)
        return mono[lo - first:hi - first]


def _read(song: _Song, start: int, stop: int, normalize: bool, dtype, device) -> torch.Tensor:
    """Samples [start, stop) of the (normalised) song, zeros outside [0, T) (padding); computed in
    float64 for float64 models, else in float32 (as Wav2Vec2FeatureExtractor does)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.zeros(stop - start, dtype=compute)
    lo, hi = max(start, 0), min(stop, song.samples.shape[0])
    if lo < hi:
        part = out[lo - start:hi - start]
        part.copy_(song.samples[lo:hi])
        if normalize:
            part.sub_(song.mean).mul_(song.scale)
    return out.to(device=device, dtype=dtype)


def _check_encode_args(who, layers, interpolate, steps_per_frame):
    if layers not in ("all", "last"):
        raise ValueError(f"{who}: layers must be 'all' (hidden states of every layer) or 'last', "
                         f"got {layers!r}")
    if interpolate not in ("hallo", "after"):
        raise ValueError(f"{who}: interpolate must be 'hallo' (CNN features to frames, then the transformer)"
                         f" or 'after' (transformer at 50 Hz, then to frames), got {interpolate!r}")
    if not _is_count(steps_per_frame, 1):
        raise ValueError(f"{who}: steps_per_frame must be an integer >= 1, got {steps_per_frame!r}")
    if steps_per_frame > 1 and layers != "last":
        raise ValueError(f"{who}: steps_per_frame={steps_per_frame} puts time steps on the row axis, so it "
                         "needs layers='last' (ER-NeRF's HuBERT layout is the last layer, 2 steps per frame)")


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:  # may raise to stop the work
        progress(done, total)


# ---- wav2vec2 / HuBERT --------------------------------------------------------------------------
class AudioEncoder:
    """A wav2vec2 or HuBERT model (the transformers classes) that encodes songs of any length.

    Args:
        model: a transformers ``Wav2Vec2Model`` or ``HubertModel`` (put into eval mode here).
        kind: "wav2vec2" or "hubert".
        name: encoder id stored in the features (hub id, folder or file name).
        sample_rate: rate the model was trained at (preprocessor_config.json; 16000).
        do_normalize: zero-mean/unit-variance normalise the whole song first (preprocessor_config.json;
            True for wav2vec2-base-960h and hubert-large-ls960-ft).
    """

    def __init__(self, model, *, kind: str, name: str, sample_rate: int = ENCODER_SAMPLE_RATE,
                 do_normalize: bool = True):
        if kind not in ENCODER_KINDS:
            raise ValueError(f"AudioEncoder: kind must be one of {ENCODER_KINDS}, got {kind!r}")
        config = model.config
        if getattr(config, "add_adapter", False):
            raise ValueError("AudioEncoder: models with an adapter (add_adapter=True) change the frame rate "
                             "and are not supported; use the plain wav2vec2/HuBERT encoder")
        if config.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"AudioEncoder: unsupported feat_extract_norm {config.feat_extract_norm!r}")
        self.model = model.eval()  # dropout off
        self.kind, self.name = kind, name
        self.sample_rate, self.do_normalize = int(sample_rate), bool(do_normalize)
        self.conv_kernels, self.conv_strides = tuple(config.conv_kernel), tuple(config.conv_stride)
        self.hop = math.prod(self.conv_strides)  # 320 samples = 20 ms at 16 kHz
        self.receptive_field = 1 + sum((k - 1) * math.prod(self.conv_strides[:i])
                                       for i, k in enumerate(self.conv_kernels))  # 400 samples

    def __repr__(self) -> str:
        return (f"AudioEncoder({self.name!r}, kind={self.kind}, layers={self.num_layers}, "
                f"width={self.hidden_size}, dtype={self.dtype}, device={self.device})")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def to(self, device=None, dtype: torch.dtype | None = None) -> AudioEncoder:
        """Move/cast the model in place; returns self."""
        self.model.to(device=device, dtype=dtype)
        return self

    def num_cnn_frames(self, num_samples: int) -> int:
        """CNN frames for ``num_samples`` (floor((T - 400) / 320) + 1 for the published models)."""
        length = int(num_samples)
        for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
            length = (length - kernel) // stride + 1 if length >= kernel else 0
        return length

    def encode(self, waveform: torch.Tensor, sample_rate: int, fps, *, layers: str = "all",
               interpolate: str = "hallo", steps_per_frame: int = 1, chunk_seconds: float = 30.0,
               context_seconds: float = 2.0, pad_frames_to_multiple: int = 0, allow_silence: bool = False,
               progress: Progress | None = None) -> SingerAudioFeatures:
        """Encode a song into per-video-frame features.

        Args:
            waveform: (C, T) or (T,) float audio; channels are averaged, then resampled to 16 kHz.
            sample_rate: Hz of ``waveform``.
            fps: video frame rate (int, float, Fraction or "30000/1001"; see frames.as_fraction).
            layers: "all" -> rows are hidden states of layers 1..L (Hallo); "last" -> one row.
            interpolate: "hallo" -> CNN features interpolated to the frames, then the transformer
                (Hallo's Wav2VecModel); "after" -> the transformer at 50 Hz, then interpolated.
            steps_per_frame: > 1 gives that many time steps per frame on the row axis (needs
                layers="last"; 2 with HuBERT and interpolate="after" is ER-NeRF's (F, 2, 1024)).
            chunk_seconds: seconds of output per chunk (math.inf: one chunk).
            context_seconds: extra seconds the transformer sees on each side of a chunk.
            pad_frames_to_multiple: pad the normalised audio with zeros to a multiple of this many
                frames (Hallo pads to its 16-frame clips); 0 or 1: no padding.
            allow_silence: encode digitally silent audio instead of raising.
            progress: progress(done_chunks, total_chunks) after every chunk; may raise to stop.

        Returns:
            SingerAudioFeatures on the CPU in the model's dtype: (F, L, D) for layers="all", (F, 1, D)
            for "last", (F, steps, D) with rows="steps" when steps_per_frame > 1. F = ceil(T / sr * fps)
            exactly, from the input length at its own rate, plus any padding frames.
        """
        who = f"AudioEncoder({self.name}).encode"
        _check_encode_args(who, layers, interpolate, steps_per_frame)
        song = _prepare(who, waveform, sample_rate, fps, pad_frames_to_multiple, allow_silence,
                        self.sample_rate)
        if song.num_samples < self.receptive_field:
            raise ValueError(f"{who}: the audio is {song.num_samples / self.sample_rate:.4f} s long; the "
                             f"encoder needs at least {self.receptive_field} samples "
                             f"({self.receptive_field / self.sample_rate:.3f} s) at {self.sample_rate} Hz; "
                             "give a longer clip")
        # 1. the global map (CNN frames -> output steps) and the chunks
        n_cnn, steps = self.num_cnn_frames(song.num_samples), int(steps_per_frame)
        n_steps = song.frames * steps
        plan = plan_chunks(song.num_samples, self.sample_rate, song.fps, chunk_seconds, context_seconds,
                           hop=self.hop, receptive_field=self.receptive_field, num_frames=song.frames)
        rows = self.num_layers if layers == "all" else 1
        out = torch.empty((n_steps, rows, self.hidden_size), dtype=self.dtype)  # not an inference tensor
        group_norm = self.model.config.feat_extract_norm == "group"
        with torch.inference_mode():
            # 2. wav2vec2-base's first GroupNorm normalises over the whole song: gather its statistics
            group_stats = self._group_norm_statistics(song) if group_norm else None
            for chunk in plan:
                # 3. output steps of the context and the core, and the CNN frames they read
                first, last = chunk.context_start * steps, chunk.context_stop * steps
                core = slice(chunk.frame_start * steps - first, chunk.frame_stop * steps - first)
                positions = interpolation_positions(n_cnn, n_steps, first, last)
                low, high = int(positions[0]), min(n_cnn - 1, int(positions[-1]) + 1)
                # 4. the CNN on hop-aligned samples: its frames are exactly the global frames low..high
                samples = _read(song, low * self.hop, high * self.hop + self.receptive_field,
                                self.do_normalize, self.dtype, self.device)
                cnn = self._cnn(samples, group_stats)
                if cnn.shape[0] != high - low + 1:
                    raise RuntimeError(f"{who}: internal error: {cnn.shape[0]} CNN frames, "
                                       f"expected {high - low + 1}")
                # 5. interpolate before (Hallo) or after the transformer; keep the core
                if interpolate == "hallo":
                    hidden = self._transformer(interpolate_at(cnn, positions - low), layers)[core]
                else:
                    hidden = interpolate_at(self._transformer(cnn, layers), positions[core] - low)
                out[chunk.frame_start * steps:chunk.frame_stop * steps].copy_(hidden)
                _report(progress, chunk.index + 1, len(plan))
        if steps > 1:
            out = out.reshape(song.frames, steps, self.hidden_size)
        return SingerAudioFeatures(out, fps=float(song.fps), encoder=self.name, sample_rate=self.sample_rate,
                                   num_samples=song.num_samples, rows="steps" if steps > 1 else "layers")

    def _group_norm_statistics(self, song: _Song) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and variance (float64) of the first conv layer's output, whole song."""
        conv = self.model.feature_extractor.conv_layers[0].conv
        kernel, stride, channels = conv.kernel_size[0], conv.stride[0], conv.out_channels
        outputs = (song.num_samples - kernel) // stride + 1
        block = max(1, _STATS_ELEMENTS // channels)
        count = 0
        mean, m2 = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
        for start in range(0, outputs, block):
            stop = min(outputs, start + block)
            samples = _read(song, start * stride, (stop - 1) * stride + kernel, self.do_normalize,
                            self.dtype, self.device)
            hidden = conv(samples[None, None])[0]
            compute = hidden.dtype if hidden.dtype in (torch.float32, torch.float64) else torch.float32
            var_b, mean_b = torch.var_mean(hidden.to(compute), dim=1, correction=0)
            var_b, mean_b, n = var_b.double().cpu(), mean_b.double().cpu(), stop - start
            delta, total = mean_b - mean, count + n  # Chan et al.'s parallel variance
            mean = mean + delta * (n / total)
            m2 = m2 + var_b * n + delta**2 * (count * n / total)
            count = total
        return mean, m2 / count

    def _cnn(self, samples: torch.Tensor, group_stats) -> torch.Tensor:
        """(n,) samples -> (frames, conv_dim); the first GroupNorm uses the whole song's statistics."""
        hidden = samples[None, None]
        for index, layer in enumerate(self.model.feature_extractor.conv_layers):
            if index > 0 or group_stats is None:
                hidden = layer(hidden)
                continue
            norm = layer.layer_norm
            if not isinstance(norm, torch.nn.GroupNorm) or norm.num_groups != norm.num_channels:
                raise RuntimeError("AudioEncoder: expected a per-channel GroupNorm in the first conv layer")
            hidden = layer.conv(hidden)
            mean, var = (t.to(hidden.device) for t in group_stats)
            scale = norm.weight.double() * (var + norm.eps).rsqrt()
            shift = norm.bias.double() - mean * scale
            compute = hidden.dtype if hidden.dtype in (torch.float32, torch.float64) else torch.float32
            normed = hidden.to(compute).mul_(scale.to(compute)[:, None]).add_(shift.to(compute)[:, None])
            hidden = layer.activation(normed.to(samples.dtype))
        return hidden[0].transpose(0, 1)

    def _transformer(self, frames: torch.Tensor, layers: str) -> torch.Tensor:
        """(n, conv_dim) -> (n, R, D): feature projection, transformer; layers 1..L or the last."""
        projected = self.model.feature_projection(frames[None])
        if isinstance(projected, tuple):  # wav2vec2 also returns the normed CNN features
            projected = projected[0]
        if layers != "all":
            return self.model.encoder(projected, return_dict=True).last_hidden_state[0][:, None]
        # Layer outputs are caught with forward hooks rather than ``output_hidden_states``: transformers 5
        # no longer fills ``hidden_states`` when the encoder submodule is called on its own, and for the
        # stable-layer-norm models (wav2vec2 large-lv60, HuBERT large) its last entry became the raw output
        # of the last layer. Both versions' ``last_hidden_state`` is the last layer after the encoder's
        # final LayerNorm, which is what transformers 4.x (Hallo's and ER-NeRF's) gave as the last state.
        caught: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda _module, _args, out: caught.append(
            out[0] if isinstance(out, tuple) else out)) for layer in self.model.encoder.layers[:-1]]
        try:
            last = self.model.encoder(projected, return_dict=True).last_hidden_state
        finally:
            for hook in hooks:
                hook.remove()
        return torch.stack([*caught, last], dim=2)[0]


# ---- Wav2Lip mel ----------------------------------------------------------------------------------
class MelEncoder:
    """Wav2Lip's audio front end ("mel-80", no weights) with SyncNet's 16-frame windows.

    16 kHz; preemphasis y[n] = x[n] - 0.97 x[n-1]; STFT n_fft 800, hop 200, Hann window 800, centred
    with reflect padding (librosa 0.7, which Wav2Lip pins); 80 Slaney mel bins 55..7600 Hz with Slaney
    area normalisation (librosa's default filterbank = torchaudio ``melscale_fbanks(norm="slaney",
    mel_scale="slaney")``, built in float32); 20 log10(max(1e-5, mel)) - 20 dB; mapped to [-4, 4] with
    min_level_db -100 and clipped. Chunked exactly (each STFT frame only reads its own 800 samples).

    Args:
        dtype: float32 (default) or float64 for the computation and output (half types: computed in
            float32, returned in that dtype).
        device: where the STFT runs.
    """

    name = MEL_ENCODER_NAME
    kind = "mel"
    sample_rate = ENCODER_SAMPLE_RATE
    n_fft, hop_length, win_length = 800, 200, 800
    n_mels, f_min, f_max = 80, 55.0, 7600.0
    preemphasis = 0.97
    ref_level_db, min_level_db, max_abs_value = 20.0, -100.0, 4.0
    window_frames = 16  # mel frames per video frame window (0.2 s)
    mel_rate = 80  # mel frames per second = 16000 / 200

    def __init__(self, *, dtype: torch.dtype = torch.float32, device="cpu"):
        if not dtype.is_floating_point:
            raise ValueError(f"MelEncoder: dtype must be floating point, got {dtype}")
        self.dtype, self.device = dtype, torch.device(device)
        self._compute = torch.float64 if dtype == torch.float64 else torch.float32
        self._filterbank = None

    def __repr__(self) -> str:
        return f"MelEncoder({self.name!r}, dtype={self.dtype}, device={self.device})"

    def to(self, device=None, dtype: torch.dtype | None = None) -> MelEncoder:
        """Same encoder on another device / dtype (returns a new one; there are no weights)."""
        return MelEncoder(dtype=dtype or self.dtype, device=device or self.device)

    def filterbank(self) -> torch.Tensor:
        """(n_fft // 2 + 1, 80) = (401, 80) Slaney mel filterbank (torchaudio, librosa-compatible)."""
        if self._filterbank is None:
            from .dsp import mel_filterbank

            bank = mel_filterbank(self.n_fft // 2 + 1, self.f_min, self.f_max, self.n_mels, self.sample_rate,
                                  norm="slaney", mel_scale="slaney")
            self._filterbank = bank.to(device=self.device, dtype=self._compute)
        return self._filterbank

    def num_mel_frames(self, num_samples: int) -> int:
        """Frames of the centred STFT: 1 + T // 200."""
        return 1 + int(num_samples) // self.hop_length

    def mel_spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """(T,) float audio at 16 kHz -> (1 + T // 200, 80) normalised log-mel (whole song at once)."""
        if waveform.ndim != 1 or waveform.shape[0] == 0:
            raise ValueError(f"MelEncoder.mel_spectrogram: need (T,) audio, got {tuple(waveform.shape)}")
        song = _Song(waveform, 0, waveform.shape[0], 0.0, 1.0, Fraction(25))
        return self._mel_frames(song, 0, self.num_mel_frames(waveform.shape[0])).to(self.dtype)

    def encode(self, waveform: torch.Tensor, sample_rate: int, fps, *, layers: str = "all",
               interpolate: str = "hallo", steps_per_frame: int = 1, chunk_seconds: float = 30.0,
               context_seconds: float = 2.0, pad_frames_to_multiple: int = 0, allow_silence: bool = False,
               progress: Progress | None = None) -> SingerAudioFeatures:
        """Encode a song into (F, 16, 80) mel windows (rows="steps"), one per video frame.

        Same signature as :meth:`AudioEncoder.encode`; ``layers``, ``interpolate`` and
        ``context_seconds`` do not apply (the mel is exact per chunk); ``steps_per_frame`` must be 1.
        Padding frames append zero samples. Window i starts at mel frame floor(80 i / fps) (Wav2Lip's
        rule, exact), clamped to the last 16 frames.
        """
        who = "MelEncoder.encode"
        if steps_per_frame != 1:
            raise ValueError(f"{who}: steps_per_frame must be 1 (a mel window already has 16 steps)")
        song = _prepare(who, waveform, sample_rate, fps, pad_frames_to_multiple, allow_silence,
                        self.sample_rate, variance=False)  # the mel does not normalise the song
        num_mel = self.num_mel_frames(song.num_samples)
        starts = mel_window_starts(num_mel, song.frames, song.fps, self.mel_rate, self.window_frames)
        plan = plan_chunks(song.num_samples, self.sample_rate, song.fps, chunk_seconds, 0.0,
                           hop=self.hop_length, receptive_field=self.n_fft, num_frames=song.frames)
        out = torch.empty((song.frames, self.window_frames, self.n_mels), dtype=self.dtype)
        offsets = torch.arange(self.window_frames)
        with torch.inference_mode():
            for chunk in plan:
                first = starts[chunk.frame_start:chunk.frame_stop]
                low, high = int(first[0]), int(first[-1]) + self.window_frames
                mel = self._mel_frames(song, low, min(high, num_mel)).cpu()
                if high > num_mel:  # a song shorter than one window: pad with silence (-4)
                    mel = torch.cat([mel, mel.new_full((high - num_mel, self.n_mels), -self.max_abs_value)])
                out[chunk.frame_start:chunk.frame_stop].copy_(mel[(first - low)[:, None] + offsets[None]])
                _report(progress, chunk.index + 1, len(plan))
        return SingerAudioFeatures(out, fps=float(song.fps), encoder=self.name, sample_rate=self.sample_rate,
                                   num_samples=song.num_samples, rows="steps")

    def _mel_frames(self, song: _Song, first: int, stop: int) -> torch.Tensor:
        """Normalised log-mel frames [first, stop) of the centred STFT, (stop - first, 80)."""
        # 1. the preemphasised samples these frames read, reflect-padded at the song's ends
        half, length = self.n_fft // 2, song.num_samples
        begin, end = first * self.hop_length - half, (stop - 1) * self.hop_length + half
        lo, hi = max(begin, 0), min(end, length)
        left, right = lo - begin, end - hi
        if left < hi - lo and right < hi - lo:
            raw = _read(song, lo - 1, hi, False, self._compute, self.device)
            signal = raw[1:] - self.preemphasis * raw[:-1]  # lfilter([1, -0.97], [1]): y[0] = x[0]
            if left or right:
                signal = torch.nn.functional.pad(signal[None, None], (left, right), mode="reflect")[0, 0]
        else:  # a song shorter than the padding: reflect repeatedly, as numpy's "reflect" does
            index = torch.arange(begin, end)
            if length == 1:
                index = torch.zeros_like(index)
            else:
                period = 2 * (length - 1)
                index = index.remainder(period)
                index = torch.where(index >= length, period - index, index)
            raw = _read(song, -1, length, False, self._compute, self.device)
            signal = (raw[1:] - self.preemphasis * raw[:-1])[index.to(self.device)]
        # 2. |STFT| -> mel -> dB -> [-4, 4]
        window = torch.hann_window(self.win_length, periodic=True, dtype=self._compute, device=self.device)
        spectrum = torch.stft(signal, self.n_fft, self.hop_length, self.win_length, window=window,
                              center=False, return_complex=True).abs()
        mel = self.filterbank().T @ spectrum
        decibels = 20.0 * torch.log10(mel.clamp_min(10.0 ** (self.min_level_db / 20.0))) - self.ref_level_db
        scaled = (2 * self.max_abs_value * (decibels - self.min_level_db) / -self.min_level_db
                  - self.max_abs_value)
        return scaled.clamp_(-self.max_abs_value, self.max_abs_value).T
