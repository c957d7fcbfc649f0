"""Memory against dataset size: every stage on generated JPEG folders of two sizes, streamed, with its peak host memory
(and, on CUDA, peak device memory). Not a test: it measures, it asserts nothing.

    python -m stages.benchmark.scale                              # 2,000 and 20,000 JPEGs at 224 px, on this machine
    python -m stages.benchmark.scale --sizes 2000 20000 100000 --out /scratch/scale --workers 8

Each size gets an imagefolder of `size` JPEGs (10 classes, 80% train / 20% test, smooth class-coloured patterns with
noise, `--image-side` pixels square). Every stage then runs once per size as its own command (`python -m stages.X`)
with `data.in_memory` false: the same few optimiser steps whatever the size, while every pass over the data
(evaluation, kNN features, pre-labels) grows with it. Peak host memory is the largest resident set of the stage's
process tree (the stage, or one of its loader workers), from `wait4`; device memory is the stage's own
`torch.cuda.max_memory_allocated`. The whole tree's memory at once (loader workers included, shared pages counted
once) is the peak of its summed PSS, sampled every 0.25 s with psutil. The table ends with the ratios larger / smaller
per stage: a data path whose memory grows with the data shows it there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import psutil

from stages.data.label_subsets import budget_name

NUM_CLASSES = 10
TEST_SHARE = 0.2
STEPS = 8  # optimiser steps of every training stage, at every size
BATCH = 32
VIEW = 32  # side of the network's crops: small, so that the data path, not the model, is what is measured
TINY_MODEL = ["--model.depth", "18", "--model.width", "0.125"]


def write_jpegs(folder: Path, count: int, side: int, seed: int = 0) -> None:
    """`count` JPEGs under folder/{train,test}/<class>/, skipped when a finished folder is already there."""
    done = folder.with_name(folder.name + ".done")
    if done.exists():
        return
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    for index in range(count):
        label = index % NUM_CLASSES
        split = "test" if (index // NUM_CLASSES) % int(1 / TEST_SHARE) == 0 else "train"  # every class in both
        phase = 2 * np.pi * label / NUM_CLASSES
        channels = [np.sin(2 * np.pi * (x + y) + phase), np.cos(2 * np.pi * x * (1 + label % 3)), np.sin(phase + y)]
        pattern = 128 + 90 * np.stack(channels, axis=-1) + rng.normal(0, 20, (side, side, 3))
        path = folder / split / f"class{label}" / f"{index:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(pattern.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    done.touch()


@dataclass
class Measured:
    stage: str
    seconds: float
    peak_rss_gb: float  # the largest single process of the stage's tree
    peak_pss_gb: float  # the whole tree at once, shared pages split between the processes that map them
    peak_device_gb: float | None


class TreeMemory(threading.Thread):
    """Samples the proportional set size (PSS) of a process and all its descendants; keeps the peak of the sum."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.peak = psutil.Process(pid), interval, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            total = 0
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_full_info().pss
            self.peak = max(self.peak, total)


def run_stage(name: str, module: str, args: list[str], out: Path, env: dict[str, str]) -> Measured:
    """`python -m stages.<module>` with `args`; its wall time and peak memory. A failure stops the benchmark."""
    command = [sys.executable, "-m", f"stages.{module}", "--out", str(out), *args]
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        tree = TreeMemory(process.pid)
        tree.start()
        _, status, usage = os.wait4(process.pid, 0)  # ru_maxrss: the largest process of the tree, in KiB
        tree.stopped.set()
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{name} failed; see {out.parent / f'{name}.log'}")
    written = out / "metrics.json"  # subsets writes none: it needs no device
    metrics = json.loads(written.read_text()) if written.exists() else {}
    return Measured(name, seconds, usage.ru_maxrss / 1e6, tree.peak / 1e9, metrics.get("peak_device_memory_gb"))


