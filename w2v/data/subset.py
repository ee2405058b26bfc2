"""Label budgets for few-label fine-tuning: 10 min / 1 h / 10 h of transcribed training audio.

Two ways to get such a subset:

- ``select_budget``: any budget from any cuts. The cuts are put in one fixed, speaker-balanced
  order (it depends on the seed only, never on the budget); a budget takes the longest prefix of
  it that fits and fills the last gap with the next cuts that fit. So for one seed a smaller
  budget's subset lies inside a larger one's (10 min ⊂ 1 h ⊂ 10 h) whenever the larger prefix runs
  past the last cut the smaller one's fill took, which a few utterances past its prefix suffice for.
- ``select_librilight``: the official Libri-light splits (``librispeech_finetuning/``), as used
  by wav2vec 2.0, so that numbers compare with the papers.

The speaker-balanced order: each speaker's utterances in a seeded shuffled order; then, one at a
time, the next utterance of the speaker with the least audio so far (ties in a seeded speaker
order). Every prefix therefore has every speaker's total within one utterance of the others'
(until a speaker runs out), and the first utterances are one per speaker.
"""

from __future__ import annotations

import heapq
import logging
import random
import re
from pathlib import Path

from lhotse import CutSet
from lhotse.cut import Cut

log = logging.getLogger(__name__)

BUDGET_FORMS = "'<N>m' (minutes), '<N>h' (hours), a bare number (minutes) or 'all'"
# the subset's total may fall short of the budget by at most this fraction
TOLERANCE = 0.01
_MAX_DROP = 20  # prefix cuts a fill may give back when the gap left is shorter than any cut
_SEARCH = 200  # cuts after the prefix that the last-resort fill (subset sum) searches
# Libri-light budget -> directories under librispeech_finetuning/ that make it up
LIBRILIGHT_DIRS = {
    "10m": ["1h/0"],
    "1h": [f"1h/{i}" for i in range(6)],
    "10h": [f"1h/{i}" for i in range(6)] + ["9h"],
}


def parse_budget(text: str) -> float | None:
    """Seconds of audio in a budget such as ``10m``, ``1h``, ``2.5`` (minutes); None for ``all``."""
    if text.strip() == "all":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([mh]?)", text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"Bad label budget {text!r}: expected a positive {BUDGET_FORMS}, e.g. 10m, 1h, 10h")
    return float(match.group(1)) * (3600.0 if match.group(2) == "h" else 60.0)


def speaker_of(cut: Cut) -> str:
    """The speaker of a cut's first supervision; a cut without one is refused (it cannot be balanced)."""
    if not cut.supervisions or cut.supervisions[0].speaker is None:
        raise ValueError(f"Cut {cut.id} has no supervision with a speaker")
    return cut.supervisions[0].speaker


def balanced_order(cuts: CutSet, seed: int = 0) -> list[Cut]:
    """All cuts in the seed's speaker-balanced order (module docstring); the same for every budget.

    The input order does not matter: speakers and their cuts are sorted by id before shuffling.
    """
    rng = random.Random(seed)
    by_speaker: dict[str, list[Cut]] = {}
    for cut in sorted(cuts, key=lambda c: c.id):
        by_speaker.setdefault(speaker_of(cut), []).append(cut)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    for spk in speakers:
        rng.shuffle(by_speaker[spk])
    # (seconds so far, rank, speaker, index of its next cut): least audio first, then rank
    heap = [(0.0, rank, spk, 0) for rank, spk in enumerate(speakers)]
    order = []
    while heap:
        seconds, rank, spk, i = heapq.heappop(heap)
        cut = by_speaker[spk][i]
        order.append(cut)
        if i + 1 < len(by_speaker[spk]):
            heapq.heappush(heap, (seconds + cut.duration, rank, spk, i + 1))
    return order


def _take_budget(order: list[Cut], seconds: float) -> list[Cut]:
    """The longest prefix of ``order`` within ``seconds``, then cuts after it that fill the gap.

    When 1% of the budget exceeds the longest cut (1 h and up, for LibriSpeech), the prefix is
    already within 1% and the subset is exactly a prefix.
    """
    prefix, total = [], 0.0
    for cut in order:
        if total + cut.duration > seconds:
            break
        prefix.append(cut)
        total += cut.duration
    # A gap shorter than every cut left cannot be filled: give back the prefix's last cuts, one at
    # a time, and fill the larger gap instead.
    errors = []
    for drop in range(min(len(prefix), _MAX_DROP) + 1):
        head = prefix[:len(prefix) - drop]
        try:
            return head + _fill_gap(order[len(head):], seconds - sum(c.duration for c in head), seconds)
        except ValueError as e:
            errors.append(e)
    raise errors[0]


