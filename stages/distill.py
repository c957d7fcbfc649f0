"""Stage `distill`: a student learns a fine-tuned teacher's predictions on every training image (labels unused).

    python -m stages.distill --out runs/distill --teacher runs/finetune
    python -m stages.distill --out runs/distill-small --teacher runs/finetune --student '{"depth": 18, "width": 0.5}'
    python -m stages.distill --out runs/distill-a --teacher runs/finetune --subset runs/subsets/10pct.json --alpha 0.5
    python -m stages.distill --out runs/distill-w --teacher runs/finetune --student-init teacher

Inputs: `--teacher DIR` (the finetune stage's output) and, only for `--alpha` < 1, `--subset FILE` (the labeled rows of
the ground-truth term). docs/simclrv2.md#fine-tuning-and-distillation: the teacher is frozen and in eval mode, teacher
and student see the same crop + flip batch, and the loss is the paper's Eq. 3: alpha times
-sum_y P_T(y|x; tau) log P_S(y|x; tau) plus (1 - alpha) times the cross-entropy on labeled rows (alpha 1: labels
unused). By default the student starts from random weights and has no projection head; `--student` (a JSON encoder
config: depth, width, sk, small_images) picks a smaller network, else (or `--student none`) it has the teacher's
architecture (self-distillation). `--student-init teacher` starts a self-distilled student from a copy of the teacher
instead, head layers included: it needs a fraction of the steps, for small compute. The optimiser settings default to
the pretraining ones, as in the paper.

Writes `model.safetensors` (the student classifier, loadable like a finetune output), `loss_curve.csv`,
`metrics.json` (test top-1 / top-5, the teacher's top-1 and the agreement with it) and `test_predictions.csv` (every
test image's prediction) to `--out`; resumable state goes to `--out/checkpoints/` and a rerun continues from it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Le, Lt
from pydantic import StrictBool, StrictFloat, StrictInt
from torch import nn

from stages.config_schema import SPEED_ONLY, config_dataclass
from stages.data.label_subsets import load_subset
from stages.data.labels import UNLABELED
from stages.data.sources import DataConfig, ImageSplit, load_splits
from stages.evaluation.metrics import prediction_agreement, top_k_metrics
from stages.evaluation.test_predictions import TEST_PREDICTIONS, write_test_predictions
from stages.losses.distillation import distillation_loss
from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.weights import WEIGHTS_FILE, check_same_classes, load_classifier, save_classifier, weights_file
from stages.training.accelerator import make_accelerator
from stages.training.batches import check_batch_size
from stages.training.classifier_loop import train_classifier
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.finish import finish_stage

log = logging.getLogger(__name__)


@config_dataclass
class DistillConfig:
    data: DataConfig = field(default_factory=DataConfig)
    student: EncoderConfig | None = None
    """the student's encoder, as a JSON object of its fields, e.g. '{"depth": 18, "width": 0.5}'; None: the
    teacher's architecture (self-distillation)"""
    image_size: Annotated[StrictInt, Ge(1)] = 32
    """side of the augmented crops, in pixels (use the teacher's)"""
    batch_size: Annotated[StrictInt, Ge(1)] = 256
    """global: images per step over all processes"""
    epochs: Annotated[StrictFloat, Gt(0)] = 10.0
    """passes over all training images"""
    base_lr: Annotated[StrictFloat, Gt(0)] = 0.1
    """learning rate before scaling by the batch size"""
    lr_scaling: Literal["sqrt", "linear"] = "sqrt"
    """lr = base_lr * sqrt(batch_size) (SimCLRv2), or base_lr * batch_size / 256"""
    optimizer: Literal["lars", "sgd"] = "lars"
    """LARS, or Nesterov SGD"""
    momentum: Annotated[StrictFloat, Ge(0), Lt(1)] = 0.9
    """momentum of either optimiser"""
    weight_decay: Annotated[StrictFloat, Ge(0)] = 1e-4
    """weight decay (not on BN parameters and biases)"""
    warmup_epochs: Annotated[StrictFloat, Ge(0)] = 0.5
    """epochs of linear learning-rate warm-up before the cosine decay"""
    temperature: Annotated[StrictFloat, Gt(0)] = 1.0
    """tau of both distributions (the paper: 0.1 for self-distillation, 1.0 big-to-small; see docs/results.md)"""
    alpha: Annotated[StrictFloat, Ge(0), Le(1)] = 1.0
    """the paper's Eq. 3: the weight of the distillation term, 1 - alpha that of the cross-entropy on the subset's
    labeled rows; 1: labels unused"""
    student_init: Literal["scratch", "teacher"] = "scratch"
    """the student's first weights: random (the paper), or a copy of the teacher's (self-distillation only)"""
    seed: StrictInt = 0
    """seed of the student's weights, the batch order and the augmentations"""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """autocast precision; bf16 on GPUs"""
    checkpoint_every: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 100
    """optimiser steps between resumable states"""
    log_every: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 10
    """steps between loss read-backs (each one syncs the device)"""
    tensorboard: Annotated[StrictBool, SPEED_ONLY] = False
    """log the loss and learning rate to TensorBoard under --out"""
    eval_batch_size: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 256
    """images per forward pass of the test evaluation"""


