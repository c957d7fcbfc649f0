"""Picks that cover the feature space: k-center greedy (Sener & Savarese 2018) and the typical points of k-means
clusters (TypiClust, Hacohen et al. 2022), both in the cosine geometry of the pretrained encoder's features.

Memory: features stay as the caller passed them (N x D, any float dtype, any device; the math runs on their device).
Rows are L2-normalised a block at a time through one vector of inverse norms, and every distance matrix is one block
of at most CHUNK_ROWS x CHUNK_ROWS (CHUNK_ROWS x clusters when assigning clusters), never N x N: 1M x 2048 float32
features need their own 8 GB, a few length-N vectors, and for k-means a sample of KMEANS_FIT_ROWS rows.

Time, the part that grows: k-center reads all N rows once per pick (the rule is sequential), after measuring every
unlabeled row against every labeled row (N x L x D multiply-adds: a GPU's job when L is in the tens of thousands);
typical points cost one k-means fit plus, per visited cluster, up to TYPICALITY_MAX_CANDIDATES x its size distances.

Picks are row indices (int64, on the CPU) that are never in `labeled`, in pick order.
"""

from __future__ import annotations

import heapq
import math
import numbers
import warnings
from typing import Any, NamedTuple

import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

CHUNK_ROWS = 4096  # rows per block: a distance block is at most CHUNK_ROWS x CHUNK_ROWS floats (64 MB)
TYPICALITY_NEIGHBOURS = 20  # TypiClust's k: typicality is the inverse mean distance to the k nearest cluster members
TYPICALITY_MAX_CANDIDATES = 20_000  # per cluster, typicality is computed for at most this many seeded unlabeled rows
MAX_CLUSTERS = 1000  # k-means++ time grows with clusters squared; TypiClust caps at 500 for the same reason
MIN_CLUSTER_SIZE = 5  # smaller clusters (outliers) give picks only once larger ones run out; TypiClust drops them
KMEANS_FIT_ROWS = 100_000  # k-means is fitted on a seeded sample of this many rows (>> MAX_CLUSTERS), then all assigned
FULL_KMEANS_ROWS = 20_000  # up to this many fitted rows, full k-means; beyond, MiniBatchKMeans
TYPICALITY_EPS = 1e-5  # TypiClust's 1 / (mean distance + eps): finite for duplicated points


class KCenterPicks(NamedTuple):
    rows: torch.Tensor  # int64 row indices on the CPU, in pick order
    distances: torch.Tensor  # cosine distance to the nearest labeled or earlier pick when picked; inf: there was none


class TypicalPicks(NamedTuple):
    rows: torch.Tensor  # int64 row indices on the CPU, in pick order
    typicality: torch.Tensor  # 1 / (mean cosine distance to the k nearest cluster members + eps); NaN: not evaluated
    unlabeled_cluster: torch.Tensor  # bool: its cluster had no labeled row and no earlier pick


# --- inputs ----------------------------------------------------------------------------------------------------------


