"""Pretraining throughput: views/s, step time, peak memory and model FLOPs utilisation (MFU), per model and data path.

    python -m stages.benchmark                          # every case for the device: the GPU table, or CPU stand-ins
    python -m stages.benchmark --compile --json out.json
    python -m stages.benchmark --cases r50 --data imagefolder:/data/val --workers 16

Each model case measures, in one run:
- model:            the training step (both views in one forward, NT-Xent, backward, LARS) on views that are
                    already augmented: what the model path alone allows;
- in-memory:        the whole step with augmentation on the device, from synthetic uint8 images and from real ones
                    (`--data`, decoded once and resized to the case's source size);
- streamed:         the whole step fed by the streaming loader (workers decode and crop JPEGs, the device does the
                    rest), on JPEGs written from the real images at `--jpeg-size`;
- data path alone:  device augmentation of in-memory images, and the streaming loader, without the model.
The ResNet-50 case also runs the straightforward baseline (torchvision ResNet-50, per-sample torchvision transforms
in DataLoader workers, fp32: stages/benchmark/torchvision_baseline.py) on the same real images and prints our
speed-up over it.
On a GPU, the largest model (ResNet-152 3x SK) is run at the largest batch that fits, with and without activation
checkpointing, and one in-memory step is checked for host synchronisations (`torch.cuda.set_sync_debug_mode`).

Rates are views over a timed window of consecutive steps, the device synchronised only at the window's ends, as in
training; the median of several windows is reported. MFU counts the model's FLOPs (forward + backward,
`torch.utils.flop_counter`, without recomputation) against the rate of a large matmul measured on the same device in
the same precision. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import PIL.Image
import torch
from torch.utils.flop_counter import FlopCounterMode

from stages.benchmark.torchvision_baseline import baseline_views_per_second
from stages.data.augment import SimCLRAugment
from stages.data.crop_loader import PREFETCH, CropBatches
from stages.data.sources import DataConfig, load_splits, open_train_rows
from stages.data.views import InMemoryViews, StreamedViews
from stages.losses.nt_xent import nt_xent
from stages.models.architecture import EncoderConfig, build_pretrain_model
from stages.optim.lars import LARS, lars_param_groups

BIG_MODEL_BATCHES = (512, 384, 256, 192, 128, 96, 64, 48, 32, 16, 8)


@dataclass(frozen=True)
class ModelCase:
    key: str
    depth: int
    width: float
    sk: bool
    small_images: bool
    size: int  # side of the views
    batch: int  # images per step; two views each
    source_size: int  # side of the stored images the views are cut from

    @property
    def name(self) -> str:
        stem = ", small-image stem" if self.small_images else ""
        return f"ResNet-{self.depth} {self.width:g}x{' SK' if self.sk else ''}{stem}"

    @property
    def encoder(self) -> EncoderConfig:
        return EncoderConfig(self.depth, self.width, self.sk, self.small_images)


GPU_CASES = [
    ModelCase("r50", 50, 1, False, False, 224, 256, 256),
    ModelCase("r50-sk", 50, 1, True, False, 224, 256, 256),
    ModelCase("r18-32px", 18, 1, False, True, 32, 512, 32),
]
GPU_BIG_CASE = ModelCase("r152-3x-sk", 152, 3, True, False, 224, 0, 256)  # batch: the largest that fits
CPU_CASES = [
    ModelCase("r18-0.25x-32px", 18, 0.25, False, True, 32, 256, 32),
    ModelCase("r50-0.25x-sk", 50, 0.25, True, False, 64, 32, 72),
    ModelCase("r50", 50, 1, False, False, 224, 8, 256),
]


@dataclass
class Measurement:
    what: str
    views_per_second: float
    step_ms: float
    peak_memory_gib: float | None = None
    mfu: float | None = None


@dataclass(frozen=True)
class Settings:
    device: torch.device
    precision: str  # "bf16" or "fp32"
    channels_last: bool
    compile: bool
    warmup: int
    repeats: int  # steps per timed window
    windows: int  # timed windows; the median is reported
    workers: int


# --- the step ------------------------------------------------------------------------------------------------------


class PretrainStep:
    """One SimCLRv2 pretraining step as stages/pretrain.py takes it (minus logging and checkpoints): both views in
    one forward under autocast, NT-Xent, backward, foreach LARS."""

    def __init__(self, case: ModelCase, settings: Settings, activation_checkpointing: bool = False) -> None:
        with settings.device:
            self.model = build_pretrain_model(case.encoder).train()
        self.model.encoder.activation_checkpointing = activation_checkpointing
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optimizer = LARS(lars_param_groups(self.model, 1e-6), lr=0.1)
        self.settings = settings
        self.flops_per_view = count_flops_per_view(self.model, case.size, settings.device)
        if settings.compile:
            self.model.compile()

    def release(self) -> None:
        """Free the model and optimiser state before the next case is built (a 3x model holds GBs)."""
        del self.model, self.optimizer
        release(self.settings.device)

    def __call__(self, views: torch.Tensor) -> None:
        with torch.autocast(self.settings.device.type, torch.bfloat16, enabled=self.settings.precision == "bf16"):
            z1, z2 = self.model(views.contiguous(memory_format=self.memory_format)).chunk(2)
        loss = nt_xent(z1, z2, 0.1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def count_flops_per_view(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one view (counted on 4 views; the model's FLOPs grow linearly with the batch)."""
    views = torch.rand(4, 3, size, size, device=device)
    checkpointing = model.encoder.activation_checkpointing
    model.encoder.activation_checkpointing = False  # model FLOPs: recomputation is not useful work
    with FlopCounterMode(display=False) as counter:
        z1, z2 = model(views).chunk(2)
        nt_xent(z1, z2, 0.1).backward()
    model.encoder.activation_checkpointing = checkpointing
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(views)


