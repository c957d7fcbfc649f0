"""The accuracy plot."""

import io

from matplotlib.image import imread

from reports.plot import accuracy_plot_png

TAB_BLUE = (31, 119, 180)  # the fine-tuned line


def test_plot_is_a_png_with_the_lines_and_the_same_bytes_each_time(report):
    png = accuracy_plot_png(report)
    assert png.startswith(b"\x89PNG") and png == accuracy_plot_png(report)  # no timestamp: same report, same file
    pixels = (imread(io.BytesIO(png))[..., :3] * 255).round().astype(int)
    assert (abs(pixels - TAB_BLUE).max(axis=-1) <= 20).sum() > 100
