"""Decoding graphs as icefall builds them: H (CTC topology), G (kaldilm), HLG, G_4_gram."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import k2
import torch

from w2v.lang.lexicon import load_fsa, save_fsa
from w2v.lang.symbols import max_token_id, read_symbol_table
from w2v.utils import atomic_write_text


def build_ctc_topo(tokens: dict[str, int]) -> k2.Fsa:
    """H: the standard (non-modified) CTC topology over labels ``0 .. max_token_id(tokens)``.

    The one H: HLG is compiled with it and ``ctc-decoding`` searches it. Arc-sorted (k2 builds it so).
    """
    return k2.ctc_topo(max_token_id(tokens), modified=False)


def arpa_to_fst_text(
    arpa: str | os.PathLike,
    words_txt: str | os.PathLike,
    max_order: int = -1,
    out: str | os.PathLike | None = None,
) -> str:
    """OpenFST text of G from an ARPA file, through kaldilm (``#0`` on backoff arcs).

    Written atomically to ``out`` when given. Every ARPA word must be in ``words_txt``.
    """
    import kaldilm

    if not Path(arpa).is_file():
        raise FileNotFoundError(f"ARPA file not found: {arpa}")
    text = kaldilm.arpa2fst(
        input_arpa=str(arpa),
        disambig_symbol="#0",
        read_symbol_table=str(words_txt),
        max_order=max_order,
    )
    if not text.strip():
        raise RuntimeError(f"kaldilm produced an empty G from {arpa}")
    if out is not None:
        atomic_write_text(out, text)
    return text


def _zero_ids_from(fsa_labels: torch.Tensor, first_disambig: int) -> torch.Tensor:
    labels = fsa_labels.clone()
    labels[labels >= first_disambig] = 0
    return labels


def g_for_rescoring(fst_text: str, words: dict[str, int]) -> k2.Fsa:
    """An arc-sorted word acceptor from G's OpenFST text, ``#0`` backoff labels turned into ε.

    The result is what icefall saves as ``G_4_gram.pt``; whole-lattice rescoring adds
    epsilon self-loops at load time.
    """
    G = k2.Fsa.from_openfst(fst_text, acceptor=False)
    del G.aux_labels
    G.labels = _zero_ids_from(G.labels, words["#0"])
    G = k2.Fsa.from_fsas([G])
    return k2.arc_sort(G)


def compile_lg(L_disambig: k2.Fsa, G: k2.Fsa, tokens: dict[str, int], words: dict[str, int]) -> k2.Fsa:
    """LG = det(L_disambig ∘ G) with disambiguation symbols then mapped to ε, ε-free, arc-sorted."""
    L = k2.arc_sort(L_disambig)
    G = k2.arc_sort(G)
    LG = k2.connect(k2.compose(L, G))
    logging.info("LG before determinize: %d states, %d arcs", LG.shape[0], LG.num_arcs)
    LG = k2.connect(k2.determinize(LG))
    logging.info("LG after determinize: %d states, %d arcs", LG.shape[0], LG.num_arcs)
    LG.labels = _zero_ids_from(LG.labels, tokens["#0"])
    first_word_disambig = words["#0"]
    if isinstance(LG.aux_labels, k2.RaggedTensor):
        values = LG.aux_labels.values.clone()
        values[values >= first_word_disambig] = 0
        LG.aux_labels = k2.RaggedTensor(LG.aux_labels.shape, values)
    else:
        LG.aux_labels = _zero_ids_from(LG.aux_labels, first_word_disambig)
    LG = k2.connect(k2.remove_epsilon(LG))
    if isinstance(LG.aux_labels, k2.RaggedTensor):
        LG.aux_labels = LG.aux_labels.remove_values_eq(0)
    return k2.arc_sort(LG)


def compile_hlg(H: k2.Fsa, LG: k2.Fsa) -> k2.Fsa:
    HLG = k2.connect(k2.compose(H, LG, inner_labels="tokens"))
    return k2.arc_sort(HLG)


def compile_graphs(
    lang_dir: str | os.PathLike,
    lm_dir: str | os.PathLike,
    lm_order: int = 3,
    rescore_order: int = 4,
) -> dict[str, Path]:
    """Build ``lang_dir/HLG.pt`` from ``lm_dir/<lm_order>gram.arpa`` and, when
    ``lm_dir/<rescore_order>gram.arpa`` exists, ``lm_dir/G_<rescore_order>_gram.pt``.

    Existing graphs are replaced (the recipe's stage record decides whether this runs).
    Returns:
      name → path of every graph now present.
    """
    lang_dir, lm_dir = Path(lang_dir), Path(lm_dir)
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    out: dict[str, Path] = {}

    hlg_path = lang_dir / "HLG.pt"
    g_txt = lm_dir / f"G_{lm_order}_gram.fst.txt"
    if g_txt.exists():
        text = g_txt.read_text(encoding="utf-8")
    else:
        text = arpa_to_fst_text(lm_dir / f"{lm_order}gram.arpa", lang_dir / "words.txt",
                                max_order=lm_order, out=g_txt)
    G = k2.Fsa.from_openfst(text, acceptor=False)
    L = load_fsa(lang_dir / "L_disambig.pt")
    LG = compile_lg(L, G, tokens, words)
    HLG = compile_hlg(build_ctc_topo(tokens), LG)
    logging.info("HLG: %d states, %d arcs", HLG.shape[0], HLG.num_arcs)
    save_fsa(HLG, hlg_path)
    out["HLG"] = hlg_path

    g4_path = lm_dir / f"G_{rescore_order}_gram.pt"
    arpa4 = lm_dir / f"{rescore_order}gram.arpa"
    if arpa4.exists():
        text = arpa_to_fst_text(arpa4, lang_dir / "words.txt", max_order=rescore_order)
        G4 = g_for_rescoring(text, words)
        save_fsa(G4, g4_path)
        logging.info("G_%d_gram: %d arcs -> %s", rescore_order, G4.num_arcs, g4_path)
        out["G_rescore"] = g4_path
    return out
