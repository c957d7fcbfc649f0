"""Distillation loss: a frozen teacher's softened predictions teach a student
(docs/simclrv2.md#fine-tuning-and-distillation).

The paper's Eq. 3: loss = alpha * soft + (1 - alpha) * hard, where soft = -sum_y P_T(y|x; tau) log P_S(y|x; tau) on
every image and hard is the student's cross-entropy on the ground-truth label of each labeled image. The paper sums
each term over its own set (all images, the labeled ones), so every image weighs the same: here both sums run over
the batch and are divided by the batch size, an unbiased estimate of Eq. 3 over the data (divided by its size).
Rows labelled -1 are unlabeled and have no hard term. With the default alpha = 1 labels are unused: the paper's
Eq. 2, distillation on unlabeled images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.data.labels import UNLABELED


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    _check_inputs(student_logits, teacher_logits, temperature, labels, alpha)
    teacher_probs = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    soft = -(teacher_probs * student_log_probs).sum(dim=1).mean()
    if labels is None or alpha == 1:
        return soft
    labeled = labels != UNLABELED
    # Per image, as in Eq. 3's sums: a labeled image weighs no more than the others, whatever their share.
    per_row = F.cross_entropy(student_logits.float(), labels.clamp_min(0), reduction="none")
    hard = (per_row * labeled).sum() / len(labels)
    return alpha * soft + (1 - alpha) * hard


def _check_inputs(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None,
    alpha: float,
) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (1.0 in SimCLRv2, 0.1 for self-distillation), got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(
            f"alpha must be in [0, 1] (weight of the distillation term, paper Eq. 3; 1: labels unused), got {alpha!r}"
        )
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must both be B x num_classes with the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if labels is not None and labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must have shape ({student_logits.shape[0]},), got {tuple(labels.shape)}")
