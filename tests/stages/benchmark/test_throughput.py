"""The throughput benchmark (stages/benchmark/throughput.py): its pieces, and one tiny run end to end on CPU."""

import json
import math

import pytest
import torch

from stages.benchmark import throughput as bench
from stages.models.architecture import EncoderConfig, build_pretrain_model


def test_largest_batch_takes_the_largest_that_does_not_run_out_of_memory():
    tried = []

    def try_batch(batch: int) -> bench.Measurement:
        tried.append(batch)
        if batch > 48:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return bench.Measurement(f"batch {batch}", 1.0, 1.0)

    found = bench.largest_batch(try_batch, batches=(16, 64, 48, 128))
    assert found.what == "batch 48"
    assert tried == [128, 64, 48]


def test_largest_batch_is_none_when_nothing_fits():
    def try_batch(batch: int) -> bench.Measurement:
        raise torch.OutOfMemoryError("CUDA out of memory")

    assert bench.largest_batch(try_batch, batches=(2, 1)) is None


def test_model_flops_of_resnet50_match_its_known_count():
    """ResNet-50 at 224 px is ~4.1 GMACs forward (8.2 GFLOPs, torchvision's figure 4.09 GMACs); forward + backward is
    about 3x that. Counted on the meta device: no memory, no compute."""
    with torch.device("meta"):
        model = build_pretrain_model(EncoderConfig(depth=50, width=1, sk=False, small_images=False))
    flops = bench.count_flops_per_view(model, 224, torch.device("meta"))
    assert 3 * 8.0e9 < flops < 3 * 8.6e9


def test_checkpointing_does_not_count_recomputation_as_model_flops():
    model = build_pretrain_model(EncoderConfig(depth=18, width=0.125))
    plain = bench.count_flops_per_view(model, 16, torch.device("cpu"))
    model.encoder.activation_checkpointing = True
    assert bench.count_flops_per_view(model, 16, torch.device("cpu")) == plain
    assert model.encoder.activation_checkpointing  # restored


def test_the_mfu_denominator_is_a_measured_matmul_rate():
    settings = bench.Settings(torch.device("cpu"), "fp32", False, False, warmup=1, repeats=1, windows=1, workers=0)
    assert 0 < bench.measured_peak_tflops(settings) < 100  # TFLOP/s: a CPU does a few hundred GFLOP/s at most


def test_table_shows_rates_against_the_model_and_the_baseline():
    case = bench.CPU_CASES[0]
    results = [
        bench.Measurement("model (views already augmented)", 200.0, 10.0, None, 0.25),
        bench.Measurement("whole step: in-memory real images", 100.0, 20.0),
        bench.Measurement("baseline: torchvision", 50.0, 40.0),
    ]
    text = bench.table(case, 8, results)
    assert "| whole step: in-memory real images | 100 | 20.0 | - | - | 0.50x | 2.00x |" in text
    assert "| model (views already augmented) | 200 | 10.0 | - | 25.0% | 1.00x | 4.00x |" in text


def test_unknown_case_is_one_clear_error():
    with pytest.raises(SystemExit, match="unknown case"):
        bench.main(["--cases", "r9000"])


@pytest.mark.slow
def test_a_tiny_cpu_run_measures_every_path(tmp_path, one_thread):
    out = tmp_path / "bench.json"
    tiny = ["--cases", "r18-0.25x-32px", "--batch", "8", "--warmup", "1", "--repeats", "1", "--workers", "1"]
    records = bench.main([*tiny, "--jpeg-count", "16", "--json", str(out)])
    assert records == json.loads(out.read_text())
    measured = [record["what"] for record in records]
    assert measured[0] == "model (views already augmented)"
    assert sum("data path alone" in what for what in measured) == 3
    assert sum("whole step" in what for what in measured) == 3
    assert all(math.isfinite(record["views_per_second"]) and record["views_per_second"] > 0 for record in records)