def subset_labels(train: ImageSplit, subset: Path) -> torch.Tensor:
    """Per training row its label if the row is in the subset, else -1 (unlabeled: no ground-truth term)."""
    rows = load_subset(subset, train.ids)
    labels = torch.full_like(train.labels, UNLABELED)
    labels[rows] = train.labels[rows]
    return labels


def initial_student(
    config: DistillConfig, architecture: EncoderConfig, teacher_dir: Path, num_classes: int
) -> tuple[nn.Module, int]:
    """The student and its number of head layers: random without a projection head, or a trainable teacher copy."""
    if config.student_init == "teacher":
        copy = load_classifier(teacher_dir)
        return copy.model, copy.proj_selector
    return classifier_for(architecture, 0, num_classes), 0


def frozen(model: nn.Module) -> nn.Module:
    """Eval mode (BN uses its running statistics) and no gradients: the teacher never changes."""
    return model.eval().requires_grad_(False)


def run(config: DistillConfig, inputs: dict[str, Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    if "teacher" not in inputs:
        raise ValueError("distill needs the 'teacher' input: the output directory of the finetune stage")
    weights_file(inputs["teacher"], "finetune")  # fail before loading any data
    if config.alpha < 1 and "subset" not in inputs:
        raise ValueError(
            f"alpha={config.alpha} leaves {1 - config.alpha:g} to a ground-truth term, which needs labels: pass the "
            "'subset' input (a label subset file), or set alpha to 1"
        )
    if config.student_init == "teacher" and config.student is not None:
        raise ValueError(
            "student_init='teacher' copies the teacher, so the student must have its architecture: set student to "
            "null, or student_init to 'scratch'"
        )
    if "subset" in inputs and config.alpha == 1:
        log.info("alpha is 1: the labels of subset %s are not used", inputs["subset"])
    accelerator = make_accelerator(out_dir, config.seed, config.mixed_precision, config.tensorboard)
    train, test = load_splits(config.data)
    device = accelerator.device
    check_batch_size(config.batch_size, len(train), accelerator.num_processes)
    teacher = load_classifier(inputs["teacher"])
    check_same_classes(teacher.class_names, train, teacher.file)
    teacher_model = frozen(teacher.model.to(device))
    architecture = config.student or teacher.architecture
    student, proj_selector = initial_student(config, architecture, inputs["teacher"], train.num_classes)

    labels = subset_labels(train, inputs["subset"]).to(device) if config.alpha < 1 else None

    def loss_against_teacher(model: nn.Module, views: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher_model(views)
        batch_labels = labels[rows] if labels is not None else None
        return distillation_loss(model(views), teacher_logits, config.temperature, batch_labels, config.alpha)

    result = train_classifier(accelerator, student, train.images, loss_against_teacher, config, out_dir, "distill")
    metrics = {
        "final_loss": result.curve[-1]["loss"] if result.curve else None,
        "steps": result.total_steps,
        "epochs": config.epochs,
        "num_images": len(train),
        "num_labels_used": int((labels != UNLABELED).sum()) if labels is not None else 0,
        "temperature": config.temperature,
        "alpha": config.alpha,
        "student_init": config.student_init,
        "student": dataclasses.asdict(architecture),
        "teacher": dataclasses.asdict(teacher.architecture),
        "global_batch": config.batch_size,
        "processes": accelerator.num_processes,
        "seconds_this_run": round(result.seconds, 3),
        "images_per_second": round(config.batch_size * result.steps_this_run / max(result.seconds, 1e-9), 2),
    }

    def evaluate_and_save() -> dict:
        save_classifier(result.model, out_dir / WEIGHTS_FILE, architecture, proj_selector, train.class_names)
        write_test_predictions(
            result.model, test, train.class_names, config.image_size, out_dir / TEST_PREDICTIONS, config.eval_batch_size
        )
        agreement = prediction_agreement(
            result.model, teacher_model, test, config.image_size, config.eval_batch_size, device
        )
        teacher_top1 = top_k_metrics(teacher_model, test, config.image_size, config.eval_batch_size, device)[
            "test_top1"
        ]
        return top_k_metrics(result.model, test, config.image_size, config.eval_batch_size, device) | {
            "test_agreement_with_teacher": agreement,
            "teacher_test_top1": teacher_top1,  # the student against its teacher, on the same images
        }

    return finish_stage(accelerator, out_dir, metrics, evaluate_and_save)


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args(
        "stages.distill", DistillConfig, __doc__, argv, inputs=("teacher",), optional_inputs=("subset",)
    )
    run_and_print("stages.distill", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
