"""Label budgets: speaker-balanced seeded subsets and the official Libri-light splits."""

from __future__ import annotations

import logging
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment

from w2v.bin.subset_cuts import main as subset_cuts_main
from w2v.data.subset import librilight_ids, parse_budget, select_budget, select_librilight

NUM_SPEAKERS, CUTS_PER_SPEAKER = 20, 40
LONGEST = 15.0


def make_cut(cut_id: str, speaker: str | None, duration: float) -> MonoCut:
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration,
                             text="A WORD", speaker=speaker)
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, supervisions=[sup])


def make_cuts(seed: int = 1) -> CutSet:
    """20 speakers × 40 utterances of 2-15 s (about 1.9 h), LibriSpeech-style ids, no audio."""
    rng = random.Random(seed)
    cuts = [
        make_cut(f"{100 + s}-{7 * s}-{u:04d}", str(100 + s), round(rng.uniform(2.0, LONGEST), 2))
        for s in range(NUM_SPEAKERS)
        for u in range(CUTS_PER_SPEAKER)
    ]
    rng.shuffle(cuts)
    return CutSet.from_cuts(cuts)


@pytest.fixture(scope="module")
def cuts() -> CutSet:
    return make_cuts()


def ids(cuts: CutSet) -> list[str]:
    return [cut.id for cut in cuts]


def total(cuts: CutSet) -> float:
    return sum(cut.duration for cut in cuts)


@pytest.mark.parametrize(
    "text, seconds",
    [("10m", 600.0), ("1h", 3600.0), ("10h", 36000.0), ("all", None), ("30", 1800.0), ("2.5", 150.0),
     ("0.5h", 1800.0), (" 1h ", 3600.0)],
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["90s", "", "ten", "-5", "0", "1d", "1 h", "h", "1hm", "ALL"])
def test_parse_budget_names_the_value_and_the_accepted_forms(text):
    with pytest.raises(ValueError, match=rf"Bad label budget {text!r}: expected .*'<N>m'.*'<N>h'.*'all'"):
        parse_budget(text)


def test_same_seed_same_subset_other_seed_another(cuts):
    first = ids(select_budget(cuts, 600.0, seed=0))
    assert ids(select_budget(cuts, 600.0, seed=0)) == first
    assert set(ids(select_budget(cuts, 600.0, seed=1))) != set(first)
    # the input order changes neither the choice nor that the output keeps the input order
    reordered = CutSet.from_cuts(sorted(cuts, key=lambda c: c.id))
    again = ids(select_budget(reordered, 600.0, seed=0))
    assert set(again) == set(first) and again == sorted(again)
    position = {cut_id: i for i, cut_id in enumerate(ids(cuts))}
    assert first == sorted(first, key=position.get)


@pytest.mark.parametrize("seconds", [600.0, 3600.0, 100.0, 1037.0, 2345.6, 45 * 60.0])
@pytest.mark.parametrize("seed", [0, 3])
def test_total_is_within_one_percent_below_the_budget(cuts, seconds, seed):
    got = total(select_budget(cuts, seconds, seed))
    assert 0.99 * seconds <= got <= seconds


@pytest.mark.parametrize("seconds", [600.0, 1037.0, 3600.0])
@pytest.mark.parametrize("seed", [0, 3])
def test_every_speaker_gives_about_the_same_audio(cuts, seconds, seed):
    per_speaker = defaultdict(float)
    for cut in select_budget(cuts, seconds, seed):
        per_speaker[cut.supervisions[0].speaker] += cut.duration
    assert len(per_speaker) == NUM_SPEAKERS
    assert max(per_speaker.values()) - min(per_speaker.values()) <= LONGEST


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_smaller_budgets_lie_inside_larger_ones(cuts, seed):
    subsets = [set(ids(select_budget(cuts, s, seed))) for s in (100.0, 600.0, 1037.0, 3600.0, 6000.0)]
    for smaller, larger in zip(subsets, subsets[1:]):
        assert smaller < larger


def test_all_or_a_budget_above_the_total_keeps_everything(cuts, caplog):
    with caplog.at_level(logging.INFO, logger="w2v.data.subset"):
        assert ids(select_budget(cuts, None)) == ids(cuts)
        assert ids(select_budget(cuts, parse_budget("10h"))) == ids(cuts)
    assert "covers all 800 cuts" in caplog.text


def test_a_budget_no_utterance_can_fill_names_it_and_the_shortest():
    cuts = CutSet.from_cuts([make_cut(f"1-1-{u:04d}", "1", 10.0 + u) for u in range(5)])
    with pytest.raises(ValueError, match=r"budget of 15\.0 s to within 1%: [2-5]\.0 s are left .* 1-1-0000, 10\.0 s"):
        select_budget(cuts, 15.0)


def test_a_cut_without_speaker_is_refused():
    cuts = CutSet.from_cuts([make_cut("1-1-0000", "1", 3.0), make_cut("2-1-0000", None, 3.0)])
    with pytest.raises(ValueError, match="Cut 2-1-0000 has no supervision with a speaker"):
        select_budget(cuts, 3.0)


