"""The schedule that follows the data: warm-up by epochs of updates, stop at the dev-loss plateau."""

import math

import pytest

from tests.asr.test_train import TINY, _cfg
from w2v.asr.train import Plateau, TrainConfig, find_resume, train, warmup_updates


def test_plateau_stops_after_patience_epochs_without_a_new_best():
    p = Plateau(patience=3, smoothing=0.0)  # the raw loss
    losses = [2.0, 1.5, 1.2, 1.1995, 1.3, 1.19, 1.25]  # 1.1995: < 0.1% better, not a new best
    stops = [p.update(e, loss, output_ratio=0.9) for e, loss in enumerate(losses, start=1)]
    assert stops == [False, False, False, False, False, False, False]
    assert (p.best, p.best_epoch) == (1.19, 6)
    assert [p.update(e, 1.3, output_ratio=0.9) for e in (8, 9)] == [False, True]  # 3 epochs after epoch 6
    assert p.stopped


def test_plateau_never_stops_while_the_model_says_almost_nothing():
    """The flat loss of a CTC model that still outputs mostly blanks is not convergence."""
    p = Plateau(patience=2, smoothing=0.0)
    flat = [p.update(e, 1.82, output_ratio=0.2) for e in range(1, 21)]
    assert flat == [False] * 20
    assert p.update(21, 1.82, output_ratio=0.6)  # it speaks, and has not improved for 20 epochs
    # without a dev set (no ratio measured) the loss alone decides
    assert Plateau(patience=2).update(3, 1.0) is False and Plateau(patience=2, best_epoch=1, best=0.5).update(3, 1.0)


def test_plateau_smooths_the_noise_of_a_falling_dev_loss():
    """The dev loss of the 10-minute fbank model (LibriSpeech mini, epochs 36-48): falling ~1% per
    epoch under ±3% noise. Raw, a 5-epoch patience stops at 48 on the lucky 0.619 of epoch 43; the
    moving average keeps setting new bests."""
    losses = [0.6901, 0.6835, 0.6745, 0.6670, 0.6463, 0.6637, 0.6514, 0.6190, 0.6448, 0.6355, 0.6189,
              0.6239, 0.6226]
    raw, smooth = Plateau(patience=5, smoothing=0.0), Plateau(patience=5)
    assert [e for e, x in enumerate(losses, 36) if raw.update(e, x, 0.9)] == [48]
    assert not any(smooth.update(e, x, 0.9) for e, x in enumerate(losses, 36))
    assert smooth.best_epoch == 48 and smooth.smoothed == pytest.approx(0.6244, abs=1e-4)
    # the average: 0.5 × the past + 0.5 × the new loss
    p = Plateau()
    p.update(1, 2.0), p.update(2, 1.0), p.update(3, math.nan)
    assert p.smoothed == 1.5 and p.best == 1.5 and p.best_epoch == 2


@pytest.mark.parametrize("patience, updates, per_epoch, wait", [
    (5, 250, 52.6, 5),  # the mini corpus, all labels: 5 epochs already hold 263 updates
    (5, 250, 20.0, 13),  # its 10-minute budget: 20 updates per epoch
    (5, 250, 5.0, 50),  # the tiny corpus
    (5, 0, 5.0, 5),  # patience in epochs only
    (5, 250, 50.0, 5),  # exactly 250 updates
])
def test_patience_lasts_at_least_patience_updates(patience, updates, per_epoch, wait):
    p = Plateau(patience=patience, patience_updates=updates, updates_per_epoch=per_epoch, smoothing=0.0)
    assert p.wait == wait
    stops = [p.update(e, 1.0 if e == 1 else 2.0, 0.9) for e in range(1, wait + 2)]
    assert stops.index(True) == wait  # epoch wait + 1: wait epochs after the best


def test_plateau_ignores_non_finite_losses():
    p = Plateau(patience=2)
    assert not p.update(1, math.nan)
    assert p.best_epoch == 0 and p.update(2, math.inf)  # nothing finite in 2 epochs: stop


@pytest.mark.parametrize("seconds, max_duration, world, expected", [
    (1577.0, 30.0, 1, 263),  # the mini corpus: 52.6 updates per epoch × 5 epochs
    (150.0, 30.0, 1, 25),  # the tiny corpus: 5 per epoch
    (360000.0, 200.0, 1, 300),  # 100 hours: warmup_steps
    (1577.0, 30.0, 2, 131),  # two processes: half the updates per epoch
    (10.0, 30.0, 1, 5),  # less than one batch: one update per epoch
])
def test_warmup_is_at_most_a_few_epochs_of_updates(seconds, max_duration, world, expected):
    cfg = TrainConfig(max_duration=max_duration)
    assert warmup_updates(cfg, seconds, world) == expected


def test_auto_schedule_stops_at_the_plateau_and_resumes_to_the_same_place(toy_data, tmp_path, caplog):
    """num_epochs 0 trains until the dev loss stalls; the stop is stored, so a rerun trains nothing,
    and a longer patience continues from where it stopped."""
    exp = tmp_path / "exp"
    cfg = _cfg(toy_data, exp, num_epochs=0, patience=2, patience_updates=0, max_epochs=40, warmup_steps=300,
               warmup_epochs=2)
    h = train(cfg, TINY).history
    last = h["epoch"][-1]
    assert 3 <= last < 40
    ckpt = find_resume(exp, 0).ckpt
    assert ckpt["plateau"]["output_ratio"] >= 0.5  # it says something
    smoothed, s = [], None
    for x in h["dev_loss"]:
        s = x if s is None else 0.5 * s + 0.5 * x
        smoothed.append(s)
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    assert h["epoch"][best] == last - 2  # stopped two epochs after the best smoothed dev loss
    assert ckpt["plateau"]["smoothed"] == pytest.approx(smoothed[-1])
    assert ckpt["warmup"] == warmup_updates(cfg, _train_seconds(toy_data))
    assert ckpt["plateau"]["stopped"] and ckpt["plateau"]["best_epoch"] == last - 2

    caplog.clear()
    with caplog.at_level("INFO"):
        assert train(cfg, TINY).history["epoch"] == []
    assert f"nothing to train for the dev loss stopped improving at epoch {last - 2}" in caplog.text

    more = train(_cfg(toy_data, exp, num_epochs=0, patience=3, patience_updates=0, max_epochs=40,
                      warmup_steps=300, warmup_epochs=2), TINY).history
    assert more["epoch"][0] == last + 1  # continues, does not start again

    # a fixed number of epochs is still an override
    fixed = train(_cfg(toy_data, tmp_path / "fixed", num_epochs=2, patience=1), TINY).history
    assert fixed["epoch"] == [1, 2]


def _train_seconds(toy_data) -> float:
    from lhotse import load_manifest_lazy

    return sum(c.duration for c in load_manifest_lazy(toy_data[1]))
