"""Which unlabeled images to label next, in rank order, with a score and a one-phrase reason for each.

Strategies:
- "typical": one typical image per k-means cluster without labels (diversity.typical_cluster_points). The cold-start
  choice: with few or no labels, typical images teach a classifier more than odd ones (TypiClust).
- "k-center": farthest-first coverage of the feature space (diversity.k_center_greedy).
- "uncertainty": the usual uncertainty + diversity hybrid. The POOL_FACTOR x n unlabeled rows of highest margin
  uncertainty (ties: the lower row first) form a pool, and k-center greedy picks n of them, counting distances to every
  labeled row, so that the picks are both unsure and unlike each other and the labeled images. Uncertainty alone
  would spend the budget on near-duplicates from one confused region; with a pool of 10 x n, k-center has room to
  spread while every pick stays among the 10 x n most uncertain images (a pool much larger lets diversity override
  uncertainty). Needs the teacher's probabilities.
- "auto": "uncertainty" when probabilities are given, else "typical".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stages.selection.diversity import check_selection_inputs, k_center_picks, typical_cluster_picks
from stages.selection.uncertainty import check_probabilities, margin_uncertainty

STRATEGIES = ("auto", "typical", "k-center", "uncertainty")
POOL_FACTOR = 10  # the uncertainty hybrid's pool: the POOL_FACTOR x n most uncertain unlabeled rows

REASON_TYPICAL = "typical point of an unlabeled cluster"
REASON_TYPICAL_AGAIN = "typical point of a cluster with few labeled images"
REASON_FAR = "far from labeled images"
REASON_CENTRAL = "most central image (nothing labeled yet)"
REASON_UNCERTAIN = "uncertain and far from labeled images"


@dataclass(frozen=True)
class Selection:
    """The images to label, best first."""

    rows: torch.Tensor
    """int64 row indices (CPU) into the features, in rank order; none of them labeled."""
    scores: torch.Tensor
    """float32, one per row, meaning `score_name`: typicality ("typical"), cosine distance to the nearest labeled or
    earlier pick when picked, inf for a cold-start first pick ("k-center"), margin uncertainty ("uncertainty")."""
    reasons: list[str]
    """One short phrase per row, for the person labeling (the REASON_* constants)."""
    strategy: str
    """The strategy that ran ("auto" resolved)."""
    score_name: str
    """What `scores` measure: "typicality", "distance" or "margin uncertainty"."""


def rank_for_labeling(
    features: torch.Tensor,
    labeled: torch.Tensor,
    n: int,
    seed: int,
    probabilities: torch.Tensor | None = None,
    strategy: str = "auto",
) -> Selection:
    """The n unlabeled images to label next (see the module docstring for the strategies). `features`: N x D
    embeddings from the pretrained encoder; `labeled`: N bools, True for rows that already have a label (test rows
    included); `probabilities`: N x K softmax outputs of a fine-tuned teacher, or None before one exists. Bad input is
    a ValueError with a one-line message that names the fix."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    labeled = check_selection_inputs(features, labeled, n)
    if probabilities is not None:
        check_probabilities(probabilities, len(features))
    if strategy == "auto":
        strategy = "uncertainty" if probabilities is not None else "typical"
    if strategy == "typical":
        typical = typical_cluster_picks(features, labeled, n, seed)
        reasons = [REASON_TYPICAL if fresh else REASON_TYPICAL_AGAIN for fresh in typical.unlabeled_cluster.tolist()]
        return Selection(typical.rows, typical.typicality, reasons, strategy, "typicality")
    if strategy == "k-center":
        picks = k_center_picks(features, labeled, n)
        reasons = [REASON_CENTRAL if distance == float("inf") else REASON_FAR for distance in picks.distances.tolist()]
        return Selection(picks.rows, picks.distances, reasons, strategy, "distance")
    if probabilities is None:
        raise ValueError(
            "strategy 'uncertainty' needs the teacher's probabilities; pass them, or use strategy 'typical' or "
            "'k-center' until a fine-tuned teacher exists"
        )
    uncertainty = margin_uncertainty(probabilities).cpu()
    pool = uncertain_pool(uncertainty, labeled.cpu(), POOL_FACTOR * n)
    picks = k_center_picks(features, labeled, n, pool=pool)
    return Selection(picks.rows, uncertainty[picks.rows], [REASON_UNCERTAIN] * n, strategy, "margin uncertainty")


def uncertain_pool(uncertainty: torch.Tensor, labeled: torch.Tensor, size: int) -> torch.Tensor:
    """The `size` unlabeled rows of highest uncertainty (all of them if fewer), most uncertain first; a stable sort,
    so that equal scores keep row order and the pool is the same on every run."""
    unlabeled = (~labeled).nonzero().squeeze(1)
    order = torch.sort(uncertainty[unlabeled], descending=True, stable=True).indices
    return unlabeled[order[:size]]
