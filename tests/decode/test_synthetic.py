import pytest
import torch

from w2v.decode.ctc import ctc_greedy_search
from tests.helpers import peaky_log_probs


def test_forced_path_layout():
    log_probs, lengths = peaky_log_probs([[3, 3, 1], [2]], 5, frames_per_token=2, blanks_between=1,
                                         peak=30.0, noise=0.1)
    assert lengths.tolist() == [10, 4]
    assert log_probs[0, :10].argmax(-1).tolist() == [0, 3, 3, 0, 3, 3, 0, 1, 1, 0]
    assert torch.allclose(log_probs[0, :10].exp().sum(-1), torch.ones(10))
    assert (log_probs[1, 4:] == 0).all()
    assert ctc_greedy_search(log_probs, lengths) == [[3, 3, 1], [2]]


def test_confusable_classes_sit_inside_the_gap():
    log_probs, lengths = peaky_log_probs([[1, 2, 3] * 20], 50, peak=30.0, noise=1.0,
                                         num_confusable=2, confusable_gap=(3.0, 6.0))
    top2 = log_probs[0, : lengths[0]].topk(2, dim=-1).values
    gap = top2[:, 0] - top2[:, 1]
    assert float(gap.max()) <= 6.0 + 1e-4
    assert float(gap.min()) >= 0.0  # the path label stays on top (gap >= 3 unless noise wins)
    assert float(gap.median()) == pytest.approx(4.0, abs=1.0)


def test_bad_token_raises():
    with pytest.raises(ValueError):
        peaky_log_probs([[0, 1]], 4)
