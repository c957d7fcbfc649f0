"""Throughput benchmark: pretraining steps (views/s) and batched augmentations (views/s).

    python -m stages.bench                 # the CPU table of the README
    python -m stages.bench --device cuda   # same configurations on a GPU (fp32; GPU-speed work is issue 6)

A training step is one SimCLRv2 pretraining step on random images: both views in one forward through encoder +
projection head, NT-Xent, backward, LARS update. Each figure is the median over timed windows after warm-up.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from stages.augment import CropFlipAugment, SimCLRAugment
from stages.heads import ProjectionHead, SimCLRModel
from stages.lars import LARS, lars_param_groups
from stages.losses import nt_xent
from stages.resnet import build_encoder


@dataclass(frozen=True)
class ModelCase:
    depth: int
    width: float
    sk: bool
    small_images: bool
    size: int
    batch: int  # images per step; two views each

    @property
    def name(self) -> str:
        stem = ", small-image stem" if self.small_images else ""
        return f"ResNet-{self.depth} {self.width:g}x{' SK' if self.sk else ''}{stem}"


CPU_MODEL_CASES = [
    ModelCase(18, 0.25, False, True, 32, 256),
    ModelCase(18, 1, False, True, 32, 64),
    ModelCase(50, 0.25, True, False, 64, 64),
    ModelCase(50, 1, False, False, 224, 8),
]


@dataclass(frozen=True)
class AugmentCase:
    name: str
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    source_size: int
    batch: int


AUGMENT_CASES = [
    AugmentCase("SimCLR view, 32 px (strength 0.5, no blur)", SimCLRAugment(32, 0.5, blur=False), 32, 512),
    AugmentCase("SimCLR view, 224 px from 256 px (strength 1, blur)", SimCLRAugment(224), 256, 32),
    AugmentCase("crop + flip, 224 px from 256 px", CropFlipAugment(224), 256, 32),
]


def median_seconds(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_views_per_second(case: ModelCase, device: torch.device, warmup: int, repeats: int) -> float:
    torch.manual_seed(0)
    encoder = build_encoder(case.depth, case.width, case.sk, case.small_images)
    model = SimCLRModel(encoder, ProjectionHead(encoder.out_dim)).to(device).train()
    optimizer = LARS(lars_param_groups(model, 1e-4), lr=0.1)
    views = torch.rand(2 * case.batch, 3, case.size, case.size, device=device)

    def step() -> None:
        z1, z2 = model(views).chunk(2)
        loss = nt_xent(z1, z2, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return 2 * case.batch / median_seconds(step, device, warmup, repeats)


def augment_views_per_second(case: AugmentCase, device: torch.device, warmup: int, repeats: int) -> float:
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (case.batch, 3, case.source_size, case.source_size), dtype=torch.uint8)
    images = images.to(device)
    return case.batch / median_seconds(lambda: case.augment(images, generator), device, warmup, repeats)


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{_cpu_model()}, {torch.get_num_threads()} threads"
    return f"{hardware}; torch {torch.__version__}, Python {platform.python_version()}, fp32"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before measuring (default: 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps; the median is reported (default: 5)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    print(f"Machine: {describe_machine(device)}\n")
    print("| pretraining step (fwd + bwd + LARS) | image px | batch (images) | views/s |")
    print("|---|---|---|---|")
    for case in CPU_MODEL_CASES:
        rate = train_step_views_per_second(case, device, args.warmup, args.repeats)
        print(f"| {case.name} | {case.size} | {case.batch} | {rate:,.0f} |", flush=True)
    print("\n| augmentation (uint8 in, float out) | batch | views/s |")
    print("|---|---|---|")
    for case in AUGMENT_CASES:
        rate = augment_views_per_second(case, device, args.warmup, args.repeats)
        print(f"| {case.name} | {case.batch} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
