"""How unsure a fine-tuned teacher is about each image, from its N x K softmax outputs: 1 = as unsure as it can be,
0 = certain. Both scores are in [0, 1] whatever K is, so that one threshold or one plot reads the same for 10 classes
as for 1000."""

from __future__ import annotations

import math

import torch

PROBABILITY_TOLERANCE = 1e-2  # rows may miss a sum of 1 by this much (half-precision softmax over 1000 classes)


def check_probabilities(probabilities: torch.Tensor, num_rows: int | None = None) -> torch.Tensor:
    """The probabilities as they are, after one-line errors for a wrong shape and for logits passed by mistake (a
    margin of logits is not in [0, 1] and would rank images by a different rule)."""
    if not isinstance(probabilities, torch.Tensor) or probabilities.dim() != 2 or not probabilities.is_floating_point():
        got = f"shape {tuple(probabilities.shape)}" if isinstance(probabilities, torch.Tensor) else "no tensor"
        raise ValueError(f"probabilities must be an N x K float tensor of the teacher's softmax outputs, got {got}")
    if num_rows is not None and len(probabilities) != num_rows:
        raise ValueError(
            f"probabilities have {len(probabilities)} rows but there are {num_rows} feature rows; compute both on "
            "the same images in the same order"
        )
    if probabilities.shape[1] < 2:
        raise ValueError(f"probabilities must have K >= 2 classes (columns), got {probabilities.shape[1]}")
    in_range = bool(probabilities.min() >= 0) and bool(probabilities.max() <= 1)  # False for NaN too
    sums = probabilities.sum(dim=1, dtype=torch.float32)
    if not in_range or not bool(((sums - 1).abs() <= PROBABILITY_TOLERANCE).all()):
        raise ValueError(
            "probabilities must be softmax outputs (every entry in [0, 1], every row summing to 1); apply "
            "torch.softmax(logits, dim=1) to the teacher's logits first"
        )
    return probabilities


def margin_uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
    """1 - (p_top1 - p_top2) per row, in [0, 1]: 1 when the two likeliest classes tie, 0 when one class has it all.
    The margin looks only at the decision the teacher would have to make, which is why margin sampling is the
    usual uncertainty baseline for classifiers with many classes."""
    top2 = check_probabilities(probabilities).topk(2, dim=1).values.float()
    return (1 - (top2[:, 0] - top2[:, 1])).clamp_(0, 1)


def entropy_uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy divided by log K per row, in [0, 1]: 1 for a uniform row, 0 for a one-hot row. Unlike the margin it
    also counts how the remaining mass spreads over the unlikely classes."""
    probabilities = check_probabilities(probabilities).float()
    entropy = -torch.special.xlogy(probabilities, probabilities).sum(dim=1)
    return (entropy / math.log(probabilities.shape[1])).clamp_(0, 1)