def _fill_gap(rest: list[Cut], gap: float, seconds: float) -> list[Cut]:
    """Cuts from ``rest`` adding up to between ``gap`` less 1% of ``seconds`` and ``gap``.

    The earliest cuts in order that do it (:func:`_subset_sum` over the next few hundred): taking
    them from next to the prefix keeps speakers balanced and a larger budget's prefix containing
    them; the globally best-fitting cut could sit anywhere in the order and break both.
    """
    tolerance = TOLERANCE * seconds
    if gap <= tolerance:
        return []
    found = _subset_sum(rest[:_SEARCH], gap - tolerance, gap)
    if found is None:
        shortest = min(rest, key=lambda c: c.duration)
        raise ValueError(
            f"Cannot fill a label budget of {seconds:.1f} s to within {TOLERANCE:.0%}: "
            f"{gap:.1f} s are left and no remaining utterance fills them (the shortest is "
            f"{shortest.id}, {shortest.duration:.1f} s)"
        )
    return found


def _subset_sum(cuts: list[Cut], low: float, high: float) -> list[Cut] | None:
    """Cuts whose durations add up to between ``low`` and ``high`` s (earliest ones preferred), or
    None. Dynamic programming over sums in 10 ms steps, checked on the exact sums."""
    reach: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}  # 10 ms steps → (sum, cut indices)
    for i, cut in enumerate(cuts):
        for total, picked in list(reach.values()):
            new = total + cut.duration
            if new <= high and round(new * 100) not in reach:
                reach[round(new * 100)] = (new, picked + [i])
                if new >= low:
                    return [cuts[j] for j in picked + [i]]
    return None


def select_budget(cuts: CutSet, seconds: float | None, seed: int = 0) -> CutSet:
    """A speaker-balanced subset of ``cuts`` with ``seconds`` of audio (within 1%, never more).

    Args:
      cuts: cuts whose first supervision names the speaker; ids unique.
      seconds: the budget (``parse_budget``); None, or at least the total, keeps every cut.
      seed: picks the order; the same cuts and seed give the same subset, and for one seed a
        smaller budget's subset lies inside a larger one's (module docstring).

    Returns:
      The chosen cuts in their input order.
    """
    order = balanced_order(cuts, seed)
    if len({cut.id for cut in order}) != len(order):
        raise ValueError("Cut ids are not unique; was the same manifest given twice?")
    total = sum(cut.duration for cut in order)
    if seconds is None or seconds >= total:
        log.info("Label budget %s covers all %d cuts (%.1f min): keeping them all",
                 "all" if seconds is None else f"{seconds / 60:.1f} min", len(order), total / 60)
        return CutSet.from_cuts(list(cuts))
    ids = {cut.id for cut in _take_budget(order, seconds)}
    return CutSet.from_cuts([cut for cut in cuts if cut.id in ids])


def librilight_ids(finetuning_dir: Path, budget: str) -> set[str]:
    """Utterance ids of a Libri-light fine-tuning split (``10m``, ``1h`` or ``10h``).

    ``finetuning_dir`` is the unpacked ``librispeech_finetuning/``: ``1h/{0..5}/{clean,other}/``
    and ``9h/{clean,other}/``, each holding LibriSpeech ``<spk>/<chapter>/*.trans.txt``. 10m is
    ``1h/0``, 1h all of ``1h/``, 10h ``1h/`` and ``9h/``.
    """
    if budget not in LIBRILIGHT_DIRS:
        raise ValueError(f"Bad Libri-light budget {budget!r}: expected one of {sorted(LIBRILIGHT_DIRS)}")
    ids = set()
    for sub in LIBRILIGHT_DIRS[budget]:
        directory = Path(finetuning_dir) / sub
        transcripts = sorted(directory.rglob("*.trans.txt"))
        if not transcripts:
            what = "has no *.trans.txt files" if directory.is_dir() else "does not exist"
            raise FileNotFoundError(f"Libri-light {budget} split: {directory} {what}")
        for path in transcripts:
            ids.update(_utterance_ids(path))
    return ids


def _utterance_ids(trans_txt: Path) -> list[str]:
    """The first field of each line of a LibriSpeech ``<spk>-<chapter>.trans.txt``."""
    lines = trans_txt.read_text(encoding="utf-8").splitlines()
    return [line.split(maxsplit=1)[0] for line in lines if line.strip()]


def select_librilight(cuts: CutSet, finetuning_dir: Path, budget: str) -> CutSet:
    """The cuts whose first supervision is in a Libri-light split, in input order.

    Raises ValueError naming the listed utterances the cuts lack: training on part of a split
    would give numbers that do not compare with the published ones.
    """
    ids = librilight_ids(finetuning_dir, budget)
    kept = [cut for cut in cuts if cut.supervisions and cut.supervisions[0].id in ids]
    missing = sorted(ids - {cut.supervisions[0].id for cut in kept})
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(ids)} utterances of the Libri-light {budget} split are not "
            f"in the cuts (first 5: {', '.join(missing[:5])}); give the training parts they come from"
        )
    return CutSet.from_cuts(kept)
