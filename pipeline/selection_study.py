"""Does choosing which images to label beat labeling at random? Fine-tuned test accuracy at one small label budget,
over several seeds, for three ways of choosing the labeled images of a fully labeled dataset:

    selected       `simclrv2 select` on a cold start: typical points of k-means clusters of the pretrained
                   embeddings (no label is looked at)
    random         images drawn uniformly at random (what a team without the pipeline would label)
    balanced       the pipeline's class-balanced random subset (it looks at every label: a benchmark's oracle)

    python -m pipeline.selection_study --budget 20 --seeds 5 --json selection.json

One pretraining (the config's, shared by all arms) and one fine-tuning per arm and seed, through the flow, so that
every run is in the run store with its manifest. Prints a Markdown table: mean and standard deviation over seeds,
and each seed's numbers. The test split is the config's (digits: 360 held-out images).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.flow import simclrv2_pipeline
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan
from stages.data.sources import DataConfig, load_train
from stages.select import SELECTION_CSV, SelectConfig
from stages.select import run as select_images

ARMS = ("selected", "random", "balanced")


def fine_tuned_accuracy(config: str | None, overrides: list[str], budget: str) -> float:
    instance = f"finetune[{budget}]"
    simclrv2_pipeline(config, overrides, only=f"subsets,{instance}")
    plan = build_plan(load_config(config, overrides))
    return read_manifest(plan[instance].out_dir)["metrics"]["test_top1"]


def uniform_random_list(data: DataConfig, budget: int, seed: int, path: Path) -> Path:
    ids = load_train(data).ids
    rows = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:budget]
    path.write_text("".join(f"{ids[row]}\n" for row in rows.tolist()))
    return path


def study(config: str | None, base: list[str], budget: int, seeds: int, work: Path) -> dict[str, list[float]]:
    overrides = [*base, f"budgets=[{budget}]", "report.full_label_baseline=false"]
    simclrv2_pipeline(config, overrides, only="pretrain")
    plan = build_plan(load_config(config, overrides))
    pretrain, name = plan["pretrain"], f"{budget}labels"
    data = pretrain.config.data
    results: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for seed in range(seeds):
        chosen = work / f"selected-seed{seed}"
        if not (chosen / SELECTION_CSV).exists():
            select_images(
                SelectConfig(data=data, budget=budget, image_size=pretrain.config.image_size, seed=seed),
                {"pretrain": pretrain.out_dir},
                chosen,
            )
        random_list = uniform_random_list(data, budget, seed, work / f"random-seed{seed}.txt")
        lists = {"selected": chosen / SELECTION_CSV, "random": random_list}
        for arm in ARMS:
            arm_overrides = [*overrides, f"subset_seed={seed}"]
            if arm in lists:
                arm_overrides.append(f"subsets={{{name}: {lists[arm]}}}")
            results[arm].append(fine_tuned_accuracy(config, arm_overrides, name))
            print(f"seed {seed} {arm}: {results[arm][-1]:.4f}", flush=True)
    return results


def markdown(results: dict[str, list[float]], budget: int) -> str:
    seeds = len(next(iter(results.values())))
    lines = [
        f"| {budget} labels, chosen by | mean test top-1 | std over {seeds} seeds | per seed |",
        "|---|---|---|---|",
    ]
    for arm, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{100 * v:.1f}" for v in values)
        lines.append(f"| {arm} | {100 * statistics.mean(values):.1f}% | {100 * spread:.1f} | {per_seed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.selection_study", description=__doc__)
    parser.add_argument("config", nargs="?", help="experiment YAML (default: the quickstart)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--budget", type=int, default=20, help="labels per arm (default: 20)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm (default: 5)")
    parser.add_argument("--work", type=Path, default=Path("runs/selection-study"), help="where the lists go")
    parser.add_argument("--json", type=Path, help="write the accuracies here too")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = study(args.config, args.overrides, args.budget, args.seeds, args.work)
    print(markdown(results, args.budget))
    if args.json:
        args.json.write_text(json.dumps({"budget": args.budget, "test_top1": results}, indent=2))


if __name__ == "__main__":
    main()
