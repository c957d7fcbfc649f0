"""Classifier metrics under the evaluation preprocessing (stages/evaluation/metrics.py): exact top-k on a classifier
with known outputs, in eval mode."""

import torch
from torch import nn

from stages.data.sources import ImageSplit
from stages.evaluation.metrics import top_k_accuracy


class IntensityLookup(nn.Module):
    """Logits looked up by each image's (constant) intensity: image i, filled with 10 * i, gets `table[i]`.
    Records whether it ran in eval mode."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)
        self.modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        index = (images.mean(dim=(1, 2, 3)) * 255 / 10).round().long()
        return self.table[index]


def constant_images_split(labels: list[int], num_classes: int) -> ImageSplit:
    intensities = torch.arange(len(labels), dtype=torch.uint8) * 10
    images = intensities.view(-1, 1, 1, 1).expand(-1, 3, 12, 12).contiguous()
    names = [f"class-{c}" for c in range(num_classes)]
    return ImageSplit(images, torch.tensor(labels), [str(i) for i in range(len(labels))], names, skipped=0)


def logits_ranking_true_class_at(ranks: list[int], labels: list[int], num_classes: int) -> torch.Tensor:
    """Per row, distinct logits in which the true class holds place `rank` (0 = the largest)."""
    rows = []
    for rank, label in zip(ranks, labels, strict=True):
        others = [c for c in range(num_classes) if c != label]
        order = [*others[:rank], label, *others[rank:]]  # classes from the largest logit down
        row = torch.empty(num_classes)
        row[order] = torch.arange(num_classes, 0, -1, dtype=torch.float32)
        rows.append(row)
    return torch.stack(rows)


def test_top_k_accuracy_is_exact_on_a_classifier_with_known_outputs():
    labels = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    ranks = [0, 0, 0, 0, 4, 4, 5, 5, 1, 9]  # top-1 hits: 4 of 10; top-5 hits (rank <= 4): 7 of 10
    classifier = IntensityLookup(logits_ranking_true_class_at(ranks, labels, 10))
    classifier.train()

    accuracy = top_k_accuracy(classifier, constant_images_split(labels, 10), image_size=8, batch_size=3)

    assert accuracy == {"top1": 0.4, "top5": 0.7}
    assert classifier.modes == [False] * 4  # 4 batches of at most 3, all in eval mode
    assert classifier.training  # the previous mode is restored


def test_top5_with_fewer_than_five_classes_is_top_num_classes():
    labels, ranks = [0, 1, 2, 0], [0, 1, 2, 2]
    classifier = IntensityLookup(logits_ranking_true_class_at(ranks, labels, 3))
    accuracy = top_k_accuracy(classifier, constant_images_split(labels, 3), image_size=8)
    assert accuracy == {"top1": 0.25, "top5": 1.0}
