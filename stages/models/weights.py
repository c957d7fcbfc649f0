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
name. Loading is strict, and every problem is one `WeightsError` (a ValueError; FileNotFoundError for a missing file)
that names the file and says what to do: a missing, truncated or corrupt file, one from elsewhere (no architecture
metadata), metadata that does not describe the tensors, NaN or infinite values, a classifier where the pretrain
output is expected and the other way round, and (`check_same_classes`) a classifier of other classes than the data.
`weights_file`, which stages call before they load any data, already checks the file's header, so that such a file
is refused in a second rather than after the data has loaded.
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
from stages.failures import environment_fault_in
from stages.models.architecture import EncoderConfig, build_pretrain_model, classifier_for
from stages.models.heads import Classifier, SimCLRModel
from stages.training.files import fsync_path

WEIGHTS_FILE = "model.safetensors"
CLASSIFIER_STAGES = "finetune, baseline or distill"
PRETRAIN = "pretrain"  # the `stage` that writes encoder + projection head files; any other writes classifiers
CLASSIFIER_KEYS = ("proj_selector", "class_names")
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # checked for NaN and inf when loaded
# What reading a damaged file raises: the library's own error, I/O errors, and what torch or the Rust side raise on
# header values that parse but make no sense.
UNREADABLE = (SafetensorError, OSError, ValueError, TypeError, RuntimeError, KeyError, OverflowError)


class WeightsError(ValueError):
    """A weights file that cannot be used: the message names it and says what to do."""


@dataclass
class LoadedClassifier:
    model: Classifier
    architecture: EncoderConfig
    proj_selector: int
    class_names: list[str]
    file: Path


# --- reading and writing -------------------------------------------------------------------------------------------


def weights_file(path: Path, stage: str) -> Path:
    """`path` itself when it is a weights file, else `path/model.safetensors`, checked cheaply (its header only) to
    be a readable weights file of the kind `stage` writes ("pretrain": encoder + head; any other: a classifier).
    Missing -> FileNotFoundError naming the stage to run first; anything else wrong -> `WeightsError`."""
    path = Path(path)
    file = path if path.is_file() else path / WEIGHTS_FILE
    if not file.is_file():
        partial = file.with_name(file.name + ".partial")
        why = (
            f"only {partial.name} is there, so the stage that writes it was interrupted: rerun the {stage} stage"
            if partial.is_file()
            else f"run the {stage} stage first (its output directory holds {WEIGHTS_FILE}), or pass the right directory"
        )
        raise FileNotFoundError(f"no weights at {file}: {why}")
    metadata = read_metadata(file, stage)
    architecture_of(metadata, file, stage)
    check_kind(metadata, file, stage)
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
    fsync_path(partial)  # the bytes on disk before the rename makes them the weights, as for the manifest
    partial.replace(path)
    fsync_path(path.parent)


def rerun(stage: str | None) -> str:
    return f"rerun the {stage} stage" if stage else "rerun the stage that wrote it"


def unreadable(file: Path, error: BaseException, stage: str | None) -> BaseException:
    """A damaged file as the input's mistake, naming the fix; a fault of the machine (permission denied, an I/O error,
    out of memory) as itself, so that it is retried or reported as the machine's (stages/failures.py)."""
    fault = environment_fault_in(error)
    if fault is not None:
        return fault
    return WeightsError(
        f"{file} is not a readable safetensors file ({one_line(error)}): {what_it_looks_like(file)}; {rerun(stage)} "
        "(or copy its output again)"
    )


def what_it_looks_like(file: Path) -> str:
    """A guess at what an unreadable file is, from its first bytes."""
    try:
        with open(file, "rb") as f:
            start = f.read(64)
    except OSError:
        return "it cannot be read"
    if not start:
        return "it is empty (a write or copy that never finished)"
    if start.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself (run `git lfs pull`)"
    if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":
        return "it looks like a PyTorch checkpoint (torch.save), not the safetensors file this pipeline writes"
    return "it is truncated or corrupt (e.g. an interrupted copy)"


def read_metadata(file: Path, stage: str | None = None) -> dict[str, str]:
    """The metadata of a safetensors file's header (the tensors are not read)."""
    try:
        with safe_open(str(file), framework="pt") as f:
            return dict(f.metadata() or {})
    except UNREADABLE as error:
        raise unreadable(file, error, stage) from None


