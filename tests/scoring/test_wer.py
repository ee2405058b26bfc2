import pytest

from w2v.scoring.wer import error_stats, score_test_set, to_chars, write_error_stats

RESULTS = [
    # cut, ref, hyp
    ("utt1", "THE CAT SAT ON THE MAT".split(), "THE CAT SAT ON A MAT".split()),  # 1 sub
    ("utt2", "A DOG RAN".split(), "A DOG DOG RAN HOME".split()),  # 2 ins
    ("utt3", "IN THE PARK".split(), "THE".split()),  # 2 del
    ("utt4", "HELLO".split(), "HELLO".split()),
]


def test_counts():
    stats, _ = error_stats(RESULTS)
    assert (stats.ins, stats.dels, stats.subs, stats.ref_len) == (2, 2, 1, 13)
    assert stats.errors == 5
    assert stats.rate == pytest.approx(100 * 5 / 13)


def test_errs_file(tmp_path):
    stats = write_error_stats(tmp_path / "errs.txt", "test-clean", "1best", RESULTS)
    text = (tmp_path / "errs.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "%WER 38.46% [5 / 13, 2 ins, 2 del, 1 sub ]"
    assert stats.header() == lines[0]
    assert "utt1:\tTHE CAT SAT ON (THE->A) MAT" in lines
    assert "utt3:\t(IN->*) THE (PARK->*)" in lines
    subs = lines[lines.index("SUBSTITUTIONS: count ref -> hyp") + 1]
    assert subs == "1   THE -> A"
    dels = lines[lines.index("DELETIONS: count ref") + 1: lines.index("DELETIONS: count ref") + 3]
    assert dels == ["1   IN", "1   PARK"]
    ins_i = lines.index("INSERTIONS: count hyp")
    assert sorted(lines[ins_i + 1: ins_i + 3]) == ["1   DOG", "1   HOME"]
    per_word = lines[lines.index("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp") + 1:]
    the = [l for l in per_word if l.startswith("THE ")][0].split()
    # THE: 3 in ref (2 correct, 1 substituted), 2 in hyp
    assert the == ["THE", "2", "1", "3", "2"]


def test_summary_sorted_and_recogs(tmp_path):
    perfect = [(c, r, list(r)) for c, r, _ in RESULTS]
    stats = score_test_set(tmp_path, "dev", {"lm_scale_0.5": RESULTS, "lm_scale_1.0": perfect})
    summary = (tmp_path / "wer-summary-dev.txt").read_text().splitlines()
    assert summary == ["settings\tWER", "lm_scale_1.0\t0.00", "lm_scale_0.5\t38.46"]
    assert stats["lm_scale_1.0"].errors == 0
    recogs = (tmp_path / "recogs-dev-lm_scale_0.5.txt").read_text().splitlines()
    assert recogs[0] == "utt1:\tref=['THE', 'CAT', 'SAT', 'ON', 'THE', 'MAT']"
    assert recogs[1] == "utt1:\thyp=['THE', 'CAT', 'SAT', 'ON', 'A', 'MAT']"
    assert (tmp_path / "errs-dev-lm_scale_1.0.txt").read_text().startswith("%WER 0.00% [0 / 13,")


def test_cer_on_chinese(tmp_path):
    results = [
        ("BAC009S0764W0121", ["甚至", "出现", "交易", "几乎", "停滞", "的", "情况"],
         ["甚至", "出现", "交易", "几乎", "停止", "情况"]),  # 滞→止 sub, 的 deleted
        ("BAC009S0764W0122", ["一二", "线", "城市"], ["一", "二线", "城市", "了"]),  # 1 ins
    ]
    stats, _ = error_stats(results, metric="cer")
    assert stats.ref_len == 13 + 5
    assert (stats.ins, stats.dels, stats.subs) == (1, 1, 1)
    write_error_stats(tmp_path / "errs.txt", "test", "1best", results, metric="cer")
    assert (tmp_path / "errs.txt").read_text().startswith("%CER 16.67% [3 / 18, 1 ins, 1 del, 1 sub ]")
    # word-level scoring of the same thing differs (segmentation mismatch counts)
    wer, _ = error_stats(results)
    assert wer.errors > 3


def test_to_chars_mixed():
    assert to_chars(["你好", "OK"]) == ["你", "好", "OK"]
    assert to_chars(["卡拉OK", "<UNK>", "好"]) == ["卡", "拉", "OK", "<UNK>", "好"]
    assert to_chars(["我们去<unk>京"]) == ["我", "们", "去", "<unk>", "京"]  # greedy search's text


def test_empty_reference():
    stats, _ = error_stats([("u", [], [])])
    assert stats.rate == 0.0
    stats, _ = error_stats([("u", [], ["A"])])
    assert stats.ins == 1 and stats.rate > 0
