import math

import pytest

from w2v.lang.arpa import estimate_kn, read_arpa, train_arpa, write_arpa

CORPUS = [
    "I LIVE IN SAN FRANCISCO",
    "SAN FRANCISCO IS FOGGY",
    "WE FLEW TO SAN FRANCISCO",
    "SAN FRANCISCO AGAIN AND AGAIN",
    "I LIKE THE FOG",
    "THE FOG IS IN THE CITY",
    "WE LIKE THE CITY",
    "THE CITY IS BIG AND THE FOG IS BIG",
]


def _contexts(lm):
    ctx = [()]
    for n in range(lm.order - 1):
        ctx += [g for g in lm.ngrams[n] if g[-1] != "</s>"]
    # contexts never seen in training must normalise through backoff too
    ctx += [("FOGGY", "THE"), ("AGAIN", "AGAIN", "SAN"), ("NOTAWORD",)]
    return ctx


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(tmp_path, order):
    lm = estimate_kn((s.split() for s in CORPUS), order=order)
    write_arpa(lm, tmp_path / "lm.arpa")
    lm = read_arpa(tmp_path / "lm.arpa")  # check what the file says, at its 6 decimals
    vocab = [w for w in lm.vocab() if w != "<s>"]
    assert "<UNK>" in vocab and "</s>" in vocab
    for h in _contexts(lm):
        h = tuple(w for w in h if w in lm.vocab()) if h == ("NOTAWORD",) else h
        total = sum(10 ** lm.log10_prob(h, w) for w in vocab)
        assert total == pytest.approx(1.0, abs=2e-5), (h, total)


def test_kneser_ney_continuation_counts():
    # IS and FRANCISCO both occur 4 times, but IS follows 3 distinct words and FRANCISCO only
    # SAN; FOG occurs 3 times, also after one word only (THE). Kneser-Ney unigrams count
    # left contexts, not occurrences.
    lm = estimate_kn((s.split() for s in CORPUS), order=2)
    uni = {g[0]: lp for g, (lp, _) in lm.ngrams[0].items()}
    assert uni["IS"] > uni["FRANCISCO"] + 0.1
    assert uni["FOG"] == pytest.approx(uni["FRANCISCO"], abs=1e-9)
    # after SAN, FRANCISCO takes most of the mass
    after_san = {w: lm.log10_prob(("SAN",), w) for w in uni if w != "<s>"}
    assert max(after_san, key=after_san.get) == "FRANCISCO"
    assert 10 ** after_san["FRANCISCO"] > 0.5


def test_arpa_file_layout(tmp_path):
    lm = train_arpa_from(tmp_path, order=3)
    text = (tmp_path / "lm.arpa").read_text().splitlines()
    assert text[1] == "\\data\\"
    counts = {int(l.split("=")[0].split()[1]): int(l.split("=")[1]) for l in text if l.startswith("ngram ")}
    assert counts == {n: len(lm.ngrams[n - 1]) for n in (1, 2, 3)}
    assert text[-1] == "\\end\\"
    unigrams = dict(((g[0], v) for g, v in lm.ngrams[0].items()))
    assert unigrams["<s>"][0] == -99.0
    assert unigrams["<s>"][1] < 0  # <s> is a context, so it carries a backoff weight
    # the highest order never has backoff weights
    three = [l for l in text[text.index("\\3-grams:") + 1:] if l and not l.startswith("\\")]
    assert all(len(l.split("\t")) == 2 for l in three)


def train_arpa_from(tmp_path, order):
    (tmp_path / "text.txt").write_text("\n".join(CORPUS) + "\n\n")
    return train_arpa(tmp_path / "text.txt", tmp_path / "lm.arpa", order=order)


def test_vocab_maps_oov_to_unk():
    lm = estimate_kn([["A", "B", "ZZZ"]], order=2, vocab={"A", "B"})
    assert ("ZZZ",) not in lm.ngrams[0]
    assert ("B", "<UNK>") in lm.ngrams[1]


def test_empty_corpus_raises():
    with pytest.raises(ValueError):
        estimate_kn([], order=3)


def test_log10_values_are_finite(tmp_path):
    lm = train_arpa_from(tmp_path, order=3)
    for table in lm.ngrams:
        for g, (lp, bow) in table.items():
            assert g == ("<s>",) or -20 < lp < 0
            assert math.isfinite(bow)


def test_vocab_words_never_seen_get_a_unigram():
    """Every words.txt word is reachable in G: an unseen one gets its share of the uniform mass."""
    sentences = [["A", "B"], ["B", "A", "B"]]
    lm = estimate_kn(sentences, order=2, vocab={"A", "B", "C", "D"})
    assert {("C",), ("D",)} <= set(lm.ngrams[0])
    assert lm.ngrams[0][("C",)][0] == lm.ngrams[0][("D",)][0] == lm.ngrams[0][("<UNK>",)][0]
    assert lm.ngrams[0][("C",)][0] < lm.ngrams[0][("A",)][0]
    vocab = [w for w in lm.vocab() if w != "<s>"]
    for h in [(), ("A",), ("B",), ("<s>",)]:
        assert sum(10 ** lm.log10_prob(h, w) for w in vocab) == pytest.approx(1.0, abs=1e-6)
    # without a vocabulary only the words seen are in the model
    assert ("C",) not in estimate_kn(sentences, order=2).ngrams[0]
