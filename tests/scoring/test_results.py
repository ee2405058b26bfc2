import json

from w2v.scoring.results import merge_results, plot_results, update_results
from w2v.scoring.wer import ErrorStats
from w2v.scoring.results import make_entry


def _e(test, method, wer, feat="fbank"):
    return {"test_set": test, "decoding_method": method, "feature_type": feat, "wer": wer,
            "ins": 1, "del": 2, "sub": 3, "ref_words": 100}


def test_merge_replaces_by_key(tmp_path):
    update_results(tmp_path, [_e("test-clean", "1best", 5.0), _e("test-clean", "ctc-decoding", 6.0)])
    merged = update_results(tmp_path, [_e("test-clean", "1best", 4.0), _e("test-other", "1best", 9.0),
                                       _e("test-clean", "1best", 7.5, feat="wav2vec2")])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data == merged
    by_key = {(e["test_set"], e["decoding_method"], e["feature_type"]): e["wer"] for e in data}
    assert by_key == {
        ("test-clean", "1best", "fbank"): 4.0,
        ("test-clean", "ctc-decoding", "fbank"): 6.0,
        ("test-other", "1best", "fbank"): 9.0,
        ("test-clean", "1best", "wav2vec2"): 7.5,
    }
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_merge_pure():
    old = [_e("a", "m", 1.0)]
    assert merge_results(old, [_e("a", "m", 2.0)])[0]["wer"] == 2.0
    assert old[0]["wer"] == 1.0


def test_results_md(tmp_path):
    update_results(tmp_path, [
        _e("test-clean", "whole-lattice-rescoring/lm_scale_0.5", 2.56),
        _e("test-clean", "ctc-decoding", 2.9),
        {"test_set": "aishell-test", "decoding_method": "1best", "feature_type": "fbank",
         "cer": 4.26, "ins": 0, "del": 1, "sub": 2, "ref_words": 64},
    ])
    md = (tmp_path / "RESULTS.md").read_text()
    lines = md.splitlines()
    assert "## test-clean" in lines and "## aishell-test" in lines
    i = lines.index("## test-clean")
    assert lines[i + 2] == "| decoding method | feature type | checkpoint | WER (%) | ins | del | sub | ref words |"
    assert lines[i + 4] == "| whole-lattice-rescoring/lm_scale_0.5 | fbank | - | 2.56 | 1 | 2 | 3 | 100 |"
    assert lines[i + 5] == "| ctc-decoding | fbank | - | 2.90 | 1 | 2 | 3 | 100 |"
    j = lines.index("## aishell-test")
    assert "CER (%)" in lines[j + 2]
    assert lines[j + 4] == "| 1best | fbank | - | 4.26 | 0 | 1 | 2 | 64 |"


def test_make_entry_labels():
    e = make_entry("dev", "nbest-rescoring/lm_scale_0.7", "fbank", ErrorStats(1, 2, 3, 50, "cer"),
                   {"lm_scale": 0.7, "epoch": 9, "avg": 2}, "epoch-9-avg-2")
    assert e == {"test_set": "dev", "decoding_method": "nbest-rescoring/lm_scale_0.7",
                 "feature_type": "fbank", "checkpoint": "epoch-9-avg-2", "cer": 12.0, "ins": 1,
                 "del": 2, "sub": 3, "ref_words": 50, "labels": {"lm_scale": 0.7, "epoch": 9, "avg": 2}}


def test_results_of_two_checkpoints_live_side_by_side(tmp_path):
    """Decoding another epoch/avg adds its rows and files; it overwrites neither."""
    from w2v.scoring.report import report_decoding

    refs = [("u1", ["A", "B"], ["A", "B"]), ("u2", ["C"], ["D"])]
    report_decoding(tmp_path, "dev", {"1best": {"1best": refs}}, "fbank", labels={"epoch": 3, "avg": 2})
    report_decoding(tmp_path, "dev", {"1best": {"1best": refs[:1]}}, "fbank", labels={"epoch": 2, "avg": 1})
    rows = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["checkpoint"], r["wer"]) for r in rows) == [("epoch-2-avg-1", 0.0), ("epoch-3-avg-2", 33.33)]
    assert sorted(p.name for p in (tmp_path / "1best").glob("errs-*")) == [
        "errs-dev-1best-epoch-2-avg-1.txt", "errs-dev-1best-epoch-3-avg-2.txt"]
    assert "| 1best | fbank | epoch-3-avg-2 | 33.33 |" in (tmp_path / "RESULTS.md").read_text()
    # the comparison takes each run's latest checkpoint and says which
    from w2v.scoring.results import comparison_markdown

    text = comparison_markdown({"ctc_fbank": rows})
    assert "| dev | 1best (WER) | 33.33 |" in text and "Checkpoints: ctc_fbank epoch-3-avg-2" in text


