"""Peak host memory of pre-labeling large photos: `python -m stages.predict --images` (what `simclrv2 predict` runs,
with `data.image_size` null as in the quickstart and ImageNet configs) on generated 12-megapixel JPEGs. Not a test:
it measures, it asserts nothing.

    python -m stages.benchmark.predict_memory                           # 16 photos of 4000 x 3000, this checkout
    python -m stages.benchmark.predict_memory --code /tmp/before        # the same photos, another checkout's code
    python -m stages.benchmark.predict_memory --photos 8 16 --out /tmp/predict-memory

The photos (smooth colours with noise, JPEG quality 90) and a classifier of the quickstart's architecture (random
weights: the weights do not change the memory) are written once under `--out`. Each photo count runs as its own
command, all photos in one batch (`--batch-size`, 256 by default as in `simclrv2 predict`); its peak memory is the
largest resident set of its process tree, from `wait4` (what `/usr/bin/time -v` reports as "Maximum resident set
size"), with an empty datasets cache, as on a folder of new photos. A data path whose memory follows the photos'
resolution grows with the count; one that decodes them reduced stays flat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.weights import save_classifier

CLASSES = [str(digit) for digit in range(10)]


def write_photos(folder: Path, count: int, width: int, height: int) -> None:
    """`count` JPEGs of `width x height` in `folder`, skipped when they are already there."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    for index in range(count):
        path = folder / f"photo{index:03d}.jpg"
        if path.exists():
            continue
        noise = np.random.default_rng(index).normal(0, 12, (height, width, 3)).astype(np.float32)
        channels = [np.sin(2 * np.pi * (x + y) + index), np.cos(3 * np.pi * x), np.sin(2 * np.pi * y + index)]
        pixels = 128 + 90 * np.stack(channels, axis=-1) + noise
        PIL.Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_classifier(folder: Path) -> Path:
    """A classifier of the quickstart's architecture (ResNet-18 at 1/4 width, small-image stem), random weights."""
    folder.mkdir(parents=True, exist_ok=True)
    architecture = EncoderConfig()
    save_classifier(
        classifier_for(architecture, 0, len(CLASSES)), folder / "model.safetensors", architecture, 0, CLASSES
    )
    return folder


def peak_memory(command: list[str], code: Path, log: Path, env: dict[str, str]) -> tuple[float, float]:
    """(largest resident set of the command's process tree in GB, seconds), running `code`'s stages."""
    start = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=code, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # ru_maxrss: the largest process of the tree, in KiB
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed; see {log}")
    return usage.ru_maxrss * 1024 / 1e9, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stages.benchmark.predict_memory", description=__doc__.split(".")[0]
    )
    parser.add_argument("--photos", type=int, nargs="+", default=[16], help="photo counts, one run each")
    parser.add_argument("--width", type=int, default=4000, help="photo width, in pixels")
    parser.add_argument("--height", type=int, default=3000, help="photo height, in pixels")
    parser.add_argument("--image-size", type=int, default=16, help="the network's crop side (quickstart: 16)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--code", type=Path, default=Path.cwd(), help="checkout whose stages run (default: here)")
    parser.add_argument("--out", type=Path, default=Path("predict-memory"), help="folder for photos, model, runs")
    args = parser.parse_args(argv)
    out, code = args.out.resolve(), args.code.resolve()
    classifier = write_classifier(out / "classifier")
    for count in args.photos:
        photos = out / f"photos-{count}"
        write_photos(photos, count, args.width, args.height)
        run = out / f"run-{count}-{code.name}"
        cache = out / "hf-cache"
        shutil.rmtree(cache, ignore_errors=True)  # empty, as `simclrv2 predict` on a folder of new photos finds it
        env = {**os.environ, "PYTHONPATH": str(code), "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1"}
        command = [sys.executable, "-m", "stages.predict", "--out", str(run), "--classifier", str(classifier)]
        command += ["--images", f"imagefolder:{photos}", "--image-size", str(args.image_size)]
        command += ["--eval-batch-size", str(args.batch_size)]
        gigabytes, seconds = peak_memory(command, code, out / f"run-{count}-{code.name}.log", env)
        size = f"{args.width} x {args.height}"
        print(f"{count} photos of {size}, code {code}: {gigabytes:.2f} GB peak RSS, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