def check_selection_inputs(features: torch.Tensor, labeled: torch.Tensor, n: Any) -> torch.Tensor:
    """`labeled` on the features' device, after one-line errors for bad shapes and for a count that cannot be met
    (shared by every strategy, so that a bad --budget reads the same whichever one runs)."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be an N x D float tensor (one embedding per image), got {_describe(features)}")
    if len(features) == 0 or features.shape[1] == 0:
        raise ValueError(f"features must hold at least one row and one column, got shape {tuple(features.shape)}")
    if not isinstance(labeled, torch.Tensor) or labeled.dtype != torch.bool or labeled.shape != (len(features),):
        raise ValueError(
            f"labeled must be a bool tensor with one entry per feature row ({len(features)}), got "
            f"{_describe(labeled)}; build it as torch.zeros(N, dtype=torch.bool) with True on the labeled rows"
        )
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"asks for {n!r} images; set --budget to a whole number of at least 1")
    num_unlabeled = int((~labeled).sum())
    if num_unlabeled == 0:
        raise ValueError(f"asks for {n} images but all {len(labeled)} images already have a label; nothing to pick")
    if n > num_unlabeled:
        raise ValueError(
            f"asks for {n} images but only {num_unlabeled} are unlabeled; lower --budget to at most {num_unlabeled}"
        )
    return labeled.to(features.device)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


# --- cosine distances in blocks --------------------------------------------------------------------------------------


def inverse_norms(features: torch.Tensor) -> torch.Tensor:
    """1 / ||row|| (float32, on the features' device), so that blocks normalise without an N x D copy. All-zero rows
    get a zero vector (cosine distance 1 to everything); NaN or inf anywhere is an error, as no distance is then
    meaningful."""
    inverse = torch.empty(len(features), dtype=torch.float32, device=features.device)
    for start in range(0, len(features), CHUNK_ROWS):
        inverse[start : start + CHUNK_ROWS] = features[start : start + CHUNK_ROWS].float().norm(dim=1)
    bad = (~torch.isfinite(inverse)).nonzero().squeeze(1)
    if len(bad):
        raise ValueError(
            f"features hold NaN or inf in {len(bad)} rows (e.g. row {int(bad[0])}); extract the features again"
        )
    return 1 / inverse.clamp_(min=1e-12)


def unit_rows(features: torch.Tensor, inverse_norm: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The L2-normalised float32 rows `rows` (an index tensor): one block, gathered."""
    rows = rows.to(features.device)
    return features[rows].float() * inverse_norm[rows, None]


def nearest_cosine_distances(
    features: torch.Tensor,
    queries: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    inverse_norm: torch.Tensor | None = None,
) -> torch.Tensor:
    """len(queries) x k cosine distances (float32, ascending) from each query row to its k nearest reference rows
    other than itself (inf where fewer exist). Blocks of CHUNK_ROWS queries x CHUNK_ROWS references keep a running
    top-k, so that memory stays flat however many rows there are."""
    if inverse_norm is None:
        inverse_norm = inverse_norms(features)
    device = features.device
    queries, reference = queries.to(device), reference.to(device)
    nearest = torch.full((len(queries), k), math.inf, dtype=torch.float32, device=device)
    for q in range(0, len(queries), CHUNK_ROWS):
        query_rows = queries[q : q + CHUNK_ROWS]
        query_units = unit_rows(features, inverse_norm, query_rows)
        best = nearest[q : q + CHUNK_ROWS]
        for r in range(0, len(reference), CHUNK_ROWS):
            reference_rows = reference[r : r + CHUNK_ROWS]
            distance = (1 - query_units @ unit_rows(features, inverse_norm, reference_rows).T).clamp_(min=0)
            distance[query_rows[:, None] == reference_rows[None, :]] = math.inf  # a row is not its own neighbour
            merged = torch.cat([best, distance], dim=1)
            best = merged.topk(k, dim=1, largest=False).values
        nearest[q : q + CHUNK_ROWS] = best
    return nearest


def _similarities(points: torch.Tensor, inverse_norm: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of `points` to the unit vector `unit`, in blocks (a float32 cast of a
    half-precision block is the only copy)."""
    block = CHUNK_ROWS * 16  # a matrix-vector product needs no square block: larger blocks, fewer Python steps
    similarity = torch.empty(len(points), dtype=torch.float32, device=points.device)
    for start in range(0, len(points), block):
        similarity[start : start + block] = points[start : start + block].float() @ unit
    return similarity.mul_(inverse_norm)


# --- k-center greedy -------------------------------------------------------------------------------------------------


def k_center_greedy(features: torch.Tensor, labeled: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n unlabeled row indices in pick order; each pick is the unlabeled row farthest (cosine distance) from every
    labeled or already-picked row, which greedily minimises the largest distance from any image to a labeled one
    (Sener & Savarese 2018).

    Cold start (no labeled row): the first pick is the row most similar to the mean of all unit rows, the most central
    image, so that the picks start in the bulk of the data rather than at an outlier; every later pick follows the
    rule above. Ties go to the lowest row index. The result is therefore deterministic and does not use `seed`, which
    is accepted so that every strategy has the same signature."""
    del seed
    return k_center_picks(features, labeled, n).rows


def k_center_picks(
    features: torch.Tensor, labeled: torch.Tensor, n: int, pool: torch.Tensor | None = None
) -> KCenterPicks:
    """k-center greedy with the distance each pick had (see `k_center_greedy`). With `pool` (unlabeled row indices),
    only pool rows are picked, still counting their distances to every labeled row: the diverse half of the
    uncertainty hybrid."""
    labeled = check_selection_inputs(features, labeled, n)
    inverse_norm = inverse_norms(features)
    labeled_rows = labeled.nonzero().squeeze(1)
    if pool is None:
        points, point_inverse_norm, candidates = features, inverse_norm, (~labeled).nonzero().squeeze(1)
        positions = candidates
    else:
        candidates = _check_pool(pool, labeled, n)
        points, point_inverse_norm = features[candidates], inverse_norm[candidates]  # one m x D gather, m = pool size
        positions = torch.arange(len(candidates), device=features.device)
    min_distance = torch.full((len(points),), -math.inf, dtype=torch.float32, device=features.device)
    min_distance[positions] = nearest_cosine_distances(features, candidates, labeled_rows, 1, inverse_norm)[:, 0]
    picked, distances = _farthest_first(points, point_inverse_norm, min_distance, n)
    rows = picked if pool is None else candidates[picked.to(candidates.device)]
    return KCenterPicks(rows.cpu(), distances)


def _check_pool(pool: torch.Tensor, labeled: torch.Tensor, n: int) -> torch.Tensor:
    if not isinstance(pool, torch.Tensor) or pool.dim() != 1 or pool.is_floating_point() or pool.dtype == torch.bool:
        raise ValueError(f"pool must be a 1-D tensor of row indices, got {_describe(pool)}")
    pool = pool.to(device=labeled.device, dtype=torch.int64)
    if len(pool) and (int(pool.min()) < 0 or int(pool.max()) >= len(labeled)):
        raise ValueError(f"pool indexes rows outside 0..{len(labeled) - 1}")
    if len(torch.unique(pool)) != len(pool) or bool(labeled[pool].any()):
        raise ValueError("pool must list distinct unlabeled rows")
    if len(pool) < n:
        raise ValueError(f"asks for {n} images from a pool of only {len(pool)}; make the pool at least {n} rows")
    return pool


def _farthest_first(
    points: torch.Tensor, inverse_norm: torch.Tensor, min_distance: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n positions of `points` picked farthest-first. `min_distance` per row: -inf for rows that may not be picked,
    inf for rows with no labeled row to be near (cold start), else the distance to the nearest labeled row."""
    picks, distances = [], []
    for _ in range(n):
        best = int(torch.argmax(min_distance))  # the first of equal maxima: ties go to the lowest index
        distance = float(min_distance[best])
        if distance == math.inf:  # nothing labeled and nothing picked yet
            best = _most_central(points, inverse_norm, min_distance > -math.inf)
        picks.append(best)
        distances.append(distance)
        unit = points[best].float() * inverse_norm[best]
        torch.minimum(min_distance, (1 - _similarities(points, inverse_norm, unit)).clamp_(min=0), out=min_distance)
        min_distance[best] = -math.inf
    return torch.tensor(picks, dtype=torch.int64), torch.tensor(distances, dtype=torch.float32)


def _most_central(points: torch.Tensor, inverse_norm: torch.Tensor, allowed: torch.Tensor) -> int:
    """The allowed row most similar to the mean of all unit rows (ties: the lowest index)."""
    mean = torch.zeros(points.shape[1], dtype=torch.float32, device=points.device)
    for start in range(0, len(points), CHUNK_ROWS):
        block = points[start : start + CHUNK_ROWS].float() * inverse_norm[start : start + CHUNK_ROWS, None]
        mean += block.sum(dim=0)
    similarity = _similarities(points, inverse_norm, mean / len(points))
    return int(torch.argmax(similarity.masked_fill_(~allowed, -math.inf)))


# --- typical points of clusters (TypiClust) --------------------------------------------------------------------------


def typical_cluster_points(features: torch.Tensor, labeled: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n unlabeled row indices, one typical image per cluster: TypiClust's cold-start rule (Hacohen et al. 2022),
    which with few labels beats picking by uncertainty or coverage because it picks what the data mostly looks like.

    - k-means (seeded) on the unit rows into n + (number of labeled rows) clusters, so that at least n clusters hold
      no labeled row; capped at N and at MAX_CLUSTERS (1000), beyond which k-means takes too long;
    - clusters are visited by fewest labeled-or-picked rows first, then largest first (then lowest cluster index):
      the n largest clusters without a label each give one pick. A cluster gives a second pick only when there are
      not enough such clusters (the cap, or duplicate points). Clusters under MIN_CLUSTER_SIZE (5) rows, outliers,
      give picks only once every larger cluster has run out of unlabeled rows (TypiClust drops them);
    - within a cluster, the pick is its unlabeled row of highest typicality, 1 / (mean cosine distance to its k
      nearest other members + 1e-5), k = min(20, cluster size - 1), neighbours labeled or not. A cluster of one row has
      typicality 0. In a cluster with more than 20,000 unlabeled rows, typicality is computed for a seeded 20,000 of
      them (against every member), the rest follow in seeded order."""
    return typical_cluster_picks(features, labeled, n, seed).rows


def typical_cluster_picks(features: torch.Tensor, labeled: torch.Tensor, n: int, seed: int) -> TypicalPicks:
    """`typical_cluster_points` with each pick's typicality and whether its cluster was still unlabeled."""
    labeled = check_selection_inputs(features, labeled, n).cpu()
    inverse_norm = inverse_norms(features)
    num_clusters = min(n + int(labeled.sum()), len(features), MAX_CLUSTERS)
    clusters = cluster_assignments(features, inverse_norm, num_clusters, seed)
    members = torch.argsort(clusters, stable=True).split(torch.bincount(clusters, minlength=num_clusters).tolist())
    counts = torch.bincount(clusters[labeled], minlength=num_clusters).tolist()
    queue = [
        (len(members[c]) < MIN_CLUSTER_SIZE, counts[c], -len(members[c]), c)
        for c in range(num_clusters)
        if not bool(labeled[members[c]].all())
    ]
    heapq.heapify(queue)
    generator = torch.Generator().manual_seed(seed)
    ranked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # cluster -> (unlabeled rows by typicality, typicality)
    taken = [0] * num_clusters
    rows, typicality, unlabeled_cluster = [], [], []
    while len(rows) < n:
        small, count, negative_size, cluster = heapq.heappop(queue)
        if cluster not in ranked:
            candidates = members[cluster][~labeled[members[cluster]]]
            ranked[cluster] = _by_typicality(features, inverse_norm, members[cluster], candidates, generator)
        order, values = ranked[cluster]
        rows.append(int(order[taken[cluster]]))
        typicality.append(float(values[taken[cluster]]))
        unlabeled_cluster.append(count == 0)
        taken[cluster] += 1
        if taken[cluster] < len(order):
            heapq.heappush(queue, (small, count + 1, negative_size, cluster))
    return TypicalPicks(
        torch.tensor(rows, dtype=torch.int64),
        torch.tensor(typicality, dtype=torch.float32),
        torch.tensor(unlabeled_cluster, dtype=torch.bool),
    )


def cluster_assignments(
    features: torch.Tensor, inverse_norm: torch.Tensor, num_clusters: int, seed: int
) -> torch.Tensor:
    """Cluster index (int64, on the CPU) of every row: scikit-learn's k-means (one seeded k-means++ init) on a seeded
    sample of KMEANS_FIT_ROWS unit rows (all rows if fewer), then every row to its nearest centre, in blocks. Euclidean
    k-means on unit vectors is k-means in the cosine geometry (|a - b|^2 = 2 - 2 cos)."""
    num_rows = len(features)
    fit_rows = min(num_rows, max(KMEANS_FIT_ROWS, num_clusters))  # num_clusters <= MAX_CLUSTERS << KMEANS_FIT_ROWS
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(num_rows, generator=generator)[:fit_rows].sort().values
    data = torch.cat(
        [unit_rows(features, inverse_norm, sample[s : s + CHUNK_ROWS]).cpu() for s in range(0, fit_rows, CHUNK_ROWS)]
    )
    random_state = seed % 2**32  # scikit-learn takes seeds in [0, 2**32)
    if fit_rows <= FULL_KMEANS_ROWS:
        model = KMeans(num_clusters, n_init=1, random_state=random_state)
    else:
        # batches of 1024 (its default): larger ones cost more in the k-means++ init (3 x batch rows) than they gain
        model = MiniBatchKMeans(num_clusters, n_init=1, batch_size=1024, random_state=random_state)
    with warnings.catch_warnings():  # fewer distinct points than clusters: some clusters stay empty, handled above
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(data.numpy())
    centres = torch.from_numpy(model.cluster_centers_).to(device=features.device, dtype=torch.float32)
    squared_norms = (centres * centres).sum(dim=1)
    block = max(1, CHUNK_ROWS * CHUNK_ROWS // num_clusters)  # rows per block of block x clusters distances
    assignment = torch.empty(num_rows, dtype=torch.int64)
    for start in range(0, num_rows, block):
        rows = torch.arange(start, min(start + block, num_rows))
        distance = squared_norms - 2 * unit_rows(features, inverse_norm, rows) @ centres.T  # |x - c|^2 - |x|^2
        assignment[start : start + block] = distance.argmin(dim=1).cpu()
    return assignment


def _by_typicality(
    features: torch.Tensor,
    inverse_norm: torch.Tensor,
    members: torch.Tensor,
    candidates: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A cluster's unlabeled rows from most to least typical, and their typicality (NaN past the evaluated sample)."""
    if len(candidates) > TYPICALITY_MAX_CANDIDATES:
        order = torch.randperm(len(candidates), generator=generator)
        evaluated, rest = candidates[order[:TYPICALITY_MAX_CANDIDATES]], candidates[order[TYPICALITY_MAX_CANDIDATES:]]
    else:
        evaluated, rest = candidates, candidates[:0]  # in row order: equal typicality goes to the lowest row
    k = min(TYPICALITY_NEIGHBOURS, len(members) - 1)
    if k == 0:
        values = torch.zeros(len(evaluated))
    else:
        distances = nearest_cosine_distances(features, evaluated, members, k, inverse_norm).cpu()
        values = 1 / (distances.mean(dim=1) + TYPICALITY_EPS)
    ranking = torch.sort(values, descending=True, stable=True).indices
    evaluated, values = evaluated[ranking], values[ranking]
    return torch.cat([evaluated, rest]), torch.cat([values, torch.full((len(rest),), math.nan)])