def test_plot(tmp_path):
    entries = [_e("dev", "1best", 3.0), _e("dev", "ctc-decoding", 4.0)]
    path = plot_results(entries, "dev", tmp_path / "wer-dev.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_without_dev_sets_or_recogs(tmp_path):
    """Runs of no label budget, no dev results and no recogs files: the best lm scale on test,
    said in the cell, and the change from the baseline without an interval."""
    from w2v.bin.compare_results import main as compare_main
    from w2v.scoring.results import choose_on_dev, comparison_markdown

    fbank = [_e("test-clean", "1best", 8.0), _e("test-clean", "whole-lattice-rescoring/lm_scale_0.3", 6.6),
             _e("test-clean", "whole-lattice-rescoring/lm_scale_0.5", 7.1)]
    ssl = [_e("test-clean", "1best", 5.5, "ssl_L2"),
           _e("test-clean", "whole-lattice-rescoring/lm_scale_0.3", 5.25, "ssl_L2"),
           _e("test-clean", "whole-lattice-rescoring/lm_scale_0.1", 4.75, "ssl_L2"),
           _e("test-other", "1best", 9.0, "ssl_L2")]
    for e in fbank + ssl:  # counts that agree with the rates: the choice counts errors
        e.update({"ins": 0, "del": 0, "sub": round(10 * e["wer"]), "ref_words": 1000})
    chosen = {(e["test_set"], e["decoding_method"].split("/")[0]): e for e in choose_on_dev(ssl)}
    assert chosen[("test-clean", "whole-lattice-rescoring")]["decoding_method"].endswith("0.1")
    text = comparison_markdown({"ctc_ssl_L2": ssl, "ctc_fbank": fbank})
    assert "\n### Label budget all\n" in text
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in text.splitlines() if line.startswith("| test")}
    assert rows[("test-clean", "1best (WER)")] == ["8.00", "5.50 (Δ -2.50, no CI: recogs missing)"]
    assert rows[("test-clean", "whole-lattice-rescoring (WER)")] == [
        "6.60 (lm_scale 0.3 chosen on test)", "4.75 (lm_scale 0.1 chosen on test; Δ -1.85, no CI: recogs missing)"]
    assert rows[("test-other", "1best (WER)")] == ["-", "9.00"]  # no baseline: no change shown
    assert "| ctc_fbank | ctc_ssl_L2 |" in text  # fbank first; named after their features: said once
    assert "| other (fbank) |" in comparison_markdown({"other": fbank})

    for name, entries in (("ctc_fbank", fbank), ("ctc_ssl_L2", ssl)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(entries))
    (tmp_path / "ctc_empty").mkdir()
    out = tmp_path / "COMPARISON.md"
    compare_main([str(tmp_path / n) for n in ("ctc_ssl_L2", "ctc_empty", "ctc_fbank")] + ["--out", str(out)])
    assert out.read_text() == text
    assert (tmp_path / "COMPARISON-test-clean.png").stat().st_size > 1000
    assert (tmp_path / "COMPARISON-test-other.png").is_file()
    assert not list(tmp_path.glob("COMPARISON-budgets-*"))  # one budget: no budget plot


def test_decoding_a_checkpoint_again_replaces_all_its_rows(tmp_path):
    from w2v.scoring.report import report_decoding

    refs = [("u1", ["A"], ["A"])]
    report_decoding(tmp_path, "dev", {"1best": {"1best": refs}, "nbest": {"nbest": refs}}, "fbank",
                    labels={"epoch": 3, "avg": 1}, plot=False)
    report_decoding(tmp_path, "test", {"1best": {"1best": refs}}, "fbank", labels={"epoch": 3, "avg": 1}, plot=False)
    report_decoding(tmp_path, "dev", {"1best": {"1best": refs}}, "fbank", labels={"epoch": 3, "avg": 1}, plot=False)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["test_set"], r["decoding_method"]) for r in rows) == [("dev", "1best"), ("test", "1best")]
