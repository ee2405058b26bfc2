import k2
import pytest
import torch

from tests.helpers import TOY_SENTENCES as SENTENCES
from w2v.lang.arpa import train_arpa
from w2v.lang.bpe import train_bpe
from w2v.lang.graph import arpa_to_fst_text, compile_graphs, g_for_rescoring
from w2v.lang.lexicon import load_fsa, prepare_lang
from w2v.lang.symbols import read_symbol_table


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graph")
    lang, lm = d / "lang_bpe", d / "lm"
    lang.mkdir()
    (lang / "transcript_words.txt").write_text("\n".join(SENTENCES) + "\n")
    train_bpe(lang / "transcript_words.txt", lang / "bpe.model", vocab_size=30)
    prepare_lang(lang, "bpe")
    train_arpa(lang / "transcript_words.txt", lm / "3gram.arpa", order=3)
    train_arpa(lang / "transcript_words.txt", lm / "4gram.arpa", order=4)
    compile_graphs(lang, lm)
    return lang, lm


def test_g_from_kaldilm_loads(dirs):
    lang, lm = dirs
    words = read_symbol_table(lang / "words.txt")
    text = (lm / "G_3_gram.fst.txt").read_text()
    G = k2.Fsa.from_openfst(text, acceptor=False)
    labels = set(G.labels.tolist())
    assert words["#0"] in labels  # backoff arcs
    assert words["<s>"] not in labels and words["</s>"] not in labels  # replaced by epsilon
    vocab = {words[w] for s in SENTENCES for w in s.split()}
    assert vocab <= labels


def test_g_scores_match_arpa(dirs):
    # The sentence "THE CAT" scored by G equals its ARPA log-prob (natural log).
    lang, lm_dir = dirs
    from w2v.lang.arpa import read_arpa

    lm = read_arpa(lm_dir / "3gram.arpa")
    words = read_symbol_table(lang / "words.txt")
    G = g_for_rescoring(arpa_to_fst_text(lm_dir / "3gram.arpa", lang / "words.txt"), words)
    seq = ["THE", "CAT", "SAT"]
    lin = k2.add_epsilon_self_loops(k2.linear_fsa([[words[w] for w in seq]]))
    score = k2.top_sort(k2.connect(k2.intersect_device(G, lin, torch.zeros(1, dtype=torch.int32),
                                                       sorted_match_a=True)))
    got = float(score.get_tot_scores(use_double_scores=True, log_semiring=False)[0])
    ctx, want = ("<s>",), 0.0
    for w in seq + ["</s>"]:
        want += lm.log10_prob(ctx, w)
        ctx = ctx + (w,)
    assert got == pytest.approx(want * 2.302585092994046, abs=1e-3)


def test_hlg_saved_and_sorted(dirs):
    lang, lm = dirs
    HLG = load_fsa(lang / "HLG.pt")
    tokens = read_symbol_table(lang / "tokens.txt")
    words = read_symbol_table(lang / "words.txt")
    assert HLG.num_arcs > 0
    assert int(HLG.labels.max()) < tokens["#0"]  # no token disambiguation symbols left
    aux = HLG.aux_labels
    aux = aux.values if isinstance(aux, k2.RaggedTensor) else aux
    assert int(aux.max()) < words["#0"]
    assert (lm / "G_4_gram.pt").exists()
    G4 = load_fsa(lm / "G_4_gram.pt")
    assert not hasattr(G4, "aux_labels") or G4.aux_labels is None
    assert int(G4.labels.max()) < words["#0"]


def test_compile_rebuilds_the_same_graph(dirs):
    """Whether to compile is the stage record's decision; compiling again gives the same HLG."""
    lang, lm = dirs
    before = load_fsa(lang / "HLG.pt")
    mtime = (lang / "HLG.pt").stat().st_mtime_ns
    compile_graphs(lang, lm)
    after = load_fsa(lang / "HLG.pt")
    assert (lang / "HLG.pt").stat().st_mtime_ns != mtime
    assert torch.equal(after.arcs.values(), before.arcs.values())


def test_missing_arpa_raises(tmp_path, dirs):
    lang, _ = dirs
    with pytest.raises(FileNotFoundError):
        arpa_to_fst_text(tmp_path / "none.arpa", lang / "words.txt")