def every_stage(data: Path, runs: Path, train_images: int, workers: int, env: dict[str, str]) -> list[Measured]:
    """Every stage on the folder at `data`, outputs under `runs`."""
    source = ["--data.source", f"imagefolder:{data}", "--data.in-memory", "False"]
    source += ["--data.loader-workers", str(workers)]
    labels = max(BATCH, train_images // 10)
    epochs = str(STEPS * BATCH / train_images)
    subset = runs / "subsets" / f"{budget_name(labels)}.json"
    trainer = [*source, "--image-size", str(VIEW), "--batch-size", str(BATCH), "--checkpoint-every", "1000"]
    stages = [
        ("subsets", "subsets", [*source, "--budgets", str(labels)]),
        (
            "pretrain",
            "pretrain",
            [*trainer, "--epochs", epochs, *TINY_MODEL],
        ),
        (
            "baseline",
            "finetune",
            [
                *trainer,
                "--steps",
                str(STEPS),
                "--subset",
                str(subset),
                *TINY_MODEL,
            ],
        ),
        (
            "finetune",
            "finetune",
            [*trainer, "--steps", str(STEPS), "--subset", str(subset), "--pretrain", str(runs / "pretrain")],
        ),
        ("distill", "distill", [*trainer, "--epochs", epochs, "--teacher", str(runs / "finetune")]),
        (
            "evaluate",
            "evaluate",
            [
                *source,
                "--image-size",
                str(VIEW),
                "--linear-batch-size",
                str(BATCH),
                "--linear-epochs",
                epochs,
                "--pretrain",
                str(runs / "pretrain"),
                "--classifier",
                str(runs / "distill"),
            ],
        ),
        (
            "predict",
            "predict",
            [*source, "--image-size", str(VIEW), "--classifier", str(runs / "distill"), "--subset", str(subset)],
        ),
    ]
    return [run_stage(name, module, args, runs / name, env) for name, module, args in stages]


def table(results: dict[int, list[Measured]]) -> str:
    sizes = sorted(results)
    small, large = sizes[0], sizes[-1]
    columns = {
        "largest process RSS, GB": lambda m: f"{m.peak_rss_gb:.2f}",
        "whole tree PSS, GB": lambda m: f"{m.peak_pss_gb:.2f}",
        "device, GB": lambda m: f"{m.peak_device_gb:.2f}" if m.peak_device_gb is not None else "-",
        "seconds": lambda m: f"{m.seconds:.0f}",
    }
    header = ["stage"]
    for title in columns:
        header += [f"{title}, {size:,}" for size in sizes]
    header += [f"RSS ratio {large:,}/{small:,}", f"PSS ratio {large:,}/{small:,}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, first in enumerate(results[small]):
        last = results[large][i]
        row = [first.stage]
        for show in columns.values():
            row += [show(results[size][i]) for size in sizes]
        row += [f"{last.peak_rss_gb / first.peak_rss_gb:.2f}", f"{last.peak_pss_gb / max(first.peak_pss_gb, 1e-9):.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.benchmark.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="JPEGs per dataset")
    parser.add_argument("--image-side", type=int, default=224, help="side of the generated JPEGs, in pixels")
    parser.add_argument("--workers", type=int, default=2, help="data.loader_workers of every stage")
    parser.add_argument("--out", type=Path, default=Path("scale-benchmark"), help="folder for the data and the runs")
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_DATASETS_CACHE": str(args.out / "hf-cache"), "HF_DATASETS_OFFLINE": "1"}
    results = {}
    for size in args.sizes:
        data = args.out / f"jpegs-{size}"
        start = time.perf_counter()
        write_jpegs(data, size, args.image_side)
        print(f"{size:,} JPEGs at {args.image_side} px: {data} ({time.perf_counter() - start:.0f} s)", flush=True)
        runs = args.out / f"runs-{size}"
        shutil.rmtree(runs, ignore_errors=True)  # every stage runs from the start
        train_images = sum(1 for _ in (data / "train").rglob("*.jpg"))
        results[size] = every_stage(data, runs, train_images, args.workers, env)
        for measured in results[size]:
            print(
                f"  {measured.stage}: {measured.peak_rss_gb:.2f} GB largest RSS, {measured.peak_pss_gb:.2f} GB tree "
                f"PSS, {measured.seconds:.0f} s",
                flush=True,
            )
    print(table(results))
    (args.out / "scale.md").write_text(table(results) + "\n")


if __name__ == "__main__":
    main()
