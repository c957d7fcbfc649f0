"""Synthetic features with known clusters, shared by the selection tests."""

import torch


def clustered_features(
    num_clusters: int = 8, per_cluster: int = 30, dim: int = 8, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, cluster of each row, centres): tight Gaussian blobs around the directions +-e_i, at cosine
    distance 1 or 2 from each other, with rows of different clusters interleaved (row i is in cluster i % C)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.cat([torch.eye(dim), -torch.eye(dim)])[:num_clusters]
    cluster = torch.arange(num_clusters * per_cluster) % num_clusters
    features = directions[cluster] + noise * torch.randn(len(cluster), dim, generator=generator)
    return features, cluster, directions
