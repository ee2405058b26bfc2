"""The attention decoding methods on hand-made cases whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import TOY_SENTENCES, build_lang_and_graphs, peaky_log_probs
from w2v.decode.attention import (
    AttentionOptions,
    attention_beam_search,
    attention_decoder_rescoring,
    attention_rescoring,
    ctc_prefix_beam_search,
    decode_attention,
)
from w2v.decode.ctc import SearchOptions, get_lattice, load_graphs
from w2v.lang.bpe import load_bpe

EOS = 1


class ScriptedDecoder(torch.nn.Module):
    """Ignores the encoder output: the next token after a prefix has log-prob 0 if it continues
    one of ``favourites`` (best first), else a penalty."""

    def __init__(self, favourites: list[list[int]], vocab: int = 12):
        super().__init__()
        self.favourites, self.vocab = favourites, vocab

    def forward(self, memory, memory_lens, ys_in, ys_lens):
        b, u = ys_in.shape
        logits = torch.full((b, u, self.vocab), -10.0)
        for i in range(b):
            for j in range(u):
                prefix = ys_in[i, 1: j + 1].tolist()
                for rank, fav in enumerate(self.favourites):
                    target = fav + [EOS]
                    if prefix == fav[: len(prefix)] and len(prefix) < len(target):
                        logits[i, j, target[len(prefix)]] = max(float(logits[i, j, target[len(prefix)]]),
                                                                 5.0 - rank)
        return logits


def test_prefix_beam_search_sums_alignments():
    # two frames, p(blank) = 0.6, p(a) = 0.4: greedy says "", but P("a") = 0.16 + 0.24 + 0.24 = 0.64
    lp = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]]))
    (best, best_score), (second, second_score) = ctc_prefix_beam_search(lp, beam=4)
    assert best == (1,) and best_score == pytest.approx(math.log(0.64))
    assert second == () and second_score == pytest.approx(math.log(0.36))
    # a repeat needs a blank between: a a on consecutive frames is one "a", a _ a is "a a"
    lp = torch.log(torch.tensor([[0.01, 0.99], [0.98, 0.02], [0.01, 0.99]]))
    assert ctc_prefix_beam_search(lp, beam=4)[0][0] == (1, 1)


def test_attention_beam_search_follows_the_decoder():
    memory = torch.zeros(4, 8)
    assert attention_beam_search(ScriptedDecoder([[3, 5, 7]]), memory, 4, EOS, beam=3) == [3, 5, 7]
    assert attention_beam_search(ScriptedDecoder([[3, 5], [4]]), memory, 4, EOS, beam=3) == [3, 5]


def test_attention_rescoring_weighs_decoder_and_ctc():
    nbest = [((3, 5), -1.0), ((4,), -1.2)]
    decoder = ScriptedDecoder([[4]])  # the decoder prefers the second
    memory = torch.zeros(4, 8)
    assert attention_rescoring(nbest, decoder, memory, 4, EOS, ctc_weight=0.3) == [4]
    # a CTC score gap larger than the decoder's preference wins with a big enough weight
    assert attention_rescoring([((3, 5), -1.0), ((4,), -40.0)], decoder, memory, 4, EOS, ctc_weight=1.0) == [3, 5]


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    root = tmp_path_factory.mktemp("att")
    lang_dir, lm_dir = build_lang_and_graphs(root, TOY_SENTENCES, vocab_size=30)
    return lang_dir, lm_dir, load_bpe(lang_dir / "bpe.model")


def test_attention_decoder_rescoring_of_the_hlg_nbest(lang):
    """Two sentences the output cannot tell apart: the decoder's choice wins once its scale is large."""
    lang_dir, lm_dir, sp = lang
    graphs = load_graphs(lang_dir, ["attention-decoder"], lm_dir)
    a, b = "THE DOG SAT ON THE MAT", "THE MAT SAT ON THE MAT"
    ids_a, ids_b = sp.encode(a), sp.encode(b)
    dog, mat = sp.piece_to_id("▁DOG"), sp.piece_to_id("▁MAT")
    assert ids_a[1] == dog and ids_b[1] == mat  # one piece each: the frames of one can be the other
    lp, lens = peaky_log_probs([ids_a], 30, noise=0.0)
    frames = (lp[0].argmax(-1) == dog).nonzero().flatten()
    lp[0, frames, mat] = lp[0, frames, dog]
    opts = SearchOptions(lm_scales=(0.0,), num_paths=50)
    lattice, order = get_lattice(lp, lens, graphs.HLG, opts)
    word_tokens = lambda seq: sp.encode(" ".join(graphs.words[i] for i in seq))  # noqa: E731
    memory = torch.zeros(1, int(lens[0]), 8)
    out = {}
    for prefer in (ids_a, ids_b):
        out[tuple(prefer)] = attention_decoder_rescoring(
            lattice, order, memory, lens, ScriptedDecoder([prefer], vocab=30), EOS, word_tokens, opts,
            AttentionOptions(attention_scales=(0.0, 1.0)), ["utt"])
    for prefer, sentence in ((ids_a, a), (ids_b, b)):
        per_key = out[tuple(prefer)]
        assert set(per_key) == {"lm_scale_0.0_attention_scale_0.0", "lm_scale_0.0_attention_scale_1.0"}
        (best,) = per_key["lm_scale_0.0_attention_scale_1.0"]
        assert " ".join(graphs.words[i] for i in best) == sentence


def test_decode_attention_needs_a_decoder(lang):
    lang_dir, lm_dir, _ = lang
    model = type("M", (), {"decoder": None, "config": type("C", (), {"sos_eos": 1})()})()
    with pytest.raises(ValueError, match="need a model with an attention decoder"):
        decode_attention(model, torch.zeros(1, 3, 4), torch.tensor([3]), torch.zeros(1, 3, 30),
                         ["attention"], load_graphs(lang_dir, ["ctc-greedy-search"]), SearchOptions(),
                         AttentionOptions())
