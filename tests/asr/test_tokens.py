"""Mixed Chinese-Latin text: the same units in tokens.txt, the lexicon, L and the CTC targets.

The path a transcript takes in the AISHELL recipe: supervision (prepare) → LM/lexicon text
(export_text) → lang dir (prepare_lang) → training targets (Tokenizer on the supervision text).
"""

import k2
import pytest
from lhotse import SupervisionSegment, SupervisionSet

from w2v.asr.tokens import Tokenizer
from w2v.bin.export_text import transcript_lines
from w2v.data.text import mandarin_text, normalize_mandarin
from w2v.lang.lexicon import load_fsa, prepare_lang, read_lexicon
from w2v.lang.symbols import read_symbol_table

# As an AISHELL-style transcript may have them: full-width letters, lower case, punctuation.
RAW = [
    "我 喜欢 去 ＫＴＶ 唱歌",
    "卡拉ok 很 好玩。",
    "他 用 iPhone 听 音乐",
    "HELLO WORLD 你好！",
    "我们 去 KTV 唱 卡拉OK",
]


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    """(lang dir, supervision texts) built the way the recipe builds them."""
    d = tmp_path_factory.mktemp("mixed")
    # prepare_aishell: words normalised, text without word spaces (kept between Latin runs)
    sups = [
        SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0.0, duration=1.0, language="Chinese",
                           text=mandarin_text(raw), custom={"words": normalize_mandarin(raw)})
        for i, raw in enumerate(RAW)
    ]
    SupervisionSet.from_segments(sups).to_file(d / "sups.jsonl.gz")
    lang = d / "lang_char"
    lang.mkdir()
    (lang / "transcript_words.txt").write_text(
        "\n".join(transcript_lines([str(d / "sups.jsonl.gz")], words=True)) + "\n", encoding="utf-8")
    prepare_lang(lang, "char")
    return lang, [s.text for s in sups]


def test_latin_runs_are_single_units_everywhere(lang):
    lang_dir, texts = lang
    assert texts[0] == "我喜欢去KTV唱歌" and texts[3] == "HELLO WORLD你好"
    words = (lang_dir / "transcript_words.txt").read_text(encoding="utf-8").splitlines()
    assert words[1] == "卡拉OK 很 好玩" and words[2] == "他 用 IPHONE 听 音乐"
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    assert {"KTV", "OK", "IPHONE", "HELLO", "WORLD"} <= set(tokens)
    assert not {"K", "T", "V", "ＫＴＶ", "ktv", "。", "！"} & set(tokens)
    lexicon = dict(read_lexicon(lang_dir / "lexicon.txt"))
    assert lexicon["KTV"] == ["KTV"]
    assert lexicon["卡拉OK"] == ["卡", "拉", "OK"]
    assert lexicon["OK"] == ["OK"]  # spelled units are words too (open vocabulary)


def test_training_targets_are_the_lexicon_spelling(lang):
    lang_dir, texts = lang
    tok = Tokenizer(lang_dir, "char")
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    lexicon = dict(read_lexicon(lang_dir / "lexicon.txt"))
    for raw, text in zip(RAW, texts):
        from_lexicon = [tokens[u] for w in normalize_mandarin(raw).split() for u in lexicon[w]]
        assert tok.encode([text]) == [from_lexicon], text
        assert tokens["<unk>"] not in from_lexicon
        assert tok.encode([raw]) == [from_lexicon]  # the raw form too: the tokenizer normalises
        assert tok.decode(from_lexicon) == text


def test_L_reads_the_training_targets_as_the_words(lang):
    lang_dir, texts = lang
    tok = Tokenizer(lang_dir, "char")
    words = read_symbol_table(lang_dir / "words.txt")
    L = k2.arc_sort(load_fsa(lang_dir / "L.pt"))
    for raw, text in zip(RAW, texts):
        ids = tok.encode([text])[0]
        readings = k2.arc_sort(k2.invert(k2.intersect(L, k2.linear_fsa(ids), treat_epsilons_specially=True)))
        # the transcript's own words are one reading of its targets
        spoken = k2.linear_fsa([words[w] for w in normalize_mandarin(raw).split()])
        assert k2.connect(k2.intersect(readings, spoken, treat_epsilons_specially=True)).num_arcs > 0, text


def test_unknown_units_map_to_one_unk(lang):
    lang_dir, _ = lang
    tok = Tokenizer(lang_dir, "char")
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    unk = tokens["<unk>"]
    # an unseen Latin run is one unknown unit, not one per letter; an unseen character is one too
    assert tok.encode(["我喜欢XYZ"]) == [[tokens["我"], tokens["喜"], tokens["欢"], unk]]
    assert tok.encode(["南京"]) == [[unk, unk]]
    assert tok.encode(["ktv，ＫＴＶ"]) == [[tokens["KTV"], tokens["KTV"]]]
