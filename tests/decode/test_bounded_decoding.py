"""Decoding flat network output (an early checkpoint, audio unlike the training data) in bounded memory.

Uniform log-probs over the toy HLG make every path score alike: the lattice of a 12 s cut holds
~280k arcs (950 per frame), and its n-best intersection could build ~5·10⁸ arcs (~30 GB).
"""

import logging
import resource
import sys

import k2
import pytest
import torch

from w2v.decode import ctc
from w2v.decode.ctc import (
    METHODS,
    SearchOptions,
    beam_prune,
    decode_log_probs,
    get_lattice,
    load_graphs,
    memory_limit,
    num_arcs_per_fsa,
    one_best,
)
from tests.helpers import TOY_SENTENCES, peaky_log_probs
from w2v.lang.bpe import load_bpe
from w2v.lang.symbols import read_symbol_table
from tests.helpers import build_lang_and_graphs

V = 30
GOOD = "THE DOG SAT ON THE MAT"
UNBOUNDED = dict(search_frames=None, max_arcs_per_frame=None, max_product_arcs=None, max_step_mb=None)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    lang_dir, lm_dir = build_lang_and_graphs(tmp_path_factory.mktemp("bounded"), TOY_SENTENCES, vocab_size=V)
    graphs = load_graphs(lang_dir, METHODS, lm_dir)
    sp = load_bpe(lang_dir / "bpe.model")
    words = set(read_symbol_table(lang_dir / "words.txt"))
    return graphs, sp, words


