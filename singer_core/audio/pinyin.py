"""Mandarin vocabulary simplification (DAMC §3.5): characters -> pinyin initials and finals with pypinyin,
and a CTC character distribution mapped onto that ~65-unit pinyin vocabulary.

Units (no tones: the paper names initials and finals only, and tone barely changes the mouth shape):
``"<blank>"`` (CTC blank), ``"<other>"`` (tokens with no Chinese character: letters, digits, punctuation,
special tokens), 24 initials written with a trailing dash (``"b-"`` ... ``"zh-"``, including ``"y-"``/``"w-"``
as pypinyin writes them with ``strict=False``, and ``"0-"`` for a syllable with no initial, e.g. 爱 ai) and 39
finals written with a leading dash (``"-a"`` ... ``"-ong"``, ``"-v"`` = ü, plus the syllabic ``"-m"``,
``"-n"``, ``"-ng"``, ``"-g"`` and ``"-ê"`` of interjections), so that ``zh-`` + ``-ong`` reads 中 zhong.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

BLANK, OTHER, ZERO_INITIAL = "<blank>", "<other>", "0-"
PINYIN_INITIALS = (
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "x",
    "zh",
    "ch",
    "sh",
    "r",
    "z",
    "c",
    "s",
    "y",
    "w",
)  # 23 initials (pypinyin strict=False: y and w count as initials)
PINYIN_FINALS = (
    "a",
    "o",
    "e",
    "ê",
    "i",
    "u",
    "v",
    "er",
    "ai",
    "ei",
    "ao",
    "ou",
    "an",
    "en",
    "ang",
    "eng",
    "ong",
    "ia",
    "ie",
    "iao",
    "iu",
    "ian",
    "in",
    "iang",
    "ing",
    "iong",
    "ua",
    "uo",
    "uai",
    "ui",
    "uan",
    "un",
    "uang",
    "ue",
    "ve",
    "m",
    "n",
    "ng",
    "g",
)  # 39 finals (pypinyin Style.FINALS, strict=False; "v" = ü; m/n/ng/g: syllabic nasals of interjections)
PINYIN_VOCAB: tuple[str, ...] = (
    (BLANK, OTHER, ZERO_INITIAL)
    + tuple(f"{initial}-" for initial in PINYIN_INITIALS)
    + tuple(f"-{final}" for final in PINYIN_FINALS)
)  # 65 units: blank, other, 24 initials (with the zero initial), 39 finals
PINYIN_INDEX = {unit: index for index, unit in enumerate(PINYIN_VOCAB)}
INITIAL_UNITS = PINYIN_VOCAB[2 : 2 + 1 + len(PINYIN_INITIALS)]
FINAL_UNITS = PINYIN_VOCAB[3 + len(PINYIN_INITIALS) :]
BLANK_TOKENS = ("<pad>", "<blank>", "<blk>", "<ctc_blank>", "<eps>")  # tried in order when blank is None


def _pypinyin():
    try:
        import pypinyin
        import pypinyin.style
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "singer_core.audio.pinyin needs the 'pypinyin' package: pip install pypinyin"
        ) from error
    return pypinyin


def _syllable_units(syllable: str) -> tuple[str, str]:
    """'zhōng' -> ('zh-', '-ong'); 'ài' -> ('0-', '-ai'): a pypinyin Style.TONE syllable converted exactly as
    pypinyin's Style.INITIALS / Style.FINALS with strict=False do (syllabic 'ń' -> ('0-', '-n'))."""
    pypinyin = _pypinyin()
    initial = pypinyin.style.convert(syllable, pypinyin.Style.INITIALS, strict=False)
    final = pypinyin.style.convert(syllable, pypinyin.Style.FINALS, strict=False)
    units = (f"{initial or '0'}-", f"-{final}")
    for unit in units:
        if unit not in PINYIN_INDEX:
            raise ValueError(
                f"pinyin: syllable {syllable!r} gives unit {unit!r}, which is not in PINYIN_VOCAB; "
                "the installed pypinyin is newer than this table: report it"
            )
    return units


def text_to_pinyin_units(text: str) -> list[str]:
    """Pinyin units of the Chinese characters of ``text``, in order: initial then final of each character.

    Uses pypinyin's phrase dictionary, so heteronyms are read in context (银行 -> y- -in h- -ang). Characters
    without pinyin (letters, digits, punctuation, spaces) are skipped.

    Args:
        text: any string.
    Returns:
        list of units from :data:`PINYIN_VOCAB`, two per Chinese character.
    """
    if not isinstance(text, str):
        raise ValueError(f"text_to_pinyin_units: text must be a string, got {type(text).__name__}")
    pypinyin = _pypinyin()
    units: list[str] = []
    for syllable in pypinyin.lazy_pinyin(text, style=pypinyin.Style.TONE, errors="ignore"):
        units.extend(_syllable_units(syllable))
    return units


