"""Mandarin words and characters outside the training vocabulary, through the HLG methods.

A word the transcripts never had, made of known characters, is spelled with the lexicon's
single-character words; a character outside tokens.txt cannot be output, and decoding it must
neither crash nor hide it: the scorer counts it as an error, the rest of the sentence as correct.
"""

import pytest

from tests.helpers import peaky_log_probs
from w2v.data.text import mandarin_text, mandarin_units
from w2v.decode.ctc import SearchOptions, decode_log_probs, load_graphs
from w2v.lang.arpa import train_arpa
from w2v.lang.graph import compile_graphs
from w2v.lang.lexicon import WORD_SPECIALS, prepare_lang
from w2v.lang.symbols import read_symbol_table
from w2v.scoring.wer import error_stats

TRAIN = [
    "我们 去 北京", "他们 去 上海", "我 喜欢 北京", "他 喜欢 上海", "我们 喜欢 唱歌",
    "他们 在 北京 唱歌", "我 在 上海", "他 去 唱歌", "我们 在 家里", "他们 喜欢 家里",
] * 3
METHODS = ["ctc-greedy-search", "1best", "nbest", "nbest-rescoring", "whole-lattice-rescoring"]
OPTS = SearchOptions(lm_scales=(0.5, 1.0), num_paths=20)


def _build(work, spell_units):
    """Lang dir as the recipe builds it: the LM knows every word of words.txt (train_lm --words)."""
    lang, lm = work / "lang_char", work / "lm"
    lang.mkdir(parents=True)
    (lang / "transcript_words.txt").write_text("\n".join(TRAIN) + "\n", encoding="utf-8")
    prepare_lang(lang, "char", spell_units=spell_units)
    vocab = set(read_symbol_table(lang / "words.txt")) - set(WORD_SPECIALS)
    for order in (3, 4):
        train_arpa(lang / "transcript_words.txt", lm / f"{order}gram.arpa", order=order, vocab=vocab)
    compile_graphs(lang, lm)
    return lang, lm


@pytest.fixture(scope="module")
def open_vocab(tmp_path_factory):
    lang, lm = _build(tmp_path_factory.mktemp("open"), spell_units=True)
    return lang, load_graphs(lang, METHODS, lm)


def _decode(lang, graphs, units, sentence):
    """Peaky network output spelling ``units`` (token names) → (method key → CER stats)."""
    tokens = read_symbol_table(lang / "tokens.txt")
    ids = [tokens[u] for u in units if u != "<blk>"]
    log_probs, lengths = peaky_log_probs([ids], 1 + max(i for t, i in tokens.items() if not t.startswith("#")),
                                         num_confusable=3, seed=1)
    hyps = decode_log_probs(log_probs, lengths, METHODS, graphs, OPTS)
    ref = mandarin_text(sentence).split()
    return {(m if key == m else f"{m}/{key}"): error_stats([("utt", ref, h[0])], metric="cer")[0]
            for m, per_key in hyps.items() for key, h in per_key.items()}


def test_unseen_word_of_known_characters_is_spelled(open_vocab, tmp_path):
    lang, graphs = open_vocab
    sentence = "我们 去 上京"  # 上京: not a training word; 上 and 京 are known characters
    words = read_symbol_table(lang / "words.txt")
    assert "上京" not in words and {"上", "京"} <= set(words)
    stats = _decode(lang, graphs, mandarin_units(sentence), sentence)
    assert set(stats) >= {"ctc-greedy-search", "1best/lm_scale_0.5", "1best/lm_scale_1.0", "nbest",
                          "whole-lattice-rescoring/lm_scale_1.0"}
    for key, s in stats.items():
        assert (s.ref_len, s.errors) == (5, 0), key

    # A closed vocabulary (training words only) cannot say it: the HLG methods must err.
    closed_lang, closed_lm = _build(tmp_path, spell_units=False)
    closed = _decode(closed_lang, load_graphs(closed_lang, METHODS, closed_lm), mandarin_units(sentence), sentence)
    assert closed["ctc-greedy-search"].errors == 0
    assert closed["1best/lm_scale_1.0"].errors > 0


@pytest.mark.parametrize("at_oov", ["<blk>", "海", "<unk>"])
def test_out_of_vocabulary_character_is_one_error(open_vocab, at_oov):
    """What the network says where the unknown 南 is: nothing it knows (blank), a known character,
    or <unk> (a model trained with <unk> targets; the HLG outputs the word <UNK> for it)."""
    lang, graphs = open_vocab
    sentence = "我们 去 南京"  # 南 is in no training transcript: not in tokens.txt
    assert "南" not in read_symbol_table(lang / "tokens.txt")
    units = [at_oov if u == "南" else u for u in mandarin_units(sentence)]
    for key, s in _decode(lang, graphs, units, sentence).items():
        # Exactly one reference character is wrong (deleted, or replaced: the LM may prefer 北京).
        assert (s.ref_len, s.dels + s.subs, s.ins) == (5, 1, 0), key  # <UNK>: one scoring unit
