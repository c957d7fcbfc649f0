"""The label-efficiency study: what the pipeline's models reach at a few labels per class, over several subset seeds,
against plain supervised training, from one config (the quickstart's by default) with nothing tuned on the test set.

    python -m pipeline.study --labels-per-class 2 4 10 --fraction 0.1 --seeds 0 1 2 --json study.json

For each seed, one pipeline run (the budgets below, `subset_seed` = the seed) trains the supervised baseline, the
fine-tuned model and the distilled student on every budget; two more fine-tuning runs give the other classifiers of
`finetune.classifier`: a logistic regression on the frozen features ("linear"), and the choice cross-validation
makes on the budget's own labels ("auto"). Pretraining does not depend on the seed or the labels, so every run reuses
one pretraining. Budgets: `--labels-per-class` times the number of classes, and `--fraction` of the labeled images.

`--models` trains only some of them (the pipeline runs just the stages they need). With
`--set data.validation_fraction=0.25` every figure is measured on a validation slice of the training images instead
of the test split: the way to choose settings (docs/results.md#settings-chosen-on-a-validation-slice).

Prints a Markdown table: per budget and model, the mean top-1 over seeds, its standard deviation, and the mean 95%
Wilson interval of one run (test-set noise); then the distilled student against its teacher, and the pretraining
minutes. The JSON has every run's numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import load_config
from pipeline.flow import simclrv2_pipeline
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan
from reports.statistics import accuracy_interval
from stages.data.label_subsets import budget_name
from stages.data.sources import DataConfig, source_rows

PIPELINE_STAGES = {"baseline": ["baseline"], "finetune": ["finetune"], "distill": ["finetune", "distill"]}
CLASSIFIER_ARMS = {"linear": "frozen features + logistic regression", "auto": "chosen by cross-validation"}
MODELS = ("baseline", "finetune", "linear", "auto", "distill")
MODEL_NAMES = {
    "baseline": "supervised baseline",
    "finetune": "SimCLRv2 fine-tuned",
    "linear": "frozen features + logistic regression",
    "auto": "classifier chosen by cross-validation",
    "distill": "SimCLRv2 distilled",
}


def study_budgets(data: DataConfig, labels_per_class: list[int], fractions: list[float]) -> list[int | float]:
    num_classes = len(source_rows(data).class_keys)
    return [count * num_classes for count in labels_per_class] + list(fractions)


def metrics_of(plan: dict, instance: str) -> dict:
    return read_manifest(plan[instance].out_dir)["metrics"]


def one_seed(config: str | None, overrides: list[str], budgets: list[str], models: Sequence[str]) -> dict:
    """Each model's test top-1 (and test size) per budget for one subset seed; the pretraining's wall seconds."""
    fine_tuned = [*overrides, "finetune.classifier=fine-tune"]
    kinds = [kind for kind in PIPELINE_STAGES if kind in models]
    stages = ["subsets", "pretrain", *dict.fromkeys(stage for kind in kinds for stage in PIPELINE_STAGES[kind])]
    simclrv2_pipeline(config, fine_tuned, only=stages)
    plan = build_plan(load_config(config, fine_tuned))
    runs: dict = {"pretrain_seconds": read_manifest(plan["pretrain"].out_dir)["wall_seconds"], "budgets": {}}
    for budget in budgets:
        runs["budgets"][budget] = {kind: metrics_of(plan, f"{kind}[{budget}]") for kind in kinds}
    for arm in [model for model in models if model in CLASSIFIER_ARMS]:
        arm_overrides = [*overrides, f"finetune.classifier={arm}"]
        simclrv2_pipeline(config, arm_overrides, only="finetune")
        arm_plan = build_plan(load_config(config, arm_overrides))
        for budget in budgets:
            runs["budgets"][budget][arm] = metrics_of(arm_plan, f"finetune[{budget}]")
    return runs


def run_study(
    config: str | None, base: list[str], budgets: list[int | float], seeds: list[int], models: Sequence[str] = MODELS
) -> dict:
    names = [budget_name(budget) for budget in budgets]
    overrides = [*base, f"budgets={json.dumps(budgets)}", "report.full_label_baseline=false"]
    results = {"budgets": names, "seeds": seeds, "models": list(models), "overrides": base, "runs": {}}
    for seed in seeds:
        results["runs"][str(seed)] = one_seed(config, [*overrides, f"subset_seed={seed}"], names, models)
    return results


def summary_rows(results: dict) -> list[dict]:
    """Per budget and model: labels, mean and sd of top-1 over seeds, and the mean Wilson interval of one run."""
    rows = []
    runs = list(results["runs"].values())
    for budget in results["budgets"]:
        for model in results.get("models", MODELS):
            measured = [run["budgets"][budget][model] for run in runs]
            top1 = [m["test_top1"] for m in measured]
            low, high = zip(*(accuracy_interval(m["test_top1"], m["num_test"]) for m in measured), strict=True)
            rows.append(
                {
                    "budget": budget,
                    "labels": measured[0].get("num_labels"),
                    "model": model,
                    "mean_top1": statistics.mean(top1),
                    "sd_top1": statistics.stdev(top1) if len(top1) > 1 else 0.0,
                    "wilson_low": statistics.mean(low),
                    "wilson_high": statistics.mean(high),
                    "per_seed": top1,
                }
            )
    return rows


def markdown(results: dict) -> str:
    rows = summary_rows(results)
    labels = {row["budget"]: row["labels"] for row in rows if row["labels"] is not None}
    seeds = len(results["seeds"])
    lines = [
        f"| budget | labels | model | mean top-1 ({seeds} seeds) | sd | one run's 95% interval (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['budget']} | {labels.get(row['budget'], '')} | {MODEL_NAMES[row['model']]} | "
            f"{100 * row['mean_top1']:.1f}% | {100 * row['sd_top1']:.1f} | "
            f"[{100 * row['wilson_low']:.1f}, {100 * row['wilson_high']:.1f}] |"
        )
    if "distill" in results.get("models", MODELS):
        lines += student_against_teacher(results)
    minutes = [run["pretrain_seconds"] / 60 for run in results["runs"].values()]
    lines += ["", f"Pretraining: {minutes[0]:.1f} minutes (one run, shared by every seed and model)."]
    return "\n".join(lines)


def student_against_teacher(results: dict) -> list[str]:
    lines = ["", "| budget | student − teacher, per seed (points) |", "|---|---|"]
    for budget in results["budgets"]:
        gaps = [
            100
            * (run["budgets"][budget]["distill"]["test_top1"] - run["budgets"][budget]["distill"]["teacher_test_top1"])
            for run in results["runs"].values()
        ]
        lines.append(f"| {budget} | " + ", ".join(f"{gap:+.1f}" for gap in gaps) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", help="experiment YAML (default: the quickstart)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--labels-per-class", type=int, nargs="*", default=[2, 4, 10], metavar="N")
    parser.add_argument("--fraction", type=float, nargs="*", default=[0.1], metavar="F")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="the models to train (default: all)"
    )
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    args = parser.parse_args(argv)
    data = load_config(args.config, args.overrides).data
    budgets = study_budgets(data, args.labels_per_class, args.fraction)
    results = run_study(args.config, args.overrides, budgets, args.seeds, args.models)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