# --- timing --------------------------------------------------------------------------------------------------------


def seconds_per_step(step: Callable[[int], None], settings: Settings, steps: int | None = None) -> float:
    """Median over `settings.windows` timed windows of seconds per step, after `warmup` untimed steps. A window is
    consecutive steps with the device synchronised only at its ends, so queued work overlaps as in training."""
    steps, step_numbers, windows = steps or settings.repeats, itertools.count(), []
    for _ in range(settings.warmup):
        step(next(step_numbers))
    for _ in range(settings.windows):
        synchronize(settings.device)
        start = time.perf_counter()
        for _ in range(steps):
            step(next(step_numbers))
        synchronize(settings.device)
        windows.append((time.perf_counter() - start) / steps)
    return statistics.median(windows)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measured_peak_tflops(settings: Settings) -> float:
    """What the device's matrix units deliver: a large square matmul in the benchmark's precision (the MFU
    denominator; about 790 TFLOP/s bf16 on an H100, below the data sheet's 989)."""
    n = 8192 if settings.device.type == "cuda" else 1024
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=settings.device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / seconds_per_step(lambda _: a @ b, settings) / 1e12


def measure(
    what: str,
    batch: int,
    step: Callable[[int], None],
    settings: Settings,
    flops_per_view: float | None = None,
    peak: float | None = None,
    steps: int | None = None,
) -> Measurement:
    reset_peak_memory(settings.device)
    seconds = seconds_per_step(step, settings, steps)
    views_per_second = 2 * batch / seconds
    mfu = views_per_second * flops_per_view / (peak * 1e12) if flops_per_view and peak else None
    return Measurement(what, views_per_second, 1000 * seconds, peak_memory_gib(settings.device), mfu)


# --- data ----------------------------------------------------------------------------------------------------------


def real_images(data: DataConfig, size: int) -> torch.Tensor:
    """The source's training images decoded once, resized (bicubic, centre crop) to `size`: uint8 N x 3 x S x S."""
    train, _ = load_splits(replace(data, image_size=size))
    return train.images


def write_jpegs(images: torch.Tensor, folder: Path, count: int, size: tuple[int, int]) -> str:
    """`count` JPEGs (quality 90) of `size` (W, H) made from `images`, as an imagefolder (two class folders: the
    loader reads labels, not needing them); returns its source. ImageNet's photos are ~400 x 350 on average."""
    for index in range(count):
        array = images[index % len(images)].permute(1, 2, 0).numpy()
        image = PIL.Image.fromarray(array).resize(size, PIL.Image.Resampling.BICUBIC)
        path = folder / f"class{index % 2}" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
    return f"imagefolder:{folder}"


def endless_steps(views: Callable[[int, int], torch.Tensor]) -> Callable[[int], torch.Tensor]:
    return lambda step: views(step, 1 << 40)


# --- the cases -----------------------------------------------------------------------------------------------------


