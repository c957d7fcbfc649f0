"""Uncertainty scores (stages/selection/uncertainty.py): known values, ordering, range, and logits refused."""

import pytest
import torch

from stages.selection.uncertainty import entropy_uncertainty, margin_uncertainty


def test_margin_is_one_minus_the_gap_between_the_two_likeliest_classes():
    probabilities = torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.2, 0.1], [0.1, 0.45, 0.45], [0.5, 0.3, 0.2]])
    torch.testing.assert_close(margin_uncertainty(probabilities), torch.tensor([0.0, 0.5, 1.0, 0.8]))
    assert margin_uncertainty(probabilities).argsort(descending=True).tolist() == [2, 3, 1, 0]


def test_entropy_is_normalised_by_log_k():
    probabilities = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(entropy_uncertainty(probabilities), torch.tensor([0.0, 1.0, 0.5]))


def test_both_scores_stay_in_zero_one_for_half_precision_softmax_over_many_classes():
    logits = 5 * torch.randn(64, 1000, generator=torch.Generator().manual_seed(0))
    probabilities = torch.softmax(logits, dim=1).half()
    for score in (margin_uncertainty(probabilities), entropy_uncertainty(probabilities)):
        assert score.dtype == torch.float32 and score.shape == (64,)
        assert float(score.min()) >= 0 and float(score.max()) <= 1


@pytest.mark.parametrize("score", [margin_uncertainty, entropy_uncertainty])
def test_logits_and_wrong_shapes_are_refused_naming_the_fix(score):
    with pytest.raises(ValueError, match=r"apply torch.softmax\(logits, dim=1\)"):
        score(torch.tensor([[2.0, -1.0], [0.5, 0.1]]))
    with pytest.raises(ValueError, match="N x K float tensor"):
        score(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="K >= 2"):
        score(torch.ones(3, 1))
