"""The end of every stage: test metrics and weights on the main process, `metrics.json`, then every process waits
for it and closes its trackers, so no process leaves while the outputs are half written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator

from stages.training.accelerator import close_trackers

METRICS_FILE = "metrics.json"


def finish_stage(
    accelerator: Accelerator, out_dir: Path, metrics: dict, on_main_process: Callable[[], dict | None] = lambda: None
) -> dict:
    """Run `on_main_process` (evaluate, save the weights; it may return more metrics) on the main process only, write
    `out_dir/metrics.json` there, then synchronise every process and close the trackers. Returns the metrics."""
    if accelerator.is_main_process:
        metrics |= on_main_process() or {}
        if accelerator.device.type == "cuda":  # what the stage needed of the device, for the scale benchmark
            metrics["peak_device_memory_gb"] = round(torch.cuda.max_memory_allocated(accelerator.device) / 1e9, 3)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    accelerator.wait_for_everyone()
    close_trackers(accelerator)
    return metrics
