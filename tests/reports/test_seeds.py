"""Several subset seeds in one report (reports/seeds.py): each seed compared with its own baseline, a saving only when
every seed supports it, and the mean and standard deviation over seeds in a table and the plot."""

import numpy as np
import pandas as pd

from reports import ReportSettings, build_report
from reports.comparisons import BETTER
from reports.seeds import NOT_EVERY_SEED, plain_budget, seed_summary
from tests.reports.report_fixtures import CPU, ONE_GPU, make_run, window

NUM = 500
SEEDED = {  # name: (top-1, top-5, labels, devices, wall seconds); the fine-tuned model wins clearly in seed 0 only
    "baseline[20labels-s0]": (0.40, 0.8, 20, CPU, 100.0),
    "baseline[20labels-s1]": (0.42, 0.8, 20, CPU, 100.0),
    "finetune[20labels-s0]": (0.60, 0.9, 20, ONE_GPU, 90.0),
    "finetune[20labels-s1]": (0.43, 0.9, 20, ONE_GPU, 90.0),
    "baseline[200labels-s0]": (0.70, 0.9, 200, CPU, 100.0),
    "baseline[200labels-s1]": (0.72, 0.9, 200, CPU, 100.0),
}


def test_a_saving_needs_every_seed_and_the_means_are_reported(tmp_path):
    predictions = {name: window(NUM, round(top1 * NUM)) for name, (top1, *_rest) in SEEDED.items()}
    dirs = make_run(tmp_path / "run", SEEDED, predictions=predictions, num_test=NUM)
    settings = ReportSettings(cost_per_label=0.1, currency="USD", device_hour_price=1.0, dataset="digits")
    metrics = build_report(dirs, tmp_path / "report", settings)
    rows = {row["stage"]: row for row in metrics["rows"]}
    assert rows["finetune[20labels-s1]"]["comparison"] != BETTER  # 0.43 against 0.42: not significant
    assert rows["finetune[20labels-s0]"]["comparison"] == NOT_EVERY_SEED  # significant alone, but not in every seed
    assert rows["finetune[20labels-s0]"]["labels_saved"] is None
    assert "no label saving" in metrics["headline"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Across subset seeds" in markdown
    assert "| 20 labels | 20 | 2 | 41.0% ± 1.4 | 51.5% ± 12.0 |" in markdown
    assert "20 labels (seed 1)" in markdown


def test_the_summary_groups_seeds_by_budget():
    models = pd.DataFrame(
        {
            "kind": ["baseline", "baseline", "finetune"],
            "budget": ["10pct-s0", "10pct-s1", "10pct-s0"],
            "num_labels": [144, 144, 144],
            "test_top1": [0.8, 0.9, 0.85],
        }
    )
    summary = seed_summary(models).set_index("kind")
    assert summary.loc["baseline", "seeds"] == 2 and np.isclose(summary.loc["baseline", "mean_top1"], 0.85)
    assert summary.loc["finetune", "sd_top1"] == 0.0 and plain_budget("10pct-s1") == "10pct"
    assert seed_summary(models.assign(budget="10pct")) is None  # one seed: nothing to summarise
