"""Text-to-speech for DAMC's inference-enhanced TTS module (§2.3): text -> acoustic model -> mel -> vocoder ->
waveform, through transformers (SpeechT5 acoustic model + SpeechT5 HiFi-GAN vocoder; or VITS, which goes to
the waveform in one network, its mel then computed with Wav2Lip's front end).

DAMC feeds the mel to the Dynamic-Sync Encoder and the resampled waveform to the content encoder. Our E_d
reads Wav2Lip's mel windows (``MelEncoder``, 80 Hz); SpeechT5's own mel (log10, 62.5 Hz) differs in scale and
hop, so the pipeline re-encodes the waveform with ``MelEncoder``; :attr:`TtsResult.mel` is the model's native
mel.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SUPPORTED_TTS = ("speecht5", "vits")  # transformers model_type values load_tts understands
DEFAULT_SPEECHT5_VOCODER = (
    "microsoft/speecht5_hifigan"  # used when a SpeechT5 folder has no vocoder/ subfolder
)
VOCODER_SUBFOLDER = "vocoder"
SPEAKER_FILE = "speaker_embedding.safetensors"  # optional default x-vector (key "speaker_embedding", (D,))


@dataclasses.dataclass(frozen=True, eq=False)
class TtsResult:
    """One synthesized utterance."""

    waveform: torch.Tensor  # (1, T) float32 mono audio at sample_rate
    sample_rate: int  # Hz of waveform
    mel: torch.Tensor  # (frames, bins) float32: the acoustic model's mel (SpeechT5) or Wav2Lip's (VITS)
    mel_fps: float  # mel frames per second (SpeechT5: 62.5; Wav2Lip mel-80: 80)
    mel_kind: str  # "speecht5-log10" or "wav2lip-mel-80"

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


def _missing(who: str, source: str, error: Exception, local_files_only: bool, cache_dir) -> Exception:
    where = f"cache_dir={cache_dir}" if cache_dir else "the Hugging Face cache (HF_HOME)"
    how = (
        f"download it once (huggingface-cli download {source}) or pass local_files_only=False"
        if local_files_only
        else "check the id and your connection"
    )
    reason = str(error).splitlines()[0] if str(error) else ""
    return FileNotFoundError(
        f"{who}: cannot load '{source}' ({type(error).__name__}: {reason}). Give a local folder with "
        f"config.json, the weights and the tokenizer files, or a hub id present in {where}: {how}."
    )


class TextToSpeech:
    """A loaded TTS model; call :meth:`synthesize`.

    Args:
        kind: "speecht5" or "vits".
        model: the transformers model (SpeechT5ForTextToSpeech or VitsModel), in eval mode.
        tokenizer: its tokenizer (SpeechT5Tokenizer — the text half of SpeechT5Processor — or VitsTokenizer).
        vocoder: SpeechT5HifiGan for "speecht5", None for "vits".
        source: where it was loaded from (for messages).
        speaker_embedding: default (D,) speaker x-vector for SpeechT5 (None: zeros).
    """

    def __init__(
        self,
        kind: str,
        model,
        tokenizer,
        vocoder=None,
        *,
        source: str = "",
        speaker_embedding: torch.Tensor | None = None,
    ):
        if kind not in SUPPORTED_TTS:
            raise ValueError(f"TextToSpeech: kind must be one of {SUPPORTED_TTS}, got {kind!r}")
        if kind == "speecht5" and vocoder is None:
            raise ValueError("TextToSpeech: a SpeechT5 acoustic model needs a vocoder (SpeechT5HifiGan)")
        self.kind, self.model, self.tokenizer, self.vocoder = kind, model, tokenizer, vocoder
        self.source, self.speaker_embedding = source, speaker_embedding

    def __repr__(self) -> str:
        return f"TextToSpeech({self.kind}, '{self.source}', sample_rate={self.sample_rate})"

    @property
    def sample_rate(self) -> int:
        config = self.vocoder.config if self.kind == "speecht5" else self.model.config
        return int(config.sampling_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _token_ids(self, text: str) -> torch.Tensor:
        who = f"TextToSpeech({self.source}).synthesize"
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{who}: text is empty; give at least one word to speak")
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        special = {
            self.tokenizer.unk_token_id,
            self.tokenizer.pad_token_id,
            self.tokenizer.eos_token_id,
            self.tokenizer.bos_token_id,
        } - {None}
        pieces = self.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        # sentencepiece's word-boundary piece alone is not speech either
        speakable = [
            p for i, p in zip(ids[0].tolist(), pieces, strict=True) if i not in special and p.strip("\u2581 ")
        ]
        if not speakable:
            raise ValueError(
                f"{who}: {text[:40]!r} has no characters this model can speak (its vocabulary has "
                f"{len(self.tokenizer)} tokens; e.g. an English model cannot read Chinese): use a TTS "
                "model for the text's language or romanize the text"
            )
        limit = getattr(self.model.config, "max_text_positions", None)
        if limit is not None and ids.shape[1] > limit:
            raise ValueError(
                f"{who}: the text is {ids.shape[1]} tokens, the model reads at most {limit}; split it "
                "into sentences and synthesize them one by one"
            )
        return ids.to(self.device)

    def _speaker(self, speaker_embedding: torch.Tensor | None) -> torch.Tensor:
        size = int(self.model.config.speaker_embedding_dim)
        embedding = speaker_embedding if speaker_embedding is not None else self.speaker_embedding
        if embedding is None:
            logger.warning(
                "TextToSpeech(%s): no speaker embedding given; using zeros (a flat, generic voice). "
                "Pass a (%d,) x-vector or put %s in the model folder",
                self.source,
                size,
                SPEAKER_FILE,
            )
            embedding = torch.zeros(size)
        embedding = torch.as_tensor(embedding).reshape(1, -1)
        if embedding.shape[1] != size:
            raise ValueError(
                f"TextToSpeech: speaker_embedding has {embedding.shape[1]} values, the model expects "
                f"{size} (an x-vector from the model's speaker encoder)"
            )
        return embedding.to(self.device, self.dtype)

    @torch.no_grad()
    def synthesize(
        self, text: str, *, speaker_embedding: torch.Tensor | None = None, seed: int = 0
    ) -> TtsResult:
        """Speak ``text``.

        Args:
            text: the words (in the model's language).
            speaker_embedding: SpeechT5 only: (D,) or (1, D) speaker x-vector (default: the
                folder's or zeros).
            seed: seeds SpeechT5's always-on prenet dropout and VITS's noise (the global RNG is
                left untouched).
        Returns:
            :class:`TtsResult`.
        """
        ids = self._token_ids(text)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if self.kind == "speecht5":
                # 1. acoustic model: text -> mel (frames, bins); 2. vocoder: mel -> waveform
                mel = self.model.generate_speech(ids, speaker_embeddings=self._speaker(speaker_embedding))
                waveform = self.vocoder(mel.to(next(self.vocoder.parameters()).dtype))
                hop = math.prod(self.vocoder.config.upsample_rates)
                mel_fps, mel_kind = self.sample_rate / hop, "speecht5-log10"
            else:
                waveform = self.model(input_ids=ids).waveform[0]
                mel = None
        waveform = waveform.reshape(1, -1).float().cpu()
        if waveform.shape[1] == 0 or not bool(torch.isfinite(waveform).all()):
            raise RuntimeError(
                f"TextToSpeech({self.source}): the model produced no usable audio for {text[:40]!r} "
                "(empty or non-finite); run it in float32 or try another seed"
            )
        if mel is None:
            from .encoders import MelEncoder
            from .io import resample

            encoder = MelEncoder()
            mel = encoder.mel_spectrogram(resample(waveform[0], self.sample_rate, encoder.sample_rate))
            mel_fps, mel_kind = float(encoder.mel_rate), "wav2lip-mel-80"
        return TtsResult(
            waveform=waveform,
            sample_rate=self.sample_rate,
            mel=mel.float().cpu(),
            mel_fps=float(mel_fps),
            mel_kind=mel_kind,
        )


def _read_speaker(folder: Path) -> torch.Tensor | None:
    path = folder / SPEAKER_FILE
    if not path.is_file():
        return None
    from ..io.checkpoint import load_tensors

    tensors = load_tensors(path)
    if "speaker_embedding" not in tensors:
        raise ValueError(f"load_tts: '{path}' has no 'speaker_embedding' tensor (found {sorted(tensors)})")
    return tensors["speaker_embedding"].float().reshape(-1)


def load_tts(
    source: str | os.PathLike,
    *,
    vocoder: str | os.PathLike | None = None,
    local_files_only: bool = True,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TextToSpeech:
    """Load a transformers TTS model (SpeechT5 + HiFi-GAN, or VITS / MMS-TTS) from a folder or a hub id.

    Args:
        source: local folder (config.json, weights, tokenizer files) or hub id, e.g. "microsoft/speecht5_tts"
            or "facebook/mms-tts-eng".
        vocoder: SpeechT5 only: folder or hub id of a SpeechT5HifiGan; None uses ``source/vocoder/`` when
            present,
            else "microsoft/speecht5_hifigan".
        local_files_only: True (default) never downloads; False lets transformers fetch missing hub files.
        cache_dir: Hugging Face cache folder (None: the default cache).
        device, dtype: where and in which precision to run (float32 recommended on CPU).
    Returns:
        :class:`TextToSpeech`.
    """
    import transformers

    name = str(source)
    folder = Path(name).expanduser()
    if (os.path.isabs(name) or name.startswith((".", "~"))) and not folder.is_dir():
        raise FileNotFoundError(
            f"load_tts: no folder at '{folder}'; give a folder with the TTS model's "
            "config.json, weights and tokenizer files, or a hub id such as 'microsoft/speecht5_tts'"
        )
    kwargs = dict(local_files_only=local_files_only, cache_dir=None if cache_dir is None else str(cache_dir))
    where = str(folder) if folder.is_dir() else name
    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as error:
        raise _missing("load_tts", name, error, local_files_only, cache_dir) from error
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_TTS:
        raise ValueError(
            f"load_tts: '{name}' is a '{kind}' model; supported TTS models are {SUPPORTED_TTS} "
            "(e.g. microsoft/speecht5_tts, facebook/mms-tts-eng)"
        )
    try:
        if kind == "speecht5":
            try:
                import sentencepiece  # noqa: F401
            except ImportError as error:
                raise ImportError(
                    "load_tts: SpeechT5's tokenizer needs the 'sentencepiece' package: "
                    "pip install sentencepiece (or use a VITS model, which does not)"
                ) from error
            tokenizer = transformers.SpeechT5Tokenizer.from_pretrained(where, **kwargs)
            model = transformers.SpeechT5ForTextToSpeech.from_pretrained(where, **kwargs)
            if vocoder is None:
                vocoder = (
                    folder / VOCODER_SUBFOLDER
                    if (folder / VOCODER_SUBFOLDER).is_dir()
                    else DEFAULT_SPEECHT5_VOCODER
                )
            try:
                vocoder_model = transformers.SpeechT5HifiGan.from_pretrained(str(vocoder), **kwargs)
            except (OSError, ValueError) as error:
                raise _missing(
                    "load_tts (vocoder)", str(vocoder), error, local_files_only, cache_dir
                ) from error
            vocoder_model = vocoder_model.to(device=device, dtype=dtype).eval()
        else:
            tokenizer = transformers.VitsTokenizer.from_pretrained(where, **kwargs)
            model = transformers.VitsModel.from_pretrained(where, **kwargs)
            vocoder_model = None
    except OSError as error:
        raise _missing("load_tts", name, error, local_files_only, cache_dir) from error
    model = model.to(device=device, dtype=dtype).eval()
    speaker = _read_speaker(folder) if folder.is_dir() else None
    logger.info("load_tts: loaded %s model from '%s'", kind, name)
    return TextToSpeech(kind, model, tokenizer, vocoder_model, source=name, speaker_embedding=speaker)