def flat(frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform log-probs: what a network that has learnt nothing outputs."""
    log_probs = torch.full((len(frames), max(frames), V), -float(torch.log(torch.tensor(float(V)))))
    return log_probs, torch.tensor(frames)


def flat_and_good(sp, flat_frames: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of one flat cut and one cut of normal (peaky) output."""
    good, good_len = peaky_log_probs([sp.encode(GOOD)], V, noise=0.3)
    log_probs, lengths = flat([flat_frames, int(good_len[0])])
    log_probs[1] = 0.0
    log_probs[1, : good_len[0]] = good[0, : good_len[0]]
    return log_probs, lengths


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_flat_output_is_pruned_and_the_warning_names_the_cut(lang, caplog):
    graphs, sp, words = lang
    log_probs, lengths = flat_and_good(sp)
    opts = SearchOptions(max_arcs_per_frame=100, num_paths=20, lm_scales=(0.5,))
    with caplog.at_level(logging.WARNING):
        hyps = decode_log_probs(log_probs, lengths, METHODS, graphs, opts, ["flat-cut", "good-cut"])
    messages = warnings_of(caplog)
    pruned = [m for m in messages if "exceeds max_arcs_per_frame 100" in m]
    assert pruned and all(m.startswith("cut flat-cut: lattice of ") for m in pruned)
    assert "over 300 frames" in pruned[0] and "nats of the best" in pruned[0]
    assert not any("good-cut" in m for m in messages)
    for method, per_key in hyps.items():
        for key, (flat_hyp, good_hyp) in per_key.items():
            assert good_hyp == GOOD.split(), (method, key)  # one bad cut spoils nothing else
            if method != "ctc-greedy-search" and method != "ctc-decoding":
                assert set(flat_hyp) <= words


def test_lattice_arcs_stay_under_the_limit(lang):
    graphs, _, _ = lang
    log_probs, lengths = flat([300, 200, 120])
    unbounded, order = get_lattice(log_probs, lengths, graphs.HLG, SearchOptions(**UNBOUNDED))
    assert all(n > 900 * int(t) for n, t in zip(num_arcs_per_fsa(unbounded).tolist(), lengths))
    # two searches (300 frames, then 200 + 120), each lattice cut to 100 arcs per frame
    opts = SearchOptions(search_frames=320, max_arcs_per_frame=100)
    lattice, order2 = get_lattice(log_probs, lengths, graphs.HLG, opts, ["a", "b", "c"])
    assert order2.tolist() == order.tolist() == [0, 1, 2]
    arcs = num_arcs_per_fsa(lattice).tolist()
    assert all(0 < n <= 100 * int(t) for n, t in zip(arcs, lengths))
    # pruning keeps each cut's best path
    assert one_best(lattice) == one_best(unbounded)


@pytest.mark.parametrize("cap", [100_000, 30_000, 3_000, 10])
def test_beam_prune_bound_and_best_path(lang, cap):
    graphs, _, _ = lang
    lattice, _ = get_lattice(*flat([300, 200]), graphs.HLG, SearchOptions(**UNBOUNDED))
    pruned, beams = beam_prune(lattice, [cap, 10**9])
    arcs = num_arcs_per_fsa(pruned).tolist()
    assert arcs[0] <= max(cap, 301)  # ties (uniform output) never keep more than asked
    assert arcs[1] == lattice[1].num_arcs and beams[1] is None  # within its limit: untouched
    assert beams[0] is not None and beams[0] >= 0.0
    assert one_best(pruned) == one_best(lattice)


def test_nbest_intersections_stay_under_max_product_arcs(lang, caplog, monkeypatch):
    graphs, sp, _ = lang
    log_probs, lengths = flat_and_good(sp, flat_frames=200)
    budget = 2_000_000
    opts = SearchOptions(max_arcs_per_frame=None, max_product_arcs=budget, num_paths=20, lm_scales=(0.5,))
    lattice, order = get_lattice(log_probs, lengths, graphs.HLG, opts)
    # the situation: unbounded, the flat cut's n-best intersection could build ~10⁸ arcs
    nbest = ctc._sample_nbest(lattice, opts)
    need = ctc._nbest_product_arcs(k2.invert(lattice), nbest)
    assert int(need[nbest.utt == 0].sum()) > 50 * budget
    sizes = []
    intersect_device = k2.intersect_device

    def recording(a, b, b_to_a_map, sorted_match_a=False, **kw):
        out = intersect_device(a, b, b_to_a_map, sorted_match_a=sorted_match_a, **kw)
        if a.shape[0] == lattice.shape[0]:  # lattice ∘ word sequences (the n-best scoring)
            sizes.append(out.num_arcs)
        return out

    monkeypatch.setattr(k2, "intersect_device", recording)
    with caplog.at_level(logging.WARNING):
        hyps = decode_log_probs(log_probs, lengths, ["nbest", "nbest-rescoring"], graphs, opts, ["flat-cut", "good-cut"])
    messages = warnings_of(caplog)
    assert any(m.startswith("nbest: cut flat-cut: the n-best could build") for m in messages)
    assert any(m.startswith("nbest-rescoring: cut flat-cut: the n-best could build") for m in messages)
    assert not any("good-cut" in m for m in messages)
    assert sizes and max(sizes) <= budget
    assert hyps["nbest"]["nbest"][1] == GOOD.split()
    assert hyps["nbest-rescoring"]["lm_scale_0.5"][1] == GOOD.split()


def test_whole_lattice_rescoring_prunes_and_retries(lang, caplog):
    graphs, sp, words = lang
    log_probs, lengths = flat_and_good(sp, flat_frames=100)
    opts = SearchOptions(max_arcs_per_frame=None, max_product_arcs=100_000, lm_scales=(0.5, 1.0))
    with caplog.at_level(logging.WARNING):
        hyps = decode_log_probs(log_probs, lengths, ["whole-lattice-rescoring"], graphs, opts,
                                ["flat-cut", "good-cut"])["whole-lattice-rescoring"]
    retries = [m for m in warnings_of(caplog) if "rescoring again" in m]
    assert retries and all(m.startswith("whole-lattice-rescoring: cut flat-cut: rescored lattice of ")
                           for m in retries)
    for key in ("lm_scale_0.5", "lm_scale_1.0"):
        assert hyps[key][1] == GOOD.split()
        assert hyps[key][0] and set(hyps[key][0]) <= words


@pytest.mark.parametrize("fits", [20_000, 0])
def test_rescoring_out_of_memory_is_retried(lang, caplog, monkeypatch, fits):
    # k2 failing to allocate (what max_step_mb turns running out of memory into) on lattices of
    # more than `fits` arcs: the batch is retried cut by cut, a failing cut pruned and retried,
    # and a cut that never fits keeps its first-pass best path
    graphs, sp, _ = lang
    log_probs, lengths = flat_and_good(sp, flat_frames=100)
    opts = SearchOptions(lm_scales=(0.5,))
    intersect_device = k2.intersect_device

    def failing(a, b, b_to_a_map, sorted_match_a=False, **kw):
        if b.num_arcs > fits:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return intersect_device(a, b, b_to_a_map, sorted_match_a=sorted_match_a, **kw)

    monkeypatch.setattr(k2, "intersect_device", failing)
    with caplog.at_level(logging.WARNING):
        hyps = decode_log_probs(log_probs, lengths, ["1best", "whole-lattice-rescoring"], graphs, opts,
                                ["flat-cut", "good-cut"])
    rescored, first_pass = hyps["whole-lattice-rescoring"]["lm_scale_0.5"], hyps["1best"]["lm_scale_1.0"]
    assert rescored[1] == first_pass[1] == GOOD.split()
    messages = warnings_of(caplog)
    assert all(m.startswith("whole-lattice-rescoring: cut ") and "DefaultCPUAllocator" in m
               for m in messages)
    retried = {m.split(":")[1].strip() for m in messages if m.endswith("rescoring again")}
    kept = {m.split(":")[1].strip() for m in messages if m.endswith("keeping its first-pass best path")}
    if fits:
        assert retried == {"cut flat-cut"} and kept == set()  # its pruned lattice fits
    else:
        assert "cut flat-cut" in retried and kept == {"cut flat-cut", "cut good-cut"}
        assert rescored == first_pass


@linux_only
def test_memory_limit_raises_and_restores():
    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises((RuntimeError, MemoryError)):
        with memory_limit(64):
            torch.empty(1 << 30, dtype=torch.uint8)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert torch.empty(1 << 28, dtype=torch.uint8).numel() == 1 << 28


def test_bounds_change_nothing_on_normal_output(lang, caplog):
    graphs, sp, _ = lang
    sentences = [GOOD, "A CAT", "THEY SAW THE RED PARK AND THE GREEN MAT", "THE CAT"]
    ids = [sp.encode(s) for s in sentences]
    for log_probs, lengths in (peaky_log_probs(ids, V, noise=0.5),
                               peaky_log_probs(ids, V, peak=5.0, noise=1.5, seed=1, num_confusable=3)):
        opts = SearchOptions(num_paths=50, lm_scales=(0.3, 1.0))
        with caplog.at_level(logging.WARNING):
            bounded = decode_log_probs(log_probs, lengths, METHODS, graphs, opts)
        unbounded = decode_log_probs(log_probs, lengths, METHODS, graphs,
                                     SearchOptions(num_paths=50, lm_scales=(0.3, 1.0), **UNBOUNDED))
        assert bounded == unbounded
    assert bounded["1best"]["lm_scale_1.0"] != [s.split() for s in sentences]  # the noisy one has errors
    assert unbounded["1best"]["lm_scale_1.0"] == bounded["1best"]["lm_scale_1.0"]
    assert warnings_of(caplog) == []


@linux_only
def test_flat_batch_decodes_in_bounded_memory(lang):
    graphs, _, _ = lang
    log_probs, lengths = flat([400, 350, 300, 250])
    opts = SearchOptions(max_arcs_per_frame=200, max_product_arcs=5_000_000, num_paths=20, lm_scales=(0.5,))
    with open("/proc/self/status") as f:
        rss_mb = int(f.read().split("VmRSS:")[1].split()[0]) / 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) restarts from the current RSS
    hyps = decode_log_probs(log_probs, lengths, METHODS, graphs, opts)
    with open("/proc/self/status") as f:
        peak_mb = int(f.read().split("VmHWM:")[1].split()[0]) / 1024
    assert all(len(h) == 4 for per_key in hyps.values() for h in per_key.values())
    # unbounded, the n-best alone could build ~10⁹ arcs (tens of GB)
    assert peak_mb - rss_mb < 600