def test_duplicate_cut_ids_are_refused(cuts):
    twice = CutSet.from_cuts(list(cuts) + list(cuts)[:1])
    with pytest.raises(ValueError, match="Cut ids are not unique"):
        select_budget(twice, 600.0)


def write_librilight(root: Path) -> dict[str, set[str]]:
    """A librispeech_finetuning/ tree with 2 utterances per chapter; split name -> its ids."""
    split_ids = defaultdict(set)
    subdirs = [f"1h/{i}/{kind}" for i in range(6) for kind in ("clean", "other")]
    subdirs += ["9h/clean", "9h/other"]
    for n, sub in enumerate(subdirs):
        spk, chapter = 100 + n, 7 * n
        trans = root / sub / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt"
        trans.parent.mkdir(parents=True)
        utts = [f"{spk}-{chapter}-{u:04d}" for u in range(2)]
        trans.write_text("".join(f"{u} SOME WORDS HERE\n" for u in utts) + "\n", encoding="utf-8")
        if sub.startswith("1h/0/"):
            split_ids["10m"].update(utts)
        if sub.startswith("1h/"):
            split_ids["1h"].update(utts)
        split_ids["10h"].update(utts)
    return split_ids


def test_librilight_ids_of_each_split(tmp_path):
    expected = write_librilight(tmp_path / "librispeech_finetuning")
    got = {split: librilight_ids(tmp_path / "librispeech_finetuning", split) for split in expected}
    assert got == expected
    assert got["10m"] == {"100-0-0000", "100-0-0001", "101-7-0000", "101-7-0001"}
    assert len(got["1h"]) == 24 and len(got["10h"]) == 28


def test_librilight_missing_directory_is_named(tmp_path):
    root = tmp_path / "librispeech_finetuning"
    write_librilight(root)
    shutil.rmtree(root / "1h/3")
    assert len(librilight_ids(root, "10m")) == 4
    with pytest.raises(FileNotFoundError, match=r"1h/3 does not exist"):
        librilight_ids(root, "1h")
    with pytest.raises(FileNotFoundError, match=r"nowhere/9h does not exist|nowhere/1h/0 does not exist"):
        librilight_ids(tmp_path / "nowhere", "10h")
    with pytest.raises(ValueError, match=r"Bad Libri-light budget '2h'"):
        librilight_ids(root, "2h")


def librilight_cuts(split_ids: set[str], extra: int = 3) -> CutSet:
    cut_ids = sorted(split_ids) + [f"999-1-{u:04d}" for u in range(extra)]
    random.Random(0).shuffle(cut_ids)
    return CutSet.from_cuts([make_cut(cut_id, cut_id.split("-")[0], 5.0) for cut_id in cut_ids])


def test_select_librilight_keeps_the_listed_cuts_in_input_order(tmp_path):
    expected = write_librilight(tmp_path / "ft")
    cuts = librilight_cuts(expected["10h"])
    got = select_librilight(cuts, tmp_path / "ft", "1h")
    assert ids(got) == [cut_id for cut_id in ids(cuts) if cut_id in expected["1h"]]
    assert set(ids(got)) == expected["1h"]


def test_select_librilight_names_the_listed_ids_the_cuts_lack(tmp_path):
    expected = write_librilight(tmp_path / "ft")
    listed = sorted(expected["10h"])
    cuts = librilight_cuts(set(listed[7:]))
    with pytest.raises(ValueError, match=rf"^7 of the 28 utterances .* 10h split .*first 5: {', '.join(listed[:5])}\)"):
        select_librilight(cuts, tmp_path / "ft", "10h")


def test_cli_round_trip(cuts, tmp_path, capsys):
    halves = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"]
    CutSet.from_cuts(list(cuts)[:300]).to_file(halves[0])
    CutSet.from_cuts(list(cuts)[300:]).to_file(halves[1])
    out = tmp_path / "out" / "cuts_10m.jsonl.gz"
    assert subset_cuts_main(["--cuts", *map(str, halves), "--budget", "10m", "--seed", "2", "--out", str(out)]) == 0
    # setup_logging replaces the root handlers (and so caplog's): read the log from stderr
    assert re.search(r"Budget 10m: \d+ of 800 cuts, 20 speakers, (9\.9|10\.0) min", capsys.readouterr().err)
    written = CutSet.from_file(out)
    assert ids(written) == ids(select_budget(cuts, 600.0, seed=2))
    assert 594.0 <= total(written) <= 600.0
    assert sorted(p.name for p in out.parent.iterdir()) == ["cuts_10m.jsonl.gz"]


def test_cli_librilight(tmp_path):
    expected = write_librilight(tmp_path / "ft")
    manifest, out = tmp_path / "train.jsonl.gz", tmp_path / "ll10m.jsonl.gz"
    librilight_cuts(expected["10h"]).to_file(manifest)
    argv = ["--cuts", str(manifest), "--budget", "10m", "--out", str(out), "--librilight-dir", str(tmp_path / "ft")]
    assert subset_cuts_main(argv) == 0
    assert set(ids(CutSet.from_file(out))) == expected["10m"]
