"""Diversity picks (stages/selection/diversity.py): k-center greedy and TypiClust's typical points on features with
known clusters, and the blocked distance math against dense references."""

import math

import pytest
import torch
import torch.nn.functional as F

from stages.selection import diversity
from stages.selection.diversity import (
    k_center_greedy,
    k_center_picks,
    nearest_cosine_distances,
    typical_cluster_picks,
    typical_cluster_points,
)
from tests.stages.selection.synthetic import clustered_features


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def no_labels(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.bool)


def dense_k_center(features: torch.Tensor, labeled: torch.Tensor, n: int) -> list[int]:
    """The textbook version: a full N x N cosine distance matrix."""
    units = F.normalize(features, dim=1)
    distance = (1 - units @ units.T).clamp(min=0)
    if labeled.any():
        nearest = distance[:, labeled].min(dim=1).values
    else:
        mean = units.mean(dim=0)
        first = int(torch.argmax(units @ mean))
        nearest = distance[:, first].clone()
        nearest[first] = -math.inf
    nearest[labeled] = -math.inf
    picks = [] if labeled.any() else [first]
    while len(picks) < n:
        best = int(torch.argmax(nearest))
        picks.append(best)
        nearest = torch.minimum(nearest, distance[:, best])
        nearest[picks] = -math.inf
    return picks


def test_k_center_picks_are_distinct_unlabeled_and_cover_every_cluster():
    features, cluster, _ = clustered_features(num_clusters=8)
    picks = k_center_greedy(features, no_labels(len(features)), 8, seed=0)
    assert picks.dtype == torch.int64 and len(picks) == 8
    assert len(set(cluster[picks].tolist())) == 8  # the first n picks cover n distinct clusters
    more = k_center_greedy(features, no_labels(len(features)), 20, seed=0)
    assert len(set(more.tolist())) == 20 and torch.equal(more[:8], picks)  # pick order is stable under a larger n


def test_k_center_goes_to_the_clusters_without_labels_first():
    features, cluster, _ = clustered_features(num_clusters=8)
    labeled = cluster < 5  # clusters 0..4 fully labeled
    labeled[cluster == 5] = False
    picks = k_center_greedy(features, labeled, 3, seed=0)
    assert not labeled[picks].any()
    assert sorted(cluster[picks].tolist()) == [5, 6, 7]


def test_k_center_cold_start_begins_with_the_most_central_row():
    features, _, _ = clustered_features(num_clusters=3, per_cluster=20, dim=4)
    features = features + torch.tensor([3.0, 0, 0, 0])  # a common direction, so that "central" is well defined
    picks = k_center_picks(features, no_labels(len(features)), 4)
    units = F.normalize(features, dim=1)
    assert int(picks.rows[0]) == int(torch.argmax(units @ units.mean(dim=0)))
    assert picks.distances[0] == math.inf and torch.isfinite(picks.distances[1:]).all()
    assert (picks.distances[1:].diff() <= 0).all()  # farthest-first: each pick is at most as far as the one before


