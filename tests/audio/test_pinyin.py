"""Pinyin simplification (DAMC §3.5): units from pypinyin's own styles as the reference, CTC mapping rules."""

import numpy as np
import pytest
import torch

pypinyin = pytest.importorskip("pypinyin")

from singer_core.audio.pinyin import (  # noqa: E402
    FINAL_UNITS,
    INITIAL_UNITS,
    PINYIN_INDEX,
    PINYIN_VOCAB,
    map_ctc_logits_to_pinyin,
    text_to_pinyin_units,
)

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "你", "好", "中", "爱", "女", "a", "7", "行", "嗯"]


def _reference_units(character):
    """pypinyin's own Style.INITIALS / Style.FINALS (strict=False) for one character."""
    initial = pypinyin.lazy_pinyin(character, style=pypinyin.Style.INITIALS, strict=False)[0]
    final = pypinyin.lazy_pinyin(character, style=pypinyin.Style.FINALS, strict=False)[0]
    return f"{initial or '0'}-", f"-{final}"


def test_vocabulary_layout():
    assert len(PINYIN_VOCAB) == len(set(PINYIN_VOCAB)) == 65
    assert PINYIN_VOCAB[:2] == ("<blank>", "<other>")
    assert len(INITIAL_UNITS) == 24 and len(FINAL_UNITS) == 39
    assert {"y-", "w-", "zh-", "0-"} <= set(INITIAL_UNITS) and {"-v", "-iong", "-er"} <= set(FINAL_UNITS)


def test_known_characters_match_pypinyin_styles():
    text = "中国女儿爱唱歌，我们去玩吧！"
    han = [c for c in text if c not in "，！"]
    expected = [unit for c in han for unit in _reference_units(c)]
    assert text_to_pinyin_units(text) == expected
    assert text_to_pinyin_units("中") == ["zh-", "-ong"]
    assert text_to_pinyin_units("女") == ["n-", "-v"]
    assert text_to_pinyin_units("爱") == ["0-", "-ai"]
    assert text_to_pinyin_units("hello, 123 !") == []
    assert text_to_pinyin_units("银行")[2:] == ["h-", "-ang"]  # phrase context picks hang, not xing


def test_every_dictionary_reading_is_in_the_vocabulary():
    from pypinyin.pinyin_dict import pinyin_dict

    units = set()
    for code in list(pinyin_dict)[::7]:  # a seventh of the ~41k characters keeps it fast
        for syllable in pypinyin.pinyin(chr(code), style=pypinyin.Style.NORMAL, heteronym=True)[0]:
            initial = pypinyin.style.convert(syllable, pypinyin.Style.INITIALS, strict=False)
            final = pypinyin.style.convert(syllable, pypinyin.Style.FINALS, strict=False)
            units.update({f"{initial or '0'}-", f"-{final}"})
    assert units <= set(PINYIN_VOCAB), sorted(units - set(PINYIN_VOCAB))


def _reference_map(logits, vocab, reduce):
    """float64 numpy loop: softmax, then sum/max of token probabilities per pypinyin unit."""
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    out = np.zeros((logits.shape[0], len(PINYIN_VOCAB)))
    for v, token in enumerate(vocab):
        if token == "<pad>":
            units = ["<blank>"]
        elif pypinyin.lazy_pinyin(token, errors="ignore"):
            units = _reference_units(token)
        else:
            units = ["<other>"]
        for unit in units:
            column = PINYIN_INDEX[unit]
            if reduce == "sum":
                out[:, column] += probs[:, v]
            else:
                out[:, column] = np.maximum(out[:, column], probs[:, v])
    return out


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_ctc_mapping_matches_reference(reduce):
    logits = torch.randn(6, len(VOCAB), generator=torch.Generator().manual_seed(0)) * 3
    got = map_ctc_logits_to_pinyin(logits, VOCAB, reduce=reduce)
    assert got.shape == (6, 65) and got.dtype == torch.float32
    np.testing.assert_allclose(
        got.double().numpy(), _reference_map(logits.numpy(), VOCAB, reduce), rtol=1e-5, atol=1e-7
    )
    log = map_ctc_logits_to_pinyin(logits.double(), VOCAB, reduce=reduce, log=True)
    np.testing.assert_allclose(log.exp().numpy(), _reference_map(logits.numpy(), VOCAB, reduce), rtol=1e-10)


def test_sum_rule_and_blank_handling():
    logits = torch.randn(4, len(VOCAB), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    units = map_ctc_logits_to_pinyin(logits, VOCAB)
    probs = logits.softmax(-1)
    blank, other = units[:, PINYIN_INDEX["<blank>"]], units[:, PINYIN_INDEX["<other>"]]
    torch.testing.assert_close(blank, probs[:, 0])
    torch.testing.assert_close(other, probs[:, [1, 2, 3, 4, 10, 11]].sum(-1))
    initials = units[:, [PINYIN_INDEX[u] for u in INITIAL_UNITS]].sum(-1)
    finals = units[:, [PINYIN_INDEX[u] for u in FINAL_UNITS]].sum(-1)
    torch.testing.assert_close(blank + other + initials, torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(blank + other + finals, torch.ones(4, dtype=torch.float64))
    # a confident blank frame stays blank; an explicit blank token is honoured
    sharp = torch.full((1, len(VOCAB)), -30.0)
    sharp[0, 0] = 30.0
    assert map_ctc_logits_to_pinyin(sharp, VOCAB)[0, 0] > 0.999
    explicit = map_ctc_logits_to_pinyin(logits, VOCAB, blank="|")
    torch.testing.assert_close(explicit[:, 0], probs[:, 4])
    with pytest.raises(ValueError, match="no CTC blank"):
        map_ctc_logits_to_pinyin(logits[:, 1:], VOCAB[1:])
    with pytest.raises(ValueError, match="14 tokens"):
        map_ctc_logits_to_pinyin(logits[:, :5], VOCAB)


def test_heteronyms_spread_over_all_readings():
    logits = torch.zeros(1, len(VOCAB))
    logits[0, VOCAB.index("行")] = 20.0
    default = map_ctc_logits_to_pinyin(logits, VOCAB)
    every = map_ctc_logits_to_pinyin(logits, VOCAB, heteronyms=True)
    assert default[0, PINYIN_INDEX["x-"]] > 0.99 and default[0, PINYIN_INDEX["h-"]] < 1e-3
    for unit in ("x-", "h-", "-ing", "-ang"):
        assert every[0, PINYIN_INDEX[unit]] > 0.99
