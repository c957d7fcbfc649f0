"""The SimCLRv2 projection head, the pretraining model, and the classifier built from the middle of the head.

docs/simclrv2.md#projection-head: layers 1..n-1 are Linear(d, d, no bias) -> BN -> ReLU, the last is Linear(d, 128, no
bias) -> BN without beta. `ProjectionHead.forward` returns every layer's output, `[h, layer1, ..., layer_n]`, so that
fine-tuning can start from any of them (`ft_proj_selector`).
"""

from __future__ import annotations

import torch
from torch import nn

from stages.models.layers import BN_EPS, BN_MOMENTUM

HEAD_INIT_STD = 0.01


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, num_layers: int = 3, out_dim: int = 128) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers!r}")
        layers = [_hidden_layer(in_dim) for _ in range(num_layers - 1)]
        last_bn = nn.BatchNorm1d(out_dim, eps=BN_EPS, momentum=BN_MOMENTUM)
        last_bn.bias.requires_grad_(False)  # "BN without beta": the bias stays at its zero init
        layers.append(nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), last_bn))
        self.layers = nn.ModuleList(layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        for layer in self.layers:
            nn.init.normal_(layer[0].weight, std=HEAD_INIT_STD)

    def forward(self, h: torch.Tensor) -> list[torch.Tensor]:
        outputs = [h]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        return outputs

    def dim_at(self, selector: int) -> int:
        """Feature dimension of output `selector` (0 = encoder output)."""
        return self.out_dim if selector == len(self.layers) else self.in_dim


def _hidden_layer(dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, dim, bias=False),
        nn.BatchNorm1d(dim, eps=BN_EPS, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )


class SimCLRModel(nn.Module):
    """Encoder + projection head for pretraining; returns the last head layer's output (the NT-Xent input)."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))[-1]


class Classifier(nn.Module):
    """Encoder + the first `proj_selector` head layers + a linear classifier."""

    def __init__(self, encoder: nn.Module, head_layers: nn.ModuleList, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder, self.head_layers = encoder, head_layers
        self.fc = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(images)
        for layer in self.head_layers:
            x = layer(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


def proj_selector_problem(proj_selector: int, head_layers: int) -> str | None:
    """What is wrong with keeping `proj_selector` layers of a head of `head_layers` layers, or None."""
    if 0 <= proj_selector <= head_layers:
        return None
    return f"must be in 0..{head_layers} (the layers of the projection head), got {proj_selector!r}"


def build_classifier(
    encoder: nn.Module, head: ProjectionHead | None, num_classes: int, proj_selector: int = 1
) -> Classifier:
    """Keep `encoder` and head layers 1..`proj_selector` and add a zero-initialised linear classifier.

    `proj_selector=1` (the SimCLRv2 default) fine-tunes from the middle of a 3-layer head; 0 drops the head
    (used with 100% of labels, and for a plain supervised model pass `head=None`).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
    problem = proj_selector_problem(proj_selector, len(head.layers) if head is not None else 0)
    if problem:
        raise ValueError(f"proj_selector {problem}")
    kept = nn.ModuleList(head.layers[:proj_selector]) if head is not None else nn.ModuleList()
    feature_dim = head.dim_at(proj_selector) if head is not None else encoder.out_dim
    return Classifier(encoder, kept, feature_dim, num_classes)
