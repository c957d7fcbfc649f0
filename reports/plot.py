"""The plot: top-1 accuracy against number of labels (log axis), one line per method with the 95% interval of each
point as an error bar (with several subset seeds: their mean, and one standard deviation as the bar), the linear
probe as a dashed line."""

from __future__ import annotations

import io

import pandas as pd

from reports.inputs import KINDS
from reports.label_budget import LabelBudgetReport
from reports.seeds import seed_summary
from reports.tables import METHOD_NAMES, count

STYLES = {"baseline": ("tab:gray", "s"), "finetune": ("tab:blue", "o"), "distill": ("tab:orange", "^")}
# Methods at the same budget sit side by side, a little apart on the log axis, so their error bars do not overlap.
OFFSETS = {"baseline": 0.96, "finetune": 1.0, "distill": 1.04}


def error_bars(models: pd.DataFrame) -> list[list[float]]:
    """[below, above]: how far each point's 95% interval reaches under and over its top-1 (0 without an interval)."""
    top1 = models["test_top1"].astype(float)
    low = models["test_top1_low"].astype(float).fillna(top1)
    high = models["test_top1_high"].astype(float).fillna(top1)
    return [(top1 - low).clip(lower=0).tolist(), (high - top1).clip(lower=0).tolist()]


def accuracy_plot_png(report: LabelBudgetReport) -> bytes:
    """The plot as PNG bytes (written to a file and embedded in the HTML page)."""
    # Imported here: `import reports` (the flow imports it) stays cheap, and Agg needs no display.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    summary = seed_summary(report.models)  # several subset seeds: their mean, bars one standard deviation
    for kind in KINDS:
        if summary is not None:
            models = summary[summary["kind"] == kind].sort_values("num_labels", kind="stable")
            y, bars = models["mean_top1"].tolist(), models["sd_top1"].tolist()
        else:
            models = report.models[report.models["kind"] == kind]
            y, bars = models["test_top1"].tolist(), error_bars(models)
        if len(models):
            color, marker = STYLES[kind]
            x = [labels * OFFSETS[kind] for labels in models["num_labels"].tolist()]
            axes.errorbar(x, y, yerr=bars, color=color, marker=marker, capsize=3, label=METHOD_NAMES[kind])
    probe = report.encoder.linear_eval_top1 if report.encoder else None
    if probe is not None:
        axes.axhline(probe, color="tab:green", linestyle="--", label="Pretrained encoder, linear evaluation")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda labels, _: count(round(labels))))  # 2,000 rather than 10^3
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks([labels for _, labels in report.budgets])
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("Number of labeled images (log scale)")
    bars = "one standard deviation over the subset seeds" if summary is not None else "95% interval"
    axes.set_ylabel(f"Top-1 test accuracy (bars: {bars})")
    axes.set_title("Accuracy against number of labels")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same plot, same bytes
    plt.close(figure)
    return buffer.getvalue()
