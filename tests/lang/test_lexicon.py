import k2
import pytest

from tests.helpers import TOY_SENTENCES as SENTENCES
from w2v.lang.bpe import load_bpe, train_bpe
from w2v.lang.lexicon import (
    add_disambig_symbols,
    load_fsa,
    prepare_lang,
    read_lexicon,
    split_chars,
)
from w2v.lang.symbols import read_symbol_table


@pytest.fixture(scope="module")
def lang_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lang_bpe")
    (d / "transcript_words.txt").write_text("\n".join(SENTENCES) + "\n")
    train_bpe(d / "transcript_words.txt", d / "bpe.model", vocab_size=30)
    prepare_lang(d, "bpe")
    return d


def _lines(path):
    return [ln.split() for ln in path.read_text().splitlines()]


def test_words_txt_order(lang_dir):
    rows = _lines(lang_dir / "words.txt")
    assert [int(i) for _, i in rows] == list(range(len(rows)))
    symbols = [s for s, _ in rows]
    assert symbols[:2] == ["<eps>", "<UNK>"]
    assert symbols[-3:] == ["#0", "<s>", "</s>"]
    vocab = sorted({w for s in SENTENCES for w in s.split()})
    assert symbols[2:-3] == vocab


def test_tokens_txt_order(lang_dir):
    rows = _lines(lang_dir / "tokens.txt")
    assert [int(i) for _, i in rows] == list(range(len(rows)))
    sp = load_bpe(lang_dir / "bpe.model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    symbols = [s for s, _ in rows]
    assert symbols[: len(pieces)] == pieces
    assert symbols[0] == "<blk>"
    disambig = symbols[len(pieces):]
    assert disambig == [f"#{i}" for i in range(len(disambig))] and len(disambig) >= 1


def test_lexicon_matches_bpe(lang_dir):
    sp = load_bpe(lang_dir / "bpe.model")
    lexicon = dict(read_lexicon(lang_dir / "lexicon.txt"))
    assert lexicon["<UNK>"] == ["<unk>"]
    for word in ("THE", "THEY", "GREEN"):
        assert lexicon[word] == sp.encode(word, out_type=str)


def test_disambig_symbols():
    lex = [("AB", ["a", "b"]), ("A", ["a"]), ("X", ["x", "y"]), ("Y", ["x", "y"]), ("Z", ["z"])]
    out, max_id = add_disambig_symbols(lex)
    assert dict(out) == {"AB": ["a", "b"], "A": ["a", "#1"], "X": ["x", "y", "#1"],
                         "Y": ["x", "y", "#2"], "Z": ["z"]}
    assert max_id == 2


def _words_of_tokens(L, token_ids):
    """Word ids L outputs for a token sequence ([] if L rejects it)."""
    lin = k2.linear_fsa(token_ids)
    composed = k2.connect(k2.intersect(k2.arc_sort(L), lin, treat_epsilons_specially=True))
    if composed.num_arcs == 0:
        return None
    best = k2.shortest_path(k2.Fsa.from_fsas([composed]), use_double_scores=True)
    return [int(w) for w in best.aux_labels if w > 0]


@pytest.mark.parametrize("name", ["L.pt", "L_disambig.pt"])
def test_L_accepts_word_pieces(lang_dir, name):
    L = load_fsa(lang_dir / name)
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    lexicon = dict(read_lexicon(lang_dir / ("lexicon_disambig.txt" if "disambig" in name else "lexicon.txt")))
    seq = ["THEY", "SAW", "A", "GREEN", "CAT"]
    ids = [tokens[p] for w in seq for p in lexicon[w]]
    assert _words_of_tokens(L, ids) == [words[w] for w in seq]
    # Pieces of no word sequence: a lone word-internal piece that starts no entry.
    starts = {p[0] for p in lexicon.values()}
    inner = [t for t, i in tokens.items() if t not in starts and not t.startswith("#") and i > 2]
    assert inner, "corpus should give some word-internal pieces"
    assert _words_of_tokens(L, [tokens[inner[0]]]) is None


def test_L_disambig_has_hash0_loop(lang_dir):
    L = load_fsa(lang_dir / "L_disambig.pt")
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    arcs = L.arcs.values()[:, :3]
    loop = (arcs[:, 0] == 0) & (arcs[:, 1] == 0) & (arcs[:, 2] == tokens["#0"])
    assert int(loop.sum()) == 1
    assert int(L.aux_labels[loop.nonzero()[0, 0]]) == words["#0"]


def test_split_chars():
    assert split_chars("好的OK吗") == ["好", "的", "OK", "吗"]
    assert split_chars("北京") == ["北", "京"]


def test_char_lang_dir(tmp_path):
    (tmp_path / "transcript_words.txt").write_text("我们 去 北京\n北京 很 大\n我 去\n")
    prepare_lang(tmp_path, "char", spell_units=False)
    tokens = [s for s, _ in _lines(tmp_path / "tokens.txt")]
    assert tokens[:3] == ["<blk>", "<sos/eos>", "<unk>"]
    assert set(tokens[3:]) == {"我", "们", "去", "北", "京", "很", "大", "#0", "#1"}
    assert tokens[-2:] == ["#0", "#1"]  # "我" is a prefix of "我们"
    lexicon = dict(read_lexicon(tmp_path / "lexicon.txt"))
    assert lexicon["北京"] == ["北", "京"]
    disambig = dict(read_lexicon(tmp_path / "lexicon_disambig.txt"))
    assert disambig["我"] == ["我", "#1"]
    L = load_fsa(tmp_path / "L_disambig.pt")
    tok = read_symbol_table(tmp_path / "tokens.txt")
    wid = read_symbol_table(tmp_path / "words.txt")
    ids = [tok[c] for c in "我们去北京"]
    assert _words_of_tokens(L, ids) == [wid["我们"], wid["去"], wid["北京"]]


def test_bpe_lang_without_model_raises(tmp_path):
    (tmp_path / "transcript_words.txt").write_text("A B\n")
    with pytest.raises(RuntimeError):
        prepare_lang(tmp_path, "bpe")


def test_char_lexicon_spells_every_unit_as_a_word(tmp_path):
    (tmp_path / "transcript_words.txt").write_text("我们 去 北京\n北京 很 大\n我 喜欢 ｋｔｖ，\n", encoding="utf-8")
    prepare_lang(tmp_path, "char")
    lexicon = dict(read_lexicon(tmp_path / "lexicon.txt"))
    words = [s for s, _ in _lines(tmp_path / "words.txt")]
    # training words (normalised: KTV) plus each unit alone, no word twice
    assert set(lexicon) == {"我们", "去", "北京", "很", "大", "我", "喜欢", "KTV",
                            "们", "北", "京", "喜", "欢", "<UNK>"}
    assert words[2:-3] == sorted(set(lexicon) - {"<UNK>"}) and len(words) == len(set(words))
    assert lexicon["京"] == ["京"] and lexicon["KTV"] == ["KTV"]
    # an unseen word of known characters has a path through L: 京 北 (no word 京北)
    L = load_fsa(tmp_path / "L.pt")
    tok = read_symbol_table(tmp_path / "tokens.txt")
    wid = read_symbol_table(tmp_path / "words.txt")
    assert _words_of_tokens(L, [tok["京"], tok["北"]]) == [wid["京"], wid["北"]]