def run_case(
    case: ModelCase, settings: Settings, images: torch.Tensor, jpeg_source: str, peak: float | None, baseline: bool
) -> list[Measurement]:
    device, results = settings.device, []
    train_step = PretrainStep(case, settings)
    flops = train_step.flops_per_view
    augment = SimCLRAugment(case.size, color_strength=1.0 if case.size > 32 else 0.5, blur=case.size > 32)

    views = torch.rand(2 * case.batch, 3, case.size, case.size, device=device)
    results.append(
        measure("model (views already augmented)", case.batch, lambda _: train_step(views), settings, flops, peak)
    )

    synthetic = torch.randint(
        0, 256, (max(2 * case.batch, 512), 3, case.source_size, case.source_size), dtype=torch.uint8, device=device
    )
    for label, source in (("synthetic", synthetic), ("real", images.to(device))):
        in_memory = endless_steps(InMemoryViews(source, augment, case.batch, seed=0))
        results.append(
            measure(f"data path alone: in-memory {label} images, device augmentation", case.batch, in_memory, settings)
        )
        results.append(
            measure(
                f"whole step: in-memory {label} images",
                case.batch,
                lambda step, views=in_memory: train_step(views(step)),
                settings,
                flops,
                peak,
            )
        )

    # Windows twice as long as the loader's queue (PREFETCH steps per worker): prefetched steps cannot flatter the rate.
    streamed_steps = max(settings.repeats, 2 * PREFETCH * settings.workers)
    rows = open_train_rows(DataConfig(source=jpeg_source))
    for label, with_model in (
        (f"data path alone: streamed JPEGs, {settings.workers} workers", False),
        ("whole step: streamed JPEGs", True),
    ):
        crops = CropBatches(rows, case.size, case.batch, seed=int(with_model))
        streamed = StreamedViews(crops, augment, settings.workers, device)
        step = endless_steps(streamed)
        measured_step = (lambda index, step=step: train_step(step(index))) if with_model else step
        results.append(
            measure(label, case.batch, measured_step, settings, flops if with_model else None, peak, streamed_steps)
        )
        streamed.close()  # its workers and their pinned batches must not outlive the measurement
    if device.type == "cuda":
        check_no_host_sync(train_step, InMemoryViews(synthetic, augment, case.batch, seed=0))
    train_step.release()

    if baseline:
        result = baseline_views_per_second(
            images, case.size, case.batch, device, max(settings.workers, 1), settings.warmup, streamed_steps
        )
        results.append(
            Measurement(
                "baseline: torchvision ResNet-50, per-sample transforms in workers, fp32",
                result.views_per_second,
                1000 * result.step_seconds,
            )
        )
    return results


def check_no_host_sync(train_step: PretrainStep, views: InMemoryViews) -> None:
    """One in-memory step with CUDA's sync debug mode set to error: a host synchronisation inside it raises."""
    train_step(views(0, 1))
    synchronize(torch.device("cuda"))
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(views(1, 2))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    print("host synchronisations inside an in-memory step: none (checked with torch.cuda.set_sync_debug_mode)")


def largest_batch(
    try_batch: Callable[[int], Measurement],
    batches: tuple[int, ...] = BIG_MODEL_BATCHES,
    device: torch.device | None = None,
) -> Measurement | None:
    """The measurement at the largest of `batches` (tried largest first) that runs without running out of memory."""
    for batch in sorted(batches, reverse=True):
        try:
            return try_batch(batch)
        except torch.OutOfMemoryError:
            pass  # memory is released below, once the exception (and the activations its frames hold) is gone
        if device is not None:
            release(device)
    return None


def run_big_case(case: ModelCase, settings: Settings, peak: float | None) -> list[Measurement]:
    """The largest model at the largest batch that fits, with and without activation checkpointing. Its steps take
    seconds, so one short window (1 warm-up step, 3 timed) per configuration."""
    settings, results = replace(settings, warmup=1, repeats=3, windows=1), []
    for checkpointing in (False, True):
        train_step = PretrainStep(case, settings, activation_checkpointing=checkpointing)

        def try_batch(
            batch: int, train_step: PretrainStep = train_step, checkpointing: bool = checkpointing
        ) -> Measurement:
            views = torch.rand(2 * batch, 3, case.size, case.size, device=settings.device)
            label = f"model, batch {batch}, activation checkpointing {'on' if checkpointing else 'off'}"
            return measure(label, batch, lambda _: train_step(views), settings, train_step.flops_per_view, peak)

        found = largest_batch(try_batch, device=settings.device)
        train_step.release()
        results.append(
            found
            or Measurement(
                f"no batch in {BIG_MODEL_BATCHES} fits (checkpointing {'on' if checkpointing else 'off'})",
                math.nan,
                math.nan,
            )
        )
    return results


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- report --------------------------------------------------------------------------------------------------------


