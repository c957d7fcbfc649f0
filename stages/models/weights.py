"""Weights files: what pretrain, finetune (also the baseline) and distill write to `--out/model.safetensors`.

A weights file is a safetensors file whose metadata describes the network, so that a reader rebuilds it without the
config that made it:
    architecture   JSON `EncoderConfig` (every file)
    proj_selector  head layers kept under the classifier (classifiers only)
    num_classes    number of classes (classifiers only)
    class_names    JSON list, in label order (classifiers only)

    save_pretrained(model, out / WEIGHTS_FILE, architecture)           # pretrain: encoder + projection head
    model, architecture = load_pretrained(out)                          # a directory or the file itself
    save_classifier(model, out / WEIGHTS_FILE, architecture, proj_selector, class_names)
    loaded = load_classifier(out)                                        # LoadedClassifier: model + its metadata

Files are written to `<name>.partial` and then renamed, so a crash never leaves a half-written file under the real
name. Loading is strict: a missing file names the stage to run first, and a file that is unreadable, lacks the
metadata or does not match it is refused with what to do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from stages.data.sources import ImageSplit
from stages.models.architecture import EncoderConfig, build_pretrain_model, classifier_for
from stages.models.heads import Classifier, SimCLRModel

WEIGHTS_FILE = "model.safetensors"


@dataclass
class LoadedClassifier:
    model: Classifier
    architecture: EncoderConfig
    proj_selector: int
    class_names: list[str]
    file: Path


# --- reading and writing -------------------------------------------------------------------------------------------


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


def write_weights(
    model: nn.Module, path: Path, architecture: EncoderConfig, metadata: dict[str, str] | None = None
) -> None:
    """`model`'s state as safetensors with `architecture` (and any further `metadata`) in the header; written to
    `<path>.partial` and then renamed to `path`."""
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    header = {"architecture": json.dumps(asdict(architecture)), **(metadata or {})}
    partial = path.with_name(path.name + ".partial")
    save_file(state, str(partial), metadata=header)
    partial.replace(path)


def read_weights(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a safetensors file; an unreadable file is a ValueError that says what to do."""
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
    except (ValueError, TypeError) as error:  # bad JSON, unknown keys or values out of bounds
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


# --- pretrained models (encoder + projection head) -----------------------------------------------------------------


def save_pretrained(model: SimCLRModel, path: Path, architecture: EncoderConfig) -> None:
    """Encoder + head weights; the architecture travels in the metadata so that a mismatched file is caught before
    loading."""
    write_weights(model, path, architecture)


def load_pretrained(path: Path) -> tuple[SimCLRModel, EncoderConfig]:
    """The pretrain stage's encoder + projection head, rebuilt from the architecture in the file's metadata."""
    file = weights_file(path, "pretrain")
    state, metadata = read_weights(file)
    architecture = architecture_of(metadata, file)
    model = build_pretrain_model(architecture)
    load_matching(model, state, file, architecture)
    return model, architecture


# --- classifiers ---------------------------------------------------------------------------------------------------


def save_classifier(
    model: Classifier, path: Path, architecture: EncoderConfig, proj_selector: int, class_names: Sequence[str]
) -> None:
    """Classifier weights; the metadata holds what `load_classifier` needs to rebuild the network."""
    metadata = {
        "proj_selector": str(proj_selector),
        "num_classes": str(len(class_names)),
        "class_names": json.dumps(list(class_names)),
    }
    write_weights(model, path, architecture, metadata)


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
    """A classifier is only meaningful on the classes it was trained on, in the same order."""
    if list(class_names) != list(split.class_names):
        raise ValueError(
            f"{file} was trained on classes {list(class_names)[:10]} but the data has "
            f"{split.class_names[:10]}; use the same data config as the stage that wrote it"
        )
