"""Exporting a trained classifier (the output of finetune, the baseline or distill) as files other tools read.

    export_safetensors(loaded, "model.safetensors")      # our weights file as it is: load_classifier reads it back
    export_torchvision(loaded, "model.torchvision.pt")   # torch.save(torchvision_state_dict(loaded))
    export_onnx(loaded, "model.onnx", image_size=224)    # input `images`, output `logits`, any batch size

where `loaded = stages.models.weights.load_classifier(stage_dir)`.

torchvision: a state dict with the names of torchvision's `resnet50/101/152`, so that
`torchvision.models.resnet50(num_classes=K).load_state_dict(state, strict=True)` works. Only a plain bottleneck
ResNet maps one to one: width 1, no Selective Kernels, the standard 7x7 stem, and no projection-head layers kept under
the linear layer (proj_selector 0). The rest is refused with the reason (`torchvision_problems`). ResNet-18/34 are
refused too: like the reference, ours give the first block of every stage a projection shortcut, and torchvision's
first block of `layer1` has none. Even a mapped model computes our logits exactly only at some image sizes: the stem's
max-pool pads like TF's "SAME" here and symmetrically in torchvision (`torchvision_matches_at`).

ONNX: the classifier in eval mode, exported with torch's dynamo-based exporter (`torch.onnx.export(dynamo=True)`,
needs `onnx` and `onnxscript`: `pip install simclrv2-pipeline[export]`). The model holds no input normalisation: it
takes RGB floats in [0, 1] (uint8 / 255) with no mean/std normalisation, as the encoder does
(stages/models/resnet.py), after the evaluation preprocessing (stages/data/augment.py `CenterCrop.for_evaluation`:
centre crop of 0.875 of the shorter side, none at 32 px or less, bicubic resize to `image_size`). The class names
and the rest of our metadata go into the ONNX model's `metadata_props`.

Every file is written in a temporary folder beside its destination and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
import torchvision

from stages.data.augment import evaluation_crop_proportion
from stages.models.architecture import EncoderConfig
from stages.models.weights import LoadedClassifier
from stages.training.files import fsync_path

ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
ONNX_EXAMPLE_BATCH = 2  # the batch of the example input; not 1, which torch.export would treat as a constant
TORCHVISION_DEPTHS = (50, 101, 152)  # torchvision's bottleneck ResNets
INPUT_DESCRIPTION = (
    "N x 3 x {size} x {size} float32 RGB in [0, 1] (uint8 / 255), no mean/std normalisation; preprocess as in "
    "evaluation: centre crop of {proportion:g} of the shorter side, bicubic resize to {size} x {size}"
)


def input_description(image_size: int) -> str:
    return INPUT_DESCRIPTION.format(size=image_size, proportion=evaluation_crop_proportion(image_size))


# Our bottleneck's parts (stages/models/resnet.py `Bottleneck`) -> torchvision's names for them.
BOTTLENECK_NAMES = {
    "branch.0.0": "conv1",
    "branch.0.1": "bn1",
    "branch.1.0": "conv2",
    "branch.1.1": "bn2",
    "branch.2": "conv3",
    "branch.3": "bn3",
    "shortcut.0": "downsample.0",
    "shortcut.1": "downsample.1",
}
STEM_NAMES = {"encoder.stem.0.0": "conv1", "encoder.stem.0.1": "bn1"}
BLOCK_KEY = re.compile(r"encoder\.stages\.(\d+)\.(\d+)\.(.+)")


# --- safetensors ---------------------------------------------------------------------------------------------------


def export_safetensors(loaded: LoadedClassifier, path: Path | str) -> None:
    """A copy of the classifier's own weights file, metadata and all: `load_classifier(path)` reads it back."""
    with staged(Path(path)) as staging:
        shutil.copyfile(loaded.file, staging)


# --- torchvision ---------------------------------------------------------------------------------------------------


def torchvision_problems(architecture: EncoderConfig, proj_selector: int) -> list[str]:
    """Why torchvision's ResNets cannot hold a classifier of this shape; empty when `resnet<depth>` can."""
    problems = []
    if architecture.depth not in TORCHVISION_DEPTHS:
        if architecture.depth in (18, 34):
            problems.append(
                f"our ResNet-{architecture.depth} gives the first block of layer1 a projection shortcut (as the "
                f"reference does) and torchvision's resnet{architecture.depth} has none there"
            )
        else:
            problems.append(f"torchvision has no resnet{architecture.depth}")
    if architecture.width != 1:
        problems.append(
            f"its width is {architecture.width:g} and torchvision's ResNets have width 1 (its wide_resnet widens "
            "only the bottlenecks' inner convs)"
        )
    if architecture.sk:
        problems.append("it uses Selective Kernels (with the ResNet-D stem and average-pool shortcuts)")
    if architecture.small_images:
        problems.append("it has the small-image stem (3x3 conv, no max-pool) and torchvision the 7x7 conv + max-pool")
    if proj_selector > 0:
        problems.append(
            f"it keeps {proj_selector} projection-head layer(s) between the trunk and the linear layer "
            f"(proj_selector {proj_selector}), which torchvision's ResNets have no place for"
        )
    return problems


