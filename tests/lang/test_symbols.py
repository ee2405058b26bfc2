"""tokens.txt: one reader, one answer to "which entries are disambiguation symbols"."""

import pytest

from w2v.asr.tokens import Tokenizer
from w2v.lang.graph import build_ctc_topo
from w2v.lang.lexicon import prepare_lang
from w2v.lang.symbols import is_disambig, max_token_id, read_symbol_table, read_tokens, write_symbol_table


def test_disambiguation_symbols_are_hash_digits_only():
    assert all(is_disambig(s) for s in ["#0", "#1", "#12"])
    assert not any(is_disambig(s) for s in ["#", "#A", "#5A", "C#", "<blk>", "▁#", "0"])


def test_model_output_size_and_h_agree_when_a_unit_starts_with_hash(tmp_path):
    """A unit spelled '#A' is a CTC output: the model's V and H's labels both count it. Before,
    the trainer stopped at '#<digits>' (V = 5) and the graph at any '#' (H up to id 3)."""
    lang = tmp_path / "lang_char"
    lang.mkdir()
    write_symbol_table(lang / "tokens.txt", ["<blk>", "<sos/eos>", "<unk>", "好", "#A", "#0", "#1"])
    tokens = read_tokens(lang / "tokens.txt")
    assert max_token_id(tokens) == 4
    assert Tokenizer(lang, token_type="char").num_tokens == 5
    assert int(build_ctc_topo(tokens).labels.max()) == 4


def test_read_tokens_wants_the_blank_first(tmp_path):
    path = tmp_path / "tokens.txt"
    write_symbol_table(path, ["<unk>", "<blk>", "a"])
    assert read_symbol_table(path) == {"<unk>": 0, "<blk>": 1, "a": 2}
    with pytest.raises(ValueError, match="'<blk>' must have id 0"):
        read_tokens(path)
    path.write_text("<blk> 0\na\n")
    with pytest.raises(ValueError, match=r"tokens.txt:2: expected 'symbol id'"):
        read_symbol_table(path)


def test_duplicates_and_units_spelled_like_disambiguation_symbols_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"duplicate symbols .*\['#0'\]"):
        write_symbol_table(tmp_path / "tokens.txt", ["<blk>", "#0", "a", "#0"])
    lang = tmp_path / "lang_char"
    lang.mkdir()
    # Mandarin normalisation drops the symbol: no char unit can be spelled '#<digits>'
    (lang / "transcript_words.txt").write_text("好 #1\n")
    prepare_lang(lang, "char")
    units = [s for s, i in read_symbol_table(lang / "tokens.txt").items() if not is_disambig(s)]
    assert units == ["<blk>", "<sos/eos>", "<unk>", "1", "好"]
