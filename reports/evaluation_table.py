"""The evaluation table of a run: one row per trained model, read from the stages' manifests (never from training
code). Written as Markdown and CSV into the report directory; the label-budget report builds on these rows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.manifest import read_manifest, split_instance

METHODS = {"baseline": "supervised baseline", "finetune": "SimCLRv2 fine-tuned", "distill": "SimCLRv2 distilled"}
COLUMNS = ["method", "budget", "num_labels", "test_top1", "test_top5", "stage_dir"]


def read_metrics(stage_dir: Path) -> dict:
    return read_manifest(stage_dir)["metrics"]


def classifier_rows(stage_dirs: Mapping[str, Path]) -> pd.DataFrame:
    """One row per baseline / fine-tuned / distilled model: its label budget, labels used and test accuracy."""
    labels = read_metrics(stage_dirs["subsets"])["num_labels"] if "subsets" in stage_dirs else {}
    rows = []
    for name, stage_dir in stage_dirs.items():
        kind, budget = split_instance(name)
        if kind not in METHODS:
            continue
        metrics = read_metrics(stage_dir)
        rows.append(
            {
                "method": METHODS[kind],
                "budget": budget,
                "num_labels": labels.get(budget, metrics.get("num_labels")),
                "test_top1": metrics["test_top1"],
                "test_top5": metrics["test_top5"],
                "stage_dir": str(stage_dir),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["num_labels", "method"], kind="stable", ignore_index=True)


def encoder_metrics(stage_dirs: Mapping[str, Path]) -> dict:
    """Linear-probe and kNN accuracy of the pretrained encoder (the evaluate stage), if it ran."""
    if "evaluate" not in stage_dirs:
        return {}
    metrics = read_metrics(stage_dirs["evaluate"])
    return {key: metrics[key] for key in ("linear_probe_top1", "knn_top1") if key in metrics}


def write_evaluation_table(stage_dirs: Mapping[str, Path], out_dir: Path) -> dict:
    """Write `evaluation.csv` and `evaluation.md` into `out_dir`; return the table as metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, encoder = classifier_rows(stage_dirs), encoder_metrics(stage_dirs)
    table.to_csv(out_dir / "evaluation.csv", index=False)
    shown = table.drop(columns="stage_dir")
    lines = ["# Evaluation", "", shown.to_markdown(index=False, floatfmt=".4f"), ""]
    if encoder:
        lines += ["Pretrained encoder: " + ", ".join(f"{key} {value:.4f}" for key, value in encoder.items()), ""]
    (out_dir / "evaluation.md").write_text("\n".join(lines))
    return {"rows": table.drop(columns="stage_dir").to_dict("records"), "encoder": encoder}
