"""Stage `subsets`: which training rows get labels under each label budget, written as checksummed JSON files.

    python -m stages.subsets --out runs/subsets --budgets 0.01 0.1

Only the labels are read: no image is decoded (but under `data.skip_bad_images`, see `labels_only`). Subsets are
class-balanced, seeded and nested (stages/data/label_subsets.py); a user's own list for a budget (one id or
file name per line) replaces that budget's selection. Writes `<budget name>.json` per budget to `--out`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Literal

from pydantic import StrictFloat, StrictInt

from stages.config_schema import config_dataclass
from stages.data.label_subsets import SubsetError, budget_name, load_subset, save_subset, select_subsets
from stages.data.sources import DataConfig, load_splits
from stages.training.cli import parse_stage_args, run_and_print


@config_dataclass
class SubsetsConfig:
    data: DataConfig = field(default_factory=DataConfig)
    budgets: tuple[StrictInt | StrictFloat | Literal["all"], ...] = (0.01, 0.1)
    """label budgets: fractions in (0, 1] of the labeled training images, label counts >= 1, or all"""
    seed: StrictInt = 0
    """seed of the class-balanced selection"""
    user_lists: dict[str, str] = field(default_factory=dict)
    """budget name -> a user's list of ids or file names, one per line, that replaces that budget's selection"""


def run(config: SubsetsConfig, inputs: dict[str, Path] | None, out_dir: Path) -> dict:
    """Write `<budget name>.json` for every budget into `out_dir`: selected here, or read from the user's list for
    that budget (then checked against the data and saved in our checksummed form). Returns name -> label count."""
    train, test = load_splits(labels_only(config.data))
    selected = select_subsets(train.labels, list(config.budgets), config.seed)
    unknown = sorted(set(config.user_lists) - set(selected))
    if unknown:
        raise SubsetError(f"user_lists names {unknown}, which are not budgets; the budgets are {sorted(selected)}")
    metrics = {}
    for budget in config.budgets:
        name = budget_name(budget)
        rows = load_subset(config.user_lists[name], train.ids) if name in config.user_lists else selected[name]
        record = save_subset(Path(out_dir) / f"{name}.json", rows, train.labels, train.ids, budget, config.seed)
        metrics[name] = record["num_labels"]
    return {
        "num_labels": metrics,
        "num_train": len(train.labels),
        "num_labeled": int(train.labeled.sum()),
        "num_classes": train.num_classes,
        "num_test": len(test),
        "test_labels_held_out": int(train.held_out.sum()) if train.held_out is not None else 0,
        "validation_slice": config.data.validation_fraction is not None,  # evaluated on training images, not test
    }


def labels_only(data: DataConfig) -> DataConfig:
    """The data read without decoding an image: a subset needs the labels alone. With `skip_bad_images` the stages
    that decode into memory drop unreadable rows, so the subset is then drawn from the rows those stages keep."""
    return data if data.skip_bad_images else dataclasses.replace(data, in_memory=False)


def main(argv: list[str] | None = None) -> None:
    config, _, out = parse_stage_args("stages.subsets", SubsetsConfig, __doc__, argv)
    run_and_print("stages.subsets", lambda: run(config, None, out))


if __name__ == "__main__":
    main()
