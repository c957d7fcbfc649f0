"""The distillation loss: soft cross-entropy at a temperature, plus an optional label term, weighted as in the paper's
Eq. 3 (alpha on the distillation term)."""

import pytest
import torch
import torch.nn.functional as F

from stages import distillation_loss


def test_soft_term_is_cross_entropy_against_teacher_probabilities():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    for tau in (0.1, 1.0, 2.0):
        expected = -(F.softmax(teacher / tau, 1) * F.log_softmax(student / tau, 1)).sum(1).mean()
        assert torch.allclose(distillation_loss(student, teacher, tau), expected, atol=1e-6)


def test_minimum_is_at_the_teacher_and_equals_its_entropy():
    teacher = torch.tensor([[2.0, 0.5, -1.0]])
    probs = F.softmax(teacher, 1)
    entropy = -(probs * probs.log()).sum()
    assert torch.allclose(distillation_loss(teacher.clone(), teacher, 1.0), entropy, atol=1e-6)
    assert distillation_loss(torch.zeros(1, 3), teacher, 1.0) > entropy


def test_teacher_gets_no_gradient():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    distillation_loss(student, teacher, 1.0).backward()
    assert student.grad is not None and teacher.grad is None


def test_alpha_weights_the_distillation_term_as_in_eq_3_and_every_image_the_same():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, -1, 2, -1])
    soft = distillation_loss(student, teacher, 2.0)
    hard = F.cross_entropy(student[[0, 2]], labels[[0, 2]], reduction="sum") / 4  # per image of the batch
    got = distillation_loss(student, teacher, 2.0, labels=labels, alpha=0.3)
    assert torch.allclose(got, 0.3 * soft + 0.7 * hard, atol=1e-6)
    assert torch.allclose(distillation_loss(student, teacher, 2.0, labels=labels), soft)  # alpha 1: labels unused
    assert torch.allclose(distillation_loss(student, teacher, 2.0, labels=labels, alpha=0.0), hard)  # labels only
    no_labels = torch.full((4,), -1)
    assert torch.allclose(distillation_loss(student, teacher, 2.0, labels=no_labels, alpha=0.5), 0.5 * soft)


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"teacher_logits": torch.zeros(4, 2)}, "teacher_logits"),
        ({"labels": torch.zeros(3, dtype=torch.long), "alpha": 0.5}, "labels"),
    ],
)
def test_bad_input_names_the_argument(kwargs, culprit):
    arguments = {"student_logits": torch.zeros(4, 3), "teacher_logits": torch.zeros(4, 3), **kwargs}
    with pytest.raises(ValueError, match=culprit):
        distillation_loss(**arguments)
