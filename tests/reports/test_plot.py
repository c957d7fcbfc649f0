"""The accuracy plot."""

import io
from dataclasses import replace

import pytest
from matplotlib.image import imread

from reports.plot import accuracy_plot_png, error_bars

TAB_BLUE = (31, 119, 180)  # the fine-tuned line


def test_plot_is_a_png_with_the_lines_and_the_same_bytes_each_time(report):
    png = accuracy_plot_png(report)
    assert png.startswith(b"\x89PNG") and png == accuracy_plot_png(report)  # no timestamp: same report, same file
    pixels = (imread(io.BytesIO(png))[..., :3] * 255).round().astype(int)
    assert (abs(pixels - TAB_BLUE).max(axis=-1) <= 20).sum() > 100


def test_error_bars_are_the_95_percent_intervals(report):
    finetune = report.models[report.models["kind"] == "finetune"]
    below, above = error_bars(finetune)
    low, high = finetune["test_top1_low"].tolist(), finetune["test_top1_high"].tolist()
    assert below == pytest.approx([0.5 - low[0], 0.85 - low[1]])
    assert above == pytest.approx([high[0] - 0.5, high[1] - 0.85])
    assert all(value > 0.02 for value in below + above)  # 500 test images: a few points either way


def test_the_error_bars_are_drawn(report):
    without = report.models.assign(test_top1_low=None, test_top1_high=None)
    assert error_bars(without[without["kind"] == "baseline"]) == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert accuracy_plot_png(replace(report, models=without)) != accuracy_plot_png(report)
