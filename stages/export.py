"""Export a trained classifier (the output of finetune, the baseline or distill) for other tools.

    python -m stages.export runs/finetune --format onnx
    python -m stages.export runs/distill/model.safetensors --format onnx --image-size 224 --out student.onnx
    python -m stages.export runs/baseline --format torchvision
    python -m stages.export runs/finetune --format safetensors --out finetuned.safetensors --overwrite

Formats (stages/models/export.py):
  safetensors  a copy of the stage's weights file, metadata and all (stages.models.weights.load_classifier reads it)
  torchvision  a state dict for torchvision.models.resnet50/101/152(num_classes=K), saved with torch.save; only a
               width-1 ResNet-50/101/152 without SK, without the small-image stem, fine-tuned with proj_selector 0,
               maps
               (the rest is refused); logits equal ours exactly only at image sizes S with S % 4 in (1, 2)
  onnx         the classifier in eval mode: input `images` (N x 3 x S x S floats in [0, 1], no mean/std
               normalisation), output `logits`; the class names are in its metadata_props. Needs onnx and
               onnxscript (pip install 'simclrv2-pipeline[export]')

STAGE_DIR is the stage's output directory or its model.safetensors. The file goes to STAGE_DIR/export/model.<ext>
(.safetensors, .torchvision.pt, .onnx) unless --out says otherwise; an existing file is replaced only with
--overwrite. The image size S defaults to `config.image_size` in STAGE_DIR/manifest.json (written when the pipeline
ran the stage). Prints what it wrote as JSON; bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from stages.models.export import (
    export_onnx,
    export_safetensors,
    export_torchvision,
    torchvision_matches_at,
)
from stages.models.weights import WEIGHTS_FILE, load_classifier
from stages.training.cli import run_and_print, usage_error

PROG = "stages.export"
EXTENSIONS = {"safetensors": ".safetensors", "torchvision": ".torchvision.pt", "onnx": ".onnx"}
CLASSIFIER_STAGES = "finetune, baseline or distill"
MANIFEST = "manifest.json"


class OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors as one line on stderr, exit status 2 (as the other stage programs)."""

    def error(self, message: str) -> NoReturn:
        usage_error(PROG, f"{message} (see --help)")


def build_parser(prog: str = f"python -m {PROG}") -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage_dir", type=Path, metavar="STAGE_DIR", help=f"a {CLASSIFIER_STAGES} output directory")
    parser.add_argument("--format", required=True, choices=sorted(EXTENSIONS), help="what to write")
    parser.add_argument("--out", type=Path, metavar="FILE", help="output file (default STAGE_DIR/export/model.<ext>)")
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="N",
        help="side of the input images in pixels (default: config.image_size in STAGE_DIR/manifest.json)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text!r}")
    return value


def stage_dir_of(path: Path) -> Path:
    """The stage's directory, whether `path` is that directory or its weights file."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: pass the output directory of a {CLASSIFIER_STAGES} stage (or its {WEIGHTS_FILE})"
        )
    return path if path.is_dir() else path.parent


def output_path(stage_dir: Path, fmt: str, out: Path | None, overwrite: bool) -> Path:
    out = out if out is not None else stage_dir / "export" / f"model{EXTENSIONS[fmt]}"
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory: give the name of the file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it, or --out to write elsewhere")
    return out


def manifest_image_size(stage_dir: Path) -> int | None:
    """`config.image_size` of the stage's manifest; None when there is no manifest."""
    manifest = stage_dir / MANIFEST
    if not manifest.is_file():
        return None
    try:
        size = json.loads(manifest.read_text())["config"]["image_size"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{manifest} has no readable config.image_size ({error!r}): pass --image-size") from None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{manifest}: config.image_size is {size!r}, not a positive integer: pass --image-size")
    return size


def run(
    stage_dir: Path, fmt: str, out: Path | None = None, image_size: int | None = None, overwrite: bool = False
) -> dict:
    """Write the classifier of `stage_dir` in format `fmt`; returns what was written."""
    source = Path(stage_dir)  # the directory or a weights file, whatever its name
    stage_dir = stage_dir_of(source)
    out = output_path(stage_dir, fmt, out, overwrite)
    if image_size is None and fmt != "safetensors":
        image_size = manifest_image_size(stage_dir)
        if image_size is None and fmt == "onnx":
            raise ValueError(f"pass --image-size: {stage_dir} has no {MANIFEST} to read config.image_size from")
    loaded = load_classifier(source, stage=CLASSIFIER_STAGES)
    result = {"format": fmt, "out": str(out), "source": str(loaded.file), "num_classes": len(loaded.class_names)}
    if fmt == "safetensors":
        export_safetensors(loaded, out)
    elif fmt == "torchvision":
        export_torchvision(loaded, out)
        result["torchvision_model"] = f"torchvision.models.resnet{loaded.architecture.depth}"
        if image_size is None or not torchvision_matches_at(image_size):
            where = f"at {image_size} px they differ slightly" if image_size is not None else "they may differ"
            print(
                f"{PROG}: note: torchvision's logits equal this model's only at image sizes S with S % 4 in (1, 2) "
                f"(e.g. 34, 226), {where}: its stem max-pool pads differently; --format onnx keeps the logits exact",
                file=sys.stderr,
            )
    else:
        export_onnx(loaded, out, image_size)
        result["image_size"] = image_size
    return result


def main(argv: list[str] | None = None, prog: str = f"python -m {PROG}") -> None:
    """The export program; `prog` names it in its usage and help (`simclrv2 export` when the CLI runs it)."""
    args = build_parser(prog).parse_args(argv)
    try:
        run_and_print(PROG, lambda: run(args.stage_dir, args.format, args.out, args.image_size, args.overwrite))
    except ImportError as error:  # onnx or onnxscript missing: not the input's fault
        sys.exit(f"{PROG}: error: {error}")


if __name__ == "__main__":
    main()