def test_blocked_k_center_and_distances_match_the_dense_versions(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(41, 5, generator=generator)
    labeled = torch.zeros(41, dtype=torch.bool)
    labeled[[3, 17, 30]] = True
    monkeypatch.setattr(diversity, "CHUNK_ROWS", 4)  # many blocks, with ragged last ones
    for mask in (labeled, no_labels(41)):
        assert k_center_greedy(features, mask, 12, seed=0).tolist() == dense_k_center(features, mask, 12)

    units = F.normalize(features, dim=1)
    dense = (1 - units @ units.T).clamp(min=0)
    queries, reference = torch.arange(0, 41, 2), torch.arange(5, 38)
    expected = dense[queries][:, reference]
    expected[queries[:, None] == reference[None, :]] = math.inf  # not its own neighbour
    blocked = nearest_cosine_distances(features, queries, reference, k=3)
    torch.testing.assert_close(blocked, expected.topk(3, dim=1, largest=False).values)


def test_typical_points_take_one_row_near_the_centre_of_each_cluster():
    features, cluster, centres = clustered_features(num_clusters=6, per_cluster=40)
    picks = typical_cluster_picks(features, no_labels(len(features)), 6, seed=0)
    assert sorted(cluster[picks.rows].tolist()) == list(range(6))
    assert picks.unlabeled_cluster.all() and (picks.typicality > 0).all()
    units = F.normalize(features, dim=1)
    to_centre = 1 - (units * centres[cluster]).sum(dim=1)
    for row in picks.rows.tolist():
        members = cluster == cluster[row]
        assert to_centre[row] < to_centre[members].median()  # in the dense middle, not at the edge


def test_typical_points_go_to_clusters_without_labels_and_follow_the_seed():
    features, cluster, _ = clustered_features(num_clusters=6, per_cluster=30)
    labeled = torch.zeros(len(features), dtype=torch.bool)
    labeled[[0, 1, 7]] = True  # rows in clusters 0, 1 and 1
    picks = typical_cluster_points(features, labeled, 4, seed=3)
    assert not labeled[picks].any()
    assert sorted(cluster[picks].tolist()) == [2, 3, 4, 5]
    assert torch.equal(picks, typical_cluster_points(features, labeled, 4, seed=3))


def test_typical_points_when_k_means_finds_fewer_clusters_than_asked():
    features = torch.ones(10, 3)  # one distinct point: k-means leaves clusters empty
    labeled = torch.zeros(10, dtype=torch.bool)
    labeled[0] = True
    picks = typical_cluster_picks(features, labeled, 4, seed=0)
    assert len(set(picks.rows.tolist())) == 4 and not labeled[picks.rows].any()
    assert not picks.unlabeled_cluster.all()  # a cluster with a label had to give more than one pick


@pytest.mark.parametrize("pick", [k_center_greedy, typical_cluster_points])
def test_bad_input_is_one_line_naming_the_fix(pick):
    features, _, _ = clustered_features(num_clusters=2, per_cluster=3)
    labeled = no_labels(6)
    labeled[:4] = True
    with pytest.raises(ValueError, match="asks for 3 images but only 2 are unlabeled; lower --budget to at most 2"):
        pick(features, labeled, 3, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        pick(features, labeled, 0, seed=0)
    with pytest.raises(ValueError, match="one entry per feature row"):
        pick(features, no_labels(5), 1, seed=0)
    with pytest.raises(ValueError, match="bool tensor"):
        pick(features, torch.zeros(6, dtype=torch.int64), 1, seed=0)
    with pytest.raises(ValueError, match="N x D float tensor"):
        pick(features[0], labeled, 1, seed=0)
    with pytest.raises(ValueError, match="NaN or inf in 1 rows"):
        pick(torch.cat([features[:5], torch.full((1, 8), math.nan)]), no_labels(6), 1, seed=0)


def test_typical_points_leave_tiny_clusters_for_last_and_revisit_clusters_past_the_cap(monkeypatch):
    features, cluster, _ = clustered_features(num_clusters=5, per_cluster=30)
    keep = (cluster < 4) | (torch.arange(len(cluster)) < 15)  # cluster 4 keeps 3 rows: an outlier group
    features, cluster = features[keep], cluster[keep]
    picks = typical_cluster_points(features, no_labels(len(features)), 5, seed=0)
    assert sorted(cluster[picks[:4]].tolist()) == [0, 1, 2, 3] and cluster[picks[4]] != 4  # a 2nd pick, not outliers
    monkeypatch.setattr(diversity, "MAX_CLUSTERS", 5)  # the true clusters, though nearly every row is labeled
    everything_else = torch.ones(len(features), dtype=torch.bool)
    everything_else[cluster == 4] = False
    everything_else[torch.nonzero(cluster == 0)[0]] = False  # one row of cluster 0 left besides the outliers
    assert cluster[typical_cluster_points(features, everything_else, 2, seed=0)].tolist() == [0, 4]

    monkeypatch.setattr(diversity, "MAX_CLUSTERS", 2)  # fewer clusters than picks: each cluster gives several
    capped = typical_cluster_picks(features, no_labels(len(features)), 6, seed=0)
    assert len(set(capped.rows.tolist())) == 6
    assert capped.unlabeled_cluster.tolist() == [True, True, False, False, False, False]
