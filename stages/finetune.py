"""Stage `finetune`: fine-tune a pretrained SimCLRv2 model on a labeled subset, or train the supervised baseline.

    python -m stages.finetune --out runs/finetune --subset runs/subsets/1pct.json --pretrain runs/pretrain
    python -m stages.finetune --out runs/baseline --subset runs/subsets/1pct.json --model.depth 50

Inputs: `--subset FILE` (a label subset file, see stages/subsets.py) and, optionally, `--pretrain DIR` (the pretrain
stage's output). With `--pretrain` the classifier is the pretrained encoder plus the first `--proj-selector` layers of
its projection head plus a zero-initialised linear layer (SIMCLRV2.md section 2). Without it this is the supervised
baseline: the same training on the same labels from a random `--model.*` encoder, without a head.

Training follows SIMCLRV2.md section 6: crop + flip only, cross-entropy, BN in train mode, LARS, lr = base_lr *
sqrt(batch), no weight decay, no warmup, cosine decay per step. Writes `model.safetensors` (the classifier; its
architecture, proj_selector, num_classes and class_names in the metadata), `loss_curve.csv` and `metrics.json` (with
the test top-1 / top-5) to `--out`; resumable state goes to `--out/checkpoints/` and a rerun continues from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from accelerate import Accelerator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.functional import cross_entropy

from stages.augment import CropFlipAugment
from stages.cli import parse_stage_args
from stages.data import DataConfig, ImageSplit, load_splits
from stages.heads import Classifier, ProjectionHead, SimCLRModel, build_classifier
from stages.lars import LARS, lars_param_groups
from stages.pretrain import WEIGHTS_FILE, EncoderConfig, build_pretrain_model
from stages.resnet import build_encoder
from stages.runtime import (
    check_batch_size,
    close_trackers,
    global_batchnorm,
    local_batch,
    make_accelerator,
    step_generator,
)
from stages.schedules import scale_learning_rate, warmup_cosine_scheduler
from stages.subsets import load_subset
from stages.train_loop import TrainingResult, train_steps

log = logging.getLogger(__name__)
OPTIMIZERS = ("lars", "sgd")


@dataclass(frozen=True)
class FinetuneConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)  # the supervised baseline's encoder only
    image_size: int = 32  # side of the augmented crops
    batch_size: int = 64  # global: labeled images per step over all processes
    epochs: float = 60.0  # passes over the labeled subset (SimCLRv2: 60 for 1%, 30 for 10%)
    base_lr: float = 0.005
    lr_scaling: Literal["sqrt", "linear"] = "sqrt"
    optimizer: Literal["lars", "sgd"] = "lars"
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    proj_selector: int = 1  # head layers kept under the classifier (ignored by the baseline, which has no head)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    checkpoint_every: int = 100  # optimiser steps between resumable states
    log_every: int = 10  # steps between loss read-backs (each one syncs the device)
    tensorboard: bool = False
    eval_batch_size: int = 256  # images per forward pass of the test evaluation

    def __post_init__(self) -> None:
        check_training_config(self)
        if self.proj_selector < 0:
            raise ValueError(f"proj_selector must be >= 0 (0 = no head layers), got {self.proj_selector!r}")


class TrainingConfig(Protocol):
    """The fields the shared classifier training loop reads (FinetuneConfig and DistillConfig have them)."""

    image_size: int
    batch_size: int
    epochs: float
    base_lr: float
    lr_scaling: str
    optimizer: str
    momentum: float
    weight_decay: float
    warmup_epochs: float
    seed: int
    checkpoint_every: int
    log_every: int
    tensorboard: bool


def check_training_config(config: TrainingConfig) -> None:
    if not config.epochs > 0:
        raise ValueError(f"epochs must be > 0, got {config.epochs!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if config.checkpoint_every < 1 or config.log_every < 1:
        raise ValueError(
            f"checkpoint_every and log_every must be >= 1, got {config.checkpoint_every!r}, {config.log_every!r}"
        )


# --- weights files -------------------------------------------------------------------------------------------------


@dataclass
class LoadedClassifier:
    model: Classifier
    architecture: EncoderConfig
    proj_selector: int
    class_names: list[str]
    file: Path


def weights_file(path: Path, stage: str) -> Path:
    """`path` itself when it is a weights file, else `path/model.safetensors`; missing -> what to run first."""
    path = Path(path)
    file = path if path.is_file() else path / WEIGHTS_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"no weights at {file}: run the {stage} stage first (its output directory holds "
            f"{WEIGHTS_FILE}), or pass the right directory"
        )
    return file


def read_weights(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(file)), metadata
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{file} is not a readable safetensors file ({error}); rerun the stage that wrote it"
        ) from None


def architecture_of(metadata: dict[str, str], file: Path) -> EncoderConfig:
    if "architecture" not in metadata:
        raise ValueError(
            f"{file} has no 'architecture' metadata, so its network cannot be rebuilt safely; it was not "
            "written by this pipeline's pretrain/finetune/distill stages: rerun the stage that makes it"
        )
    try:
        return EncoderConfig(**json.loads(metadata["architecture"]))
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{file}: its 'architecture' metadata is not a valid encoder config ({error})") from None


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], file: Path, architecture: EncoderConfig) -> None:
    """Strict load: a key or shape mismatch means the metadata does not describe these weights."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{file}: the weights do not match the architecture in its metadata ({architecture}): "
            f"{detail}. The file was edited or mixed up; rerun the stage that wrote it"
        ) from None


