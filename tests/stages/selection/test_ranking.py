"""Ranking images to label (stages/selection/ranking.py): the strategies "auto" chooses, the uncertainty hybrid
staying in its uncertain pool while spreading, determinism, and one-line errors."""

import pytest
import torch

from stages.selection.ranking import (
    POOL_FACTOR,
    REASON_CENTRAL,
    REASON_FAR,
    REASON_TYPICAL,
    REASON_UNCERTAIN,
    rank_for_labeling,
)
from stages.selection.uncertainty import margin_uncertainty
from tests.stages.selection.synthetic import clustered_features


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def teacher_probabilities(cluster: torch.Tensor, confused: set[int], seed: int = 0) -> torch.Tensor:
    """A 2-class teacher: near 50/50 on rows of the `confused` clusters, sure elsewhere, every row distinct."""
    jitter = 0.05 * torch.rand(len(cluster), generator=torch.Generator().manual_seed(seed))
    unsure = torch.tensor([int(c) in confused for c in cluster])
    p = torch.where(unsure, 0.5 + jitter, 0.95 + jitter / 2)
    return torch.stack([p, 1 - p], dim=1)


def test_auto_is_typical_without_a_teacher():
    features, cluster, _ = clustered_features(num_clusters=5)
    labeled = torch.zeros(len(features), dtype=torch.bool)
    selection = rank_for_labeling(features, labeled, 5, seed=0)
    assert selection.strategy == "typical" and selection.score_name == "typicality"
    assert sorted(cluster[selection.rows].tolist()) == list(range(5))
    assert selection.reasons == [REASON_TYPICAL] * 5 and selection.scores.shape == (5,)


def test_k_center_strategy_reports_distances_and_the_cold_start_pick():
    features, cluster, _ = clustered_features(num_clusters=5)
    selection = rank_for_labeling(features, torch.zeros(len(features), dtype=torch.bool), 5, 0, strategy="k-center")
    assert selection.reasons == [REASON_CENTRAL] + [REASON_FAR] * 4
    assert selection.scores[0] == float("inf") and len(set(cluster[selection.rows].tolist())) == 5


def test_uncertainty_hybrid_picks_distinct_rows_from_the_uncertain_pool_and_spreads_them():
    features, cluster, _ = clustered_features(num_clusters=8, per_cluster=40)  # 320 rows
    labeled = torch.zeros(len(features), dtype=torch.bool)
    labeled[:8] = True  # one labeled row per cluster
    probabilities = teacher_probabilities(cluster, confused={1, 4, 6})  # 120 uncertain rows, 117 unlabeled
    n = 6
    selection = rank_for_labeling(features, labeled, n, seed=0, probabilities=probabilities)
    assert selection.strategy == "uncertainty" and selection.reasons == [REASON_UNCERTAIN] * n
    rows = selection.rows.tolist()
    assert len(set(rows)) == n and not labeled[selection.rows].any()
    margin = margin_uncertainty(probabilities)
    pool = set((~labeled).nonzero().squeeze(1)[margin[~labeled].argsort(descending=True)[: POOL_FACTOR * n]].tolist())
    assert set(rows) <= pool  # every pick among the 10 x n most uncertain unlabeled rows
    assert set(cluster[selection.rows].tolist()) == {1, 4, 6}  # spread over every confused cluster
    torch.testing.assert_close(selection.scores, margin[selection.rows])


def test_the_same_seed_gives_the_same_ranking():
    features, cluster, _ = clustered_features(num_clusters=6, seed=2)
    labeled = torch.zeros(len(features), dtype=torch.bool)
    labeled[::7] = True
    probabilities = teacher_probabilities(cluster, confused={0, 3})
    for kwargs in ({}, {"probabilities": probabilities}, {"strategy": "k-center"}):
        first = rank_for_labeling(features, labeled, 5, seed=11, **kwargs)
        again = rank_for_labeling(features, labeled, 5, seed=11, **kwargs)
        assert torch.equal(first.rows, again.rows) and first.reasons == again.reasons


def test_bad_requests_are_one_line_naming_the_fix():
    features, _, _ = clustered_features(num_clusters=2, per_cluster=5)
    labeled = torch.zeros(10, dtype=torch.bool)
    labeled[:6] = True
    with pytest.raises(ValueError, match=r"^asks for 5 images but only 4 are unlabeled; lower --budget to at most 4$"):
        rank_for_labeling(features, labeled, 5, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        rank_for_labeling(features, labeled, 0, seed=0)
    with pytest.raises(ValueError, match="one entry per feature row"):
        rank_for_labeling(features, labeled[:9], 1, seed=0)
    with pytest.raises(ValueError, match="probabilities have 9 rows but there are 10 feature rows"):
        rank_for_labeling(features, labeled, 1, seed=0, probabilities=torch.full((9, 2), 0.5))
    with pytest.raises(ValueError, match="unknown selection strategy 'margin'; use one of auto, typical"):
        rank_for_labeling(features, labeled, 1, seed=0, strategy="margin")
    with pytest.raises(ValueError, match="strategy 'uncertainty' needs the teacher's probabilities"):
        rank_for_labeling(features, labeled, 1, seed=0, strategy="uncertainty")