@functools.lru_cache(maxsize=8)
def _token_units(vocab: tuple[str, ...], blank_index: int, heteronyms: bool) -> tuple[tuple[int, ...], ...]:
    """For each pinyin unit, the vocabulary indices that map to it."""
    pypinyin = _pypinyin()
    members: list[list[int]] = [[] for _ in PINYIN_VOCAB]
    for index, token in enumerate(vocab):
        if index == blank_index:
            members[PINYIN_INDEX[BLANK]].append(index)
            continue
        units: set[str] = set()
        for character in token:
            readings = pypinyin.pinyin(
                character, style=pypinyin.Style.TONE, heteronym=heteronyms, errors="ignore"
            )
            for syllable in readings[0] if readings else ():
                units.update(_syllable_units(syllable))
        for unit in sorted(units) or [OTHER]:
            members[PINYIN_INDEX[unit]].append(index)
    return tuple(tuple(indices) for indices in members)


def _blank_index(vocab: Sequence[str], blank: str | None) -> int:
    if blank is not None:
        if blank not in vocab:
            raise ValueError(
                f"map_ctc_logits_to_pinyin: blank token {blank!r} is not in the vocabulary; give the "
                "CTC blank of your model (Hugging Face CTC models: the pad token, '<pad>')"
            )
        return list(vocab).index(blank)
    for candidate in BLANK_TOKENS:
        if candidate in vocab:
            return list(vocab).index(candidate)
    raise ValueError(
        f"map_ctc_logits_to_pinyin: no CTC blank found (looked for {BLANK_TOKENS}); pass blank= "
        "with the blank token of your model"
    )


def map_ctc_logits_to_pinyin(
    logits: torch.Tensor,
    vocab: Sequence[str],
    *,
    blank: str | None = None,
    reduce: str = "sum",
    heteronyms: bool = False,
    log: bool = False,
) -> torch.Tensor:
    """Map a CTC character distribution onto :data:`PINYIN_VOCAB` (DAMC §3.5).

    Rule: p = softmax(logits) over the vocabulary. Each token gets the units of its Chinese characters (the
    default reading of each character from pypinyin, or all readings with ``heteronyms=True``; a
    multi-character token gets the union over its characters); the blank token maps to ``<blank>``; tokens
    without any Chinese character (letters, digits, ``|``, ``<unk>``, ``<s>``...) map to ``<other>``. Then for
    every unit u
    P(u) = sum of p over the tokens mapping to u (``reduce="sum"``) or their max (``reduce="max"``); units no
    token maps to get 0. With single-character tokens and default readings every token has exactly one initial
    and one final, so under "sum" each row satisfies
    P(<blank>) + P(<other>) + sum(initials) = 1 = P(<blank>) + P(<other>) + sum(finals).

    Args:
        logits: (T, V) CTC logits (any real scores; softmax is taken over V).
        vocab: the V tokens, in logit order (e.g.
            ``sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)``).
        blank: the blank token; None tries ``<pad>`` (Hugging Face CTC), ``<blank>``, ``<blk>``,
            ``<ctc_blank>``, ``<eps>``.
        reduce: "sum" or "max".
        heteronyms: give a character the units of all its readings instead of its default one.
        log: return log-probabilities (computed with logsumexp, exact for tiny probabilities).
    Returns:
        (T, len(PINYIN_VOCAB)) float tensor in the dtype of ``logits`` (float32 for integer input).
    """
    if logits.ndim != 2:
        raise ValueError(f"map_ctc_logits_to_pinyin: logits must be (T, V), got {tuple(logits.shape)}")
    if logits.shape[1] != len(vocab):
        raise ValueError(
            f"map_ctc_logits_to_pinyin: logits have {logits.shape[1]} classes but the vocabulary has "
            f"{len(vocab)} tokens; pass the vocabulary of the model that made the logits"
        )
    if reduce not in ("sum", "max"):
        raise ValueError(f"map_ctc_logits_to_pinyin: reduce must be 'sum' or 'max', got {reduce!r}")
    members = _token_units(tuple(vocab), _blank_index(vocab, blank), bool(heteronyms))
    log_probs = torch.log_softmax(logits if logits.is_floating_point() else logits.float(), dim=-1)
    out = log_probs.new_full((logits.shape[0], len(PINYIN_VOCAB)), float("-inf"))
    for unit, indices in enumerate(members):
        if indices:
            chosen = log_probs[:, list(indices)]
            out[:, unit] = chosen.logsumexp(-1) if reduce == "sum" else chosen.amax(-1)
    return out if log else out.exp()