def load_pretrained(path: Path) -> tuple[SimCLRModel, EncoderConfig]:
    """The pretrain stage's encoder + projection head, rebuilt from the architecture in the file's metadata."""
    file = weights_file(path, "pretrain")
    state, metadata = read_weights(file)
    architecture = architecture_of(metadata, file)
    model = build_pretrain_model(architecture)
    load_matching(model, state, file, architecture)
    return model, architecture


def classifier_for(architecture: EncoderConfig, proj_selector: int, num_classes: int) -> Classifier:
    """A fresh classifier of this shape: encoder, `proj_selector` head layers (none for 0), zero-init linear layer."""
    encoder = build_encoder(architecture.depth, architecture.width, architecture.sk, architecture.small_images)
    head = ProjectionHead(encoder.out_dim, architecture.head_layers) if proj_selector > 0 else None
    return build_classifier(encoder, head, num_classes, proj_selector)


def save_classifier(
    model: Classifier, path: Path, architecture: EncoderConfig, proj_selector: int, class_names: Sequence[str]
) -> None:
    """Classifier weights as safetensors; the metadata holds what `load_classifier` needs to rebuild the network."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "architecture": json.dumps(asdict(architecture)),
        "proj_selector": str(proj_selector),
        "num_classes": str(len(class_names)),
        "class_names": json.dumps(list(class_names)),
    }
    partial = path.with_name(path.name + ".partial")
    save_file(state, str(partial), metadata=metadata)
    partial.replace(path)


def load_classifier(path: Path, stage: str = "finetune") -> LoadedClassifier:
    """A classifier written by finetune (also the baseline) or distill, rebuilt from its metadata."""
    file = weights_file(path, stage)
    state, metadata = read_weights(file)
    architecture = architecture_of(metadata, file)
    missing = [key for key in ("proj_selector", "class_names") if key not in metadata]
    if missing:
        raise ValueError(
            f"{file} is not a classifier (no {missing} metadata): pass the output directory of the "
            "finetune, baseline or distill stage"
        )
    proj_selector, class_names = int(metadata["proj_selector"]), json.loads(metadata["class_names"])
    model = classifier_for(architecture, proj_selector, len(class_names))
    load_matching(model, state, file, architecture)
    return LoadedClassifier(model, architecture, proj_selector, class_names, file)


def check_same_classes(class_names: Sequence[str], split: ImageSplit, file: Path) -> None:
    if list(class_names) != list(split.class_names):
        raise ValueError(
            f"{file} was trained on classes {list(class_names)[:10]} but the data has "
            f"{split.class_names[:10]}; use the same data config as the stage that wrote it"
        )


# --- the classifier training loop (shared with distill) ------------------------------------------------------------


def classifier_param_groups(model: Classifier, weight_decay: float) -> list[dict]:
    """LARS groups as in pretraining, except that the linear classifier's weight gets weight decay but no trust
    scaling, as the reference excludes `head_supervised` from layer adaptation: trust scaling would limit each step
    to about 0.001 * |w|, which keeps a zero-initialised classifier near zero."""
    classifier_weight = model.fc.weight
    groups = lars_param_groups(model, weight_decay)
    groups[0]["params"] = [p for p in groups[0]["params"] if p is not classifier_weight]
    groups.append({"params": [classifier_weight], "weight_decay": weight_decay, "lars_adapt": False})
    return groups


def make_optimizer(model: Classifier, config: TrainingConfig, lr: float) -> torch.optim.Optimizer:
    groups = classifier_param_groups(model, config.weight_decay)
    if config.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=config.momentum)
    # The reference's "momentum" optimizer: Nesterov SGD; the same groups keep BN and biases undecayed.
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)


LossOf = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, views, batch rows) -> loss


def train_classifier(
    accelerator: Accelerator,
    model: Classifier,
    images: torch.Tensor,
    loss_of: LossOf,
    config: TrainingConfig,
    out_dir: Path,
    tracker: str,
) -> TrainingResult:
    """Train `model` on crop + flip views of `images` (uint8 on the device) with the per-step cosine schedule, the
    resumable checkpoints and the NaN guard of every stage. `loss_of` gets the row indices of the batch so that it
    can look up labels or anything else per example."""
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    model = global_batchnorm(model, accelerator)
    optimizer = make_optimizer(model, config, scale_learning_rate(config.base_lr, config.batch_size, config.lr_scaling))
    steps_per_epoch = len(images) // config.batch_size
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps, total_steps)
    augment = CropFlipAugment(config.image_size)

    def loss_at(model: nn.Module, step: int) -> torch.Tensor:
        rows = local_batch(len(images), config.batch_size, step, config.seed, rank, world).to(device)
        views = augment(images[rows], step_generator(config.seed, step, rank, world, config.batch_size, device))
        with accelerator.autocast():
            return loss_of(model, views, rows)

    return train_steps(
        accelerator, model, optimizer, scheduler, total_steps, loss_at, config, out_dir, tracker, asdict(config)
    )


def evaluate_on_test(
    model: Classifier, test: ImageSplit, image_size: int, batch_size: int, device: torch.device
) -> dict:
    # Imported here: evaluate imports this module's weight loaders, so a top-level import would be circular.
    from stages.evaluate import top_k_accuracy

    accuracy = top_k_accuracy(model, test, image_size, batch_size, device)
    return {"test_top1": accuracy["top1"], "test_top5": accuracy["top5"], "num_test": len(test)}


# --- the stage -----------------------------------------------------------------------------------------------------


def build_finetune_model(
    config: FinetuneConfig, pretrain: Path | None, num_classes: int
) -> tuple[Classifier, EncoderConfig, int]:
    """(classifier, its encoder architecture, proj_selector): from the pretrain weights, or the random baseline."""
    if pretrain is None:
        return classifier_for(config.model, 0, num_classes), config.model, 0
    pretrained, architecture = load_pretrained(pretrain)
    if config.model != EncoderConfig():
        log.info("fine-tuning uses the pretrained architecture %s; model=%s is ignored", architecture, config.model)
    classifier = build_classifier(pretrained.encoder, pretrained.head, num_classes, config.proj_selector)
    return classifier, architecture, config.proj_selector


def labeled_rows(subset: Path, train: ImageSplit, batch_size: int, world: int) -> torch.Tensor:
    rows = load_subset(subset, train.ids)
    if batch_size > len(rows):
        raise ValueError(
            f"batch_size={batch_size} is larger than the labeled subset {subset} ({len(rows)} labels): "
            f"lower batch_size to at most {len(rows)}, or use a larger label budget"
        )
    check_batch_size(batch_size, len(rows), world)
    return rows


def run(config: FinetuneConfig, inputs: dict[str, Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    if "subset" not in inputs:
        raise ValueError("finetune needs the 'subset' input: a label subset file (see stages/subsets.py)")
    pretrain = inputs.get("pretrain")
    if pretrain is not None:
        weights_file(pretrain, "pretrain")  # fail before loading data or creating directories
    accelerator = make_accelerator(out_dir, config.seed, config.mixed_precision, config.tensorboard)
    train, test = load_splits(config.data)
    device = accelerator.device
    rows = labeled_rows(inputs["subset"], train, config.batch_size, accelerator.num_processes)
    model, architecture, proj_selector = build_finetune_model(config, pretrain, train.num_classes)

    images, labels = train.images[rows].to(device), train.labels[rows].to(device)

    def supervised_loss(model: nn.Module, views: torch.Tensor, batch_rows: torch.Tensor) -> torch.Tensor:
        return cross_entropy(model(views).float(), labels[batch_rows])

    tracker = "finetune" if pretrain is not None else "baseline"
    result = train_classifier(accelerator, model, images, supervised_loss, config, out_dir, tracker)
    metrics = {
        "final_loss": result.curve[-1]["loss"] if result.curve else None,
        "steps": result.total_steps,
        "epochs": config.epochs,
        "num_labels": len(rows),
        "num_classes": train.num_classes,
        "initialization": "pretrain" if pretrain is not None else "random",
        "proj_selector": proj_selector,
        "global_batch": config.batch_size,
        "processes": accelerator.num_processes,
        "seconds_this_run": round(result.seconds, 3),
        "images_per_second": round(config.batch_size * result.steps_this_run / max(result.seconds, 1e-9), 2),
    }
    if accelerator.is_main_process:
        metrics |= evaluate_on_test(result.model, test, config.image_size, config.eval_batch_size, device)
        save_classifier(result.model, out_dir / WEIGHTS_FILE, architecture, proj_selector, train.class_names)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    accelerator.wait_for_everyone()
    close_trackers(accelerator)
    return metrics


def split_optional_inputs(argv: list[str] | None, names: Sequence[str]) -> tuple[list[str], dict[str, Path]]:
    """Take `--<name> PATH` for optional inputs out of argv (`parse_stage_args` makes its inputs required)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in names:
        parser.add_argument(f"--{name}", type=Path)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return rest, {name: value for name, value in vars(known).items() if value is not None}


def main(argv: list[str] | None = None) -> None:
    argv, optional = split_optional_inputs(argv, ["pretrain"])
    config, inputs, out = parse_stage_args(FinetuneConfig, __doc__, argv, inputs=("subset",))
    print(json.dumps(run(config, inputs | optional, out), indent=2))


if __name__ == "__main__":
    main()