def torchvision_state_dict(loaded: LoadedClassifier) -> dict[str, torch.Tensor]:
    """The classifier's weights under the names of torchvision's `resnet<depth>` (conv1, bn1, layer1.0.conv1, ...,
    fc.weight, fc.bias): `torchvision.models.resnet50(num_classes=K).load_state_dict(state, strict=True)` takes them.

    A ValueError names what does not map (see `torchvision_problems`). In eval mode the torchvision model then gives
    our logits exactly at the image sizes where `torchvision_matches_at(size)` holds, and slightly different ones at
    the others (one-pixel shifted stem max-pool windows).
    """
    architecture = loaded.architecture
    problems = torchvision_problems(architecture, loaded.proj_selector)
    if problems:
        raise ValueError(
            f"{loaded.file}: torchvision's ResNets cannot hold this classifier ({architecture}): "
            f"{'; '.join(problems)}. Export it as safetensors or onnx instead"
        )
    state = {}
    for key, value in loaded.model.state_dict().items():
        state[torchvision_name(key)] = value.detach().contiguous().cpu()
    check_torchvision_shapes(state, architecture.depth, len(loaded.class_names))
    return state


def torchvision_name(key: str) -> str:
    """torchvision's name for one state-dict key of our bottleneck ResNet classifier without head layers."""
    prefix, _, leaf = key.rpartition(".")
    if prefix in STEM_NAMES:
        return f"{STEM_NAMES[prefix]}.{leaf}"
    if prefix == "fc":
        return key
    match = BLOCK_KEY.fullmatch(prefix)
    if match and match[3] in BOTTLENECK_NAMES:
        return f"layer{int(match[1]) + 1}.{match[2]}.{BOTTLENECK_NAMES[match[3]]}.{leaf}"
    raise ValueError(f"no torchvision name for the parameter {key!r}")


def check_torchvision_shapes(state: dict[str, torch.Tensor], depth: int, num_classes: int) -> None:
    """Our mapped names and shapes are exactly those of torchvision's model (built on the meta device: no memory)."""
    with torch.device("meta"):
        reference = getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes).state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    expected = {key: tuple(value.shape) for key, value in reference.items()}
    if shapes != expected:
        differing = sorted(set(shapes.items()) ^ set(expected.items()))[:4]
        raise ValueError(f"the mapped weights do not fit torchvision's resnet{depth}: {differing} ...")


def torchvision_matches_at(image_size: int) -> bool:
    """Whether torchvision's ResNet computes exactly our logits on `image_size` x `image_size` images.

    Everything but the stem's 3x3 stride-2 max-pool agrees at every size. That pool pads like TF's "SAME" here (on
    an even-sided input its one pixel of padding goes bottom/right) and one pixel on every side in torchvision; the
    two agree on odd-sided inputs. The 7x7 stride-2 stem conv outputs ceil(S / 2) pixels, so the logits are equal when
    that is odd (S % 4 in (1, 2): 34, 66, 226, ...); at other sizes (32, 224) the pool windows sit one pixel apart and
    the logits differ slightly.
    """
    return math.ceil(image_size / 2) % 2 == 1


def export_torchvision(loaded: LoadedClassifier, path: Path | str) -> None:
    """`torch.save` of `torchvision_state_dict(loaded)`: load it with `torch.load(path)` into `resnet<depth>`."""
    state = torchvision_state_dict(loaded)
    with staged(Path(path)) as staging:
        torch.save(state, staging)


# --- ONNX ----------------------------------------------------------------------------------------------------------


def export_onnx(
    loaded: LoadedClassifier, path: Path | str, image_size: int, *, external_data: bool | None = None
) -> None:
    """The classifier in eval mode as ONNX: input `images` (N x 3 x S x S float32, S = `image_size`), output `logits`
    (N x num_classes), N free.

    Normalisation is not part of the model: it takes RGB in [0, 1] without mean/std normalisation, as our encoder
    does, after the evaluation preprocessing (centre crop of 0.875 of the shorter side, none at 32 px or less,
    bicubic resize to S). The
    metadata_props hold `class_names` (JSON, in label order), `num_classes`, `architecture` (JSON), `proj_selector`,
    `image_size` and `input`/`output` descriptions. `external_data` (default: only for models over 2 GB) puts the
    weights in `<name>.data` beside the file. Exported with torch's dynamo-based exporter (needs onnx and onnxscript).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {' and '.join(missing)}: pip install 'simclrv2-pipeline[export]' (or pip install "
            "onnx onnxscript)"
        )
    model = loaded.model
    was_training = model.training
    device = next(model.parameters()).device
    example = torch.rand(ONNX_EXAMPLE_BATCH, 3, image_size, image_size, device=device)
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    finally:
        model.train(was_training)
    program.model.doc_string = f"SimCLRv2 classifier; {ONNX_INPUT}: {input_description(image_size)}"
    program.model.metadata_props.update(onnx_metadata(loaded, image_size))
    with staged(Path(path)) as staging:
        program.save(staging, external_data=external_data)


def onnx_metadata(loaded: LoadedClassifier, image_size: int) -> dict[str, str]:
    return {
        "class_names": json.dumps(list(loaded.class_names)),
        "num_classes": str(len(loaded.class_names)),
        "architecture": json.dumps(asdict(loaded.architecture)),
        "proj_selector": str(loaded.proj_selector),
        "image_size": str(image_size),
        "input": f"{ONNX_INPUT}: {input_description(image_size)}",
        "output": f"{ONNX_OUTPUT}: N x {len(loaded.class_names)} class scores, in the order of class_names",
    }


# --- writing -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staged(path: Path) -> Iterator[Path]:
    """Where to write `path`: a file of the same name in a temporary folder beside it. When the block succeeds, any
    side files written next to it (ONNX's `<name>.data`) are renamed into place first and the file itself last, so
    `path` appears only when complete; when it fails, nothing is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        staging = folder / path.name
        yield staging
        if not staging.is_file():
            raise RuntimeError(f"nothing was written for {path}")
        for file in sorted(folder.iterdir(), key=lambda file: file == staging):  # the file itself last
            fsync_path(file)
            os.replace(file, path.parent / file.name)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