def read_weights(file: Path, stage: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a safetensors file; an unreadable file, or one with NaN or infinite values, is a
    `WeightsError` that names it and says what to do (`stage`: the stage that writes it)."""
    metadata = read_metadata(file, stage)
    try:
        state = load_file(str(file))
    except UNREADABLE as error:
        raise unreadable(file, error, stage) from None
    broken = [key for key, value in state.items() if value.dtype in FLOATS and not bool(value.isfinite().all())]
    if broken:
        raise WeightsError(
            f"{file} holds NaN or infinite values in {len(broken)} of its {len(state)} tensors (e.g. {broken[:3]}): "
            f"the file is corrupt, or the run that wrote it diverged; {rerun(stage)}"
        )
    return state, metadata


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def architecture_of(metadata: dict[str, str], file: Path, stage: str | None = None) -> EncoderConfig:
    if "architecture" not in metadata:
        written_by = f"this pipeline's {stage} stage" if stage else "this pipeline's pretrain/finetune/distill stages"
        raise WeightsError(
            f"{file} has no 'architecture' metadata, so its network cannot be rebuilt safely: it is a safetensors "
            f"file from elsewhere, not one written by {written_by}; pass that stage's output directory, or "
            f"{rerun(stage)}"
        )
    try:
        return EncoderConfig(**json.loads(metadata["architecture"]))
    except (ValueError, TypeError) as error:  # bad JSON, unknown keys or values out of bounds
        raise WeightsError(
            f"{file}: its 'architecture' metadata is not a valid encoder config ({one_line(error)}); the file was "
            f"edited or comes from another version: {rerun(stage)}"
        ) from None


def check_kind(metadata: dict[str, str], file: Path, stage: str) -> None:
    """A classifier where the pretrain output is expected, or the other way round, is refused with which it is."""
    is_classifier = any(key in metadata for key in CLASSIFIER_KEYS)
    if stage == PRETRAIN and is_classifier:
        raise WeightsError(
            f"{file} is a classifier (written by the {CLASSIFIER_STAGES} stage), not a pretrain output: pass the "
            "pretrain stage's output directory"
        )
    if stage != PRETRAIN and not is_classifier:
        raise WeightsError(
            f"{file} is not a classifier but a pretrain output (encoder + projection head, no {list(CLASSIFIER_KEYS)} "
            f"metadata): pass the output directory of the {CLASSIFIER_STAGES} stage"
        )


def load_matching(
    model: nn.Module, state: dict[str, torch.Tensor], file: Path, architecture: EncoderConfig, stage: str | None = None
) -> None:
    """Strict load: a key or shape mismatch means the metadata does not describe these weights."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsError(
            f"{file}: the weights do not match the architecture in its metadata ({architecture}): "
            f"{detail}. The file was edited or mixed up with another: {rerun(stage)}"
        ) from None


# --- pretrained models (encoder + projection head) -----------------------------------------------------------------


def save_pretrained(model: SimCLRModel, path: Path, architecture: EncoderConfig) -> None:
    """Encoder + head weights; the architecture travels in the metadata so that a mismatched file is caught before
    loading."""
    write_weights(model, path, architecture)


def load_pretrained(path: Path) -> tuple[SimCLRModel, EncoderConfig]:
    """The pretrain stage's encoder + projection head, rebuilt from the architecture in the file's metadata."""
    file = weights_file(path, PRETRAIN)
    state, metadata = read_weights(file, PRETRAIN)
    architecture = architecture_of(metadata, file, PRETRAIN)
    model = build_pretrain_model(architecture)
    load_matching(model, state, file, architecture, PRETRAIN)
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


def classifier_metadata(metadata: dict[str, str], file: Path, stage: str) -> tuple[int, list[str]]:
    """(proj_selector, class_names) of a classifier's metadata, each checked."""
    missing = [key for key in CLASSIFIER_KEYS if key not in metadata]
    if missing:
        raise WeightsError(
            f"{file} is not a classifier (no {missing} metadata): the file was edited or comes from elsewhere; pass "
            f"the output directory of the {stage} stage, or {rerun(stage)}"
        )
    problem = None
    try:
        proj_selector, class_names = int(metadata["proj_selector"]), json.loads(metadata["class_names"])
    except ValueError as error:
        problem = one_line(error)
    else:
        if not isinstance(class_names, list) or not all(isinstance(name, str) for name in class_names):
            problem = f"class_names is {metadata['class_names'][:80]!r}, not a JSON list of names"
        elif "num_classes" in metadata and metadata["num_classes"] != str(len(class_names)):
            problem = f"num_classes is {metadata['num_classes']!r} but class_names lists {len(class_names)}"
    if problem:
        raise WeightsError(f"{file}: its classifier metadata is damaged ({problem}); {rerun(stage)}")
    return proj_selector, class_names


def load_classifier(path: Path, stage: str = "finetune") -> LoadedClassifier:
    """A classifier written by finetune (also the baseline) or distill, rebuilt from its metadata."""
    file = weights_file(path, stage)
    state, metadata = read_weights(file, stage)
    architecture = architecture_of(metadata, file, stage)
    check_kind(metadata, file, stage)
    proj_selector, class_names = classifier_metadata(metadata, file, stage)
    try:
        model = classifier_for(architecture, proj_selector, len(class_names))
    except ValueError as error:  # proj_selector beyond the head, fewer than two classes
        raise WeightsError(
            f"{file}: its metadata does not describe a classifier that can be built ({one_line(error)}); {rerun(stage)}"
        ) from None
    load_matching(model, state, file, architecture, stage)
    return LoadedClassifier(model, architecture, proj_selector, class_names, file)


def check_same_classes(class_names: Sequence[str], split: ImageSplit, file: Path) -> None:
    """A classifier is only meaningful on the classes it was trained on, in the same order."""
    if list(class_names) != list(split.class_names):
        raise WeightsError(
            f"{file} was trained on classes {list(class_names)[:10]} ({len(class_names)} classes) but the data has "
            f"{split.class_names[:10]} ({len(split.class_names)}); use the same data config as the stage that wrote "
            "it, or pass a classifier trained on this data"
        )