def describe_machine(settings: Settings) -> str:
    device = settings.device
    hardware = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_model()}, {torch.get_num_threads()} threads"
    )
    return (
        f"{hardware}; torch {torch.__version__}, Python {platform.python_version()}; {settings.precision}, "
        f"channels_last {settings.channels_last}, compile {settings.compile}, {settings.workers} loader workers"
    )


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def table(case: ModelCase, batch: int | None, results: list[Measurement]) -> str:
    model_rate = next((r.views_per_second for r in results if r.what.startswith("model")), None)
    baseline = next((r.views_per_second for r in results if r.what.startswith("baseline")), None)
    lines = [
        f"\n{case.name}, {case.size} px" + (f", batch {batch}" if batch else ""),
        "| measurement | views/s | step ms | peak GiB | MFU | vs model | vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        memory = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "-"
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "-"
        vs_model = f"{r.views_per_second / model_rate:.2f}x" if model_rate else "-"
        vs_baseline = f"{r.views_per_second / baseline:.2f}x" if baseline else "-"
        lines.append(
            f"| {r.what} | {r.views_per_second:,.0f} | {r.step_ms:,.1f} | {memory} | {mfu} | {vs_model} | "
            f"{vs_baseline} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stages.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--cases",
        default="",
        help="comma-separated case keys (default: all for the device): "
        + ", ".join(c.key for c in [*GPU_CASES, GPU_BIG_CASE, *CPU_CASES]),
    )
    parser.add_argument("--batch", type=int, help="override every case's batch (images per step)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps)")
    parser.add_argument("--data", default="digits", help="real images: a stages.data.sources source (default: digits)")
    parser.add_argument(
        "--jpeg-size",
        default="400x350",
        help="W x H of the JPEGs the streaming loader decodes (small-image cases: the source size)",
    )
    parser.add_argument("--jpeg-count", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="loader worker processes")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows; the median is reported")
    parser.add_argument("--peak-tflops", type=float, help="the MFU denominator (default: measured with a matmul)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    return parser.parse_args(argv)


def select_cases(args: argparse.Namespace, device: torch.device) -> list[ModelCase]:
    everything = {case.key: case for case in [*GPU_CASES, GPU_BIG_CASE, *CPU_CASES]}
    if args.cases:
        unknown = [key for key in args.cases.split(",") if key not in everything]
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; choose from {sorted(everything)}")
        cases = [everything[key] for key in args.cases.split(",")]
    else:
        cases = [*GPU_CASES, GPU_BIG_CASE] if device.type == "cuda" else CPU_CASES
    return [replace(case, batch=args.batch) if args.batch and case.batch else case for case in cases]


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    settings = Settings(
        device,
        args.precision or ("bf16" if device.type == "cuda" else "fp32"),
        not args.no_channels_last,
        args.compile,
        args.warmup,
        args.repeats,
        args.windows,
        args.workers,
    )
    peak = args.peak_tflops or measured_peak_tflops(settings)
    width, height = (int(side) for side in args.jpeg_size.split("x"))
    print(f"Machine: {describe_machine(settings)}", flush=True)
    print(f"Matrix-multiply rate (the MFU denominator): {peak:,.1f} TFLOP/s", flush=True)
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in select_cases(args, device):
            if case.batch == 0:
                results = run_big_case(case, settings, peak)
            else:
                images = real_images(DataConfig(source=args.data), case.source_size)
                jpeg_size = (case.source_size, case.source_size) if case.small_images else (width, height)
                jpegs = write_jpegs(images, Path(scratch) / case.key, args.jpeg_count, jpeg_size)
                baseline = not args.no_baseline and case.depth == 50 and not case.sk and case.width == 1
                results = run_case(case, settings, images, jpegs, peak, baseline)
            print(table(case, case.batch or None, results), flush=True)
            records += [{"case": case.key, **asdict(case), **asdict(r)} for r in results]
    if args.json:
        args.json.write_text(json.dumps(records, indent=2, default=str))
    return records


if __name__ == "__main__":
    main()
