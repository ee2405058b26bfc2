import kaldialign
import numpy as np
import pytest

from w2v.scoring.bootstrap import compare_recogs, excludes_zero, paired_bootstrap, read_recogs
from w2v.scoring.wer import write_recogs

WORDS = "THE CAT SAT ON A MAT AND DID NOT MOVE".split()


def _refs(n, length=10):
    return [[WORDS[(i + j) % len(WORDS)] for j in range(length)] for i in range(n)]


def _with_errors(refs, counts):
    """Each ref with its first k words substituted by X: exactly k errors."""
    return [["X"] * k + ref[k:] for ref, k in zip(refs, counts)]


def test_rates_exact_and_interval_contains_the_difference():
    refs = _refs(30)
    errs_a, errs_b = [i % 4 for i in range(30)], [i % 3 for i in range(30)]
    r = paired_bootstrap(refs, _with_errors(refs, errs_a), _with_errors(refs, errs_b))
    assert r["rate_a"] == pytest.approx(100 * sum(errs_a) / 300)
    assert r["rate_b"] == pytest.approx(100 * sum(errs_b) / 300)
    assert r["diff"] == pytest.approx(100 * (sum(errs_b) - sum(errs_a)) / 300)
    assert r["lo"] < r["diff"] < r["hi"] and r["utterances"] == 30 and r["replications"] == 10000


def test_interval_is_the_percentiles_of_resampled_utterances():
    """Two utterances of 10 words, b fixes 5 errors in the first: resampled pairs give -50 (1/4),
    -25 (1/2) or 0 (1/4) points, so the 2.5th and 97.5th percentiles are -50 and 0."""
    refs = _refs(2)
    r = paired_bootstrap(refs, _with_errors(refs, [5, 0]), _with_errors(refs, [0, 0]))
    assert (r["rate_a"], r["rate_b"], r["diff"]) == (25.0, 0.0, -25.0)
    assert (r["lo"], r["hi"]) == (-50.0, 0.0)
    assert not excludes_zero(r)


def test_identical_systems_and_a_clearly_better_one():
    refs = _refs(50)
    hyps = _with_errors(refs, [i % 5 for i in range(50)])
    same = paired_bootstrap(refs, hyps, hyps)
    assert (same["diff"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0) and not excludes_zero(same)
    better = paired_bootstrap(refs, hyps, _with_errors(refs, [0] * 50))
    assert better["hi"] < 0 and excludes_zero(better)
    worse = paired_bootstrap(refs, _with_errors(refs, [0] * 50), hyps)
    assert worse["lo"] > 0 and excludes_zero(worse)


def test_seeded():
    refs = _refs(40)
    a, b = _with_errors(refs, [i % 3 for i in range(40)]), _with_errors(refs, [i % 2 for i in range(40)])
    # few replications: the percentiles fall between resampled values, which another seed moves
    first = paired_bootstrap(refs, a, b, replications=200, seed=3)
    assert paired_bootstrap(refs, a, b, replications=200, seed=3) == first
    other = paired_bootstrap(refs, a, b, replications=200, seed=4)
    assert (other["lo"], other["hi"]) != (first["lo"], first["hi"])
    assert other["diff"] == first["diff"]


def test_chunked_resampling_covers_every_replication(monkeypatch):
    import w2v.scoring.bootstrap as bootstrap

    refs = _refs(20)
    a, b = _with_errors(refs, [i % 3 for i in range(20)]), _with_errors(refs, [1] * 20)
    whole = paired_bootstrap(refs, a, b, replications=1000)
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 20 * 7)  # 7 replications a chunk
    chunked = paired_bootstrap(refs, a, b, replications=1000)
    assert chunked["replications"] == 1000
    assert chunked["lo"] == pytest.approx(whole["lo"], abs=1.0) and chunked["hi"] == pytest.approx(whole["hi"], abs=1.0)


def test_cer_counts_characters():
    refs = [["你好", "世界"], ["早上好"]]
    a = [["你", "世界"], ["早上好"]]
    b = [["你好", "世界"], ["早上"]]
    r = paired_bootstrap(refs, a, b, metric="cer", replications=100)
    assert (r["rate_a"], r["rate_b"]) == (pytest.approx(100 / 7), pytest.approx(100 / 7))
    w = paired_bootstrap(refs, a, b, metric="wer", replications=100)
    assert (w["rate_a"], w["rate_b"]) == (pytest.approx(100 / 3), pytest.approx(100 / 3))
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(refs, a, b, metric="ser")


def test_agrees_with_kaldialign_bootstrap():
    rng = np.random.default_rng(1)
    refs = _refs(200)
    a = _with_errors(refs, rng.integers(0, 5, 200).tolist())
    b = _with_errors(refs, rng.integers(0, 2, 200).tolist())
    ours = paired_bootstrap(refs, a, b)
    theirs = kaldialign.bootstrap_wer_ci(refs, a, b)
    assert 100 * theirs["system1"]["wer"] == pytest.approx(ours["rate_a"], abs=0.5)
    assert 100 * theirs["system2"]["wer"] == pytest.approx(ours["rate_b"], abs=0.5)
    assert theirs["p_s2_improv_over_s1"] > 0.99 and ours["hi"] < 0


def test_read_recogs_round_trip(tmp_path):
    results = [("spk-1:utt-2", ["DON'T", 'SAY "IT"'], ["DON'T"]), ("u2", [], ["EXTRA"]), ("u3", ["你好"], [])]
    write_recogs(tmp_path / "recogs.txt", results)
    assert read_recogs(tmp_path / "recogs.txt") == {c: (r, h) for c, r, h in results}
    (tmp_path / "bad.txt").write_text("u1:\tref=['A']\n")
    with pytest.raises(ValueError, match="lack a ref or a hyp"):
        read_recogs(tmp_path / "bad.txt")


def test_different_cuts_or_references_refused(tmp_path):
    write_recogs(tmp_path / "a.txt", [("u1", ["A"], ["A"]), ("u2", ["B"], ["B"]), ("u3", ["C"], [])])
    write_recogs(tmp_path / "b.txt", [("u1", ["A"], ["A"]), ("u2", ["B"], ["C"]), ("u4", ["C"], [])])
    with pytest.raises(ValueError, match=r"a\.txt and .*b\.txt hold different cuts.*'u3'.*'u4'"):
        compare_recogs(tmp_path / "a.txt", tmp_path / "b.txt")
    write_recogs(tmp_path / "c.txt", [("u1", ["A"], ["A"]), ("u2", ["D"], ["B"]), ("u3", ["C"], [])])
    with pytest.raises(ValueError, match=r"different references for 1 cuts, e\.g\. \['u2'\]"):
        compare_recogs(tmp_path / "a.txt", tmp_path / "c.txt")
    same = compare_recogs(tmp_path / "a.txt", tmp_path / "a.txt", replications=10)
    assert same["rate_a"] == same["rate_b"] == pytest.approx(100 / 3)
