"""The lang/LM/graph entry points chained as a recipe runs them."""

from tests.helpers import TOY_SENTENCES as SENTENCES
from w2v.bin import compile_graph, prepare_lang, train_bpe, train_lm
from w2v.lang.arpa import read_arpa
from w2v.lang.lexicon import load_fsa
from w2v.lang.symbols import read_symbol_table


def test_recipe_stages(tmp_path):
    lang, lm = tmp_path / "lang_bpe_30", tmp_path / "lm"
    lang.mkdir()
    (lang / "transcript_words.txt").write_text("\n".join(SENTENCES) + "\n")
    # LM text with a word outside the lexicon: it must become <UNK>, not break kaldilm
    (tmp_path / "lm_text.txt").write_text("\n".join(SENTENCES + ["THE ZEBRA SAT"]) + "\n")

    train_bpe.main(["--transcripts", str(lang / "transcript_words.txt"), "--vocab-size", "30",
                    "--lang-dir", str(lang)])
    prepare_lang.main(["--lang-dir", str(lang), "--token-type", "bpe"])
    for order in (3, 4):
        train_lm.main(["--text", str(tmp_path / "lm_text.txt"), "--order", str(order),
                       "--out", str(lm / f"{order}gram.arpa"), "--words", str(lang / "words.txt")])
    compile_graph.main(["--lang-dir", str(lang), "--lm-dir", str(lm)])

    for name in ("bpe.model", "words.txt", "tokens.txt", "lexicon.txt", "lexicon_disambig.txt",
                 "L.pt", "L_disambig.pt", "HLG.pt"):
        assert (lang / name).is_file(), name
    for name in ("3gram.arpa", "4gram.arpa", "G_3_gram.fst.txt", "G_4_gram.fst.txt", "G_4_gram.pt"):
        assert (lm / name).is_file(), name
    arpa = read_arpa(lm / "3gram.arpa")
    assert ("ZEBRA",) not in arpa.ngrams[0] and ("THE", "<UNK>") in arpa.ngrams[1]
    HLG = load_fsa(lang / "HLG.pt")
    assert HLG.num_arcs > 0 and int(HLG.labels.max()) < read_symbol_table(lang / "tokens.txt")["#0"]
    assert read_symbol_table(lang / "words.txt")["<UNK>"] == 1

    # --lm-arpa reuses a given ARPA
    train_lm.main(["--lm-arpa", str(lm / "3gram.arpa"), "--order", "3",
                   "--out", str(tmp_path / "lm2" / "3gram.arpa")])
    assert (tmp_path / "lm2" / "3gram.arpa").read_text() == (lm / "3gram.arpa").read_text()
