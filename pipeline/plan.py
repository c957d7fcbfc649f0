"""The stage instances of one experiment, in dependency order, each with its fingerprint and run directory.

    subsets ──> baseline[b] ─────────────────────────────┐
        └─────> finetune[b] ──> distill[b] ──> predict ──┼──> report
    pretrain ──┴──> evaluate (linear eval, kNN) ─────────┘

`finetune`, `baseline` and `distill` run once per label budget `b`; the baseline also on 100% of the labels when
`report.full_label_baseline` is set. `predict` pre-labels the unlabeled images with one classifier (by default the
distilled student of the last budget); with `select.enabled`, `select` lists the images to label next. A
fingerprint hashes the instance's config, its upstream fingerprints and the code version (pipeline/store.py), so
changing a setting re-runs that stage and everything downstream of it. The content of the labels file
(`data.labels`) is part of every fingerprint but pretraining's: pretraining reads every image and no label, so
adding labels reuses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.code_version import code_version
from pipeline.config import ExperimentConfig, stage_config
from pipeline.manifest import file_sha256, instance_name, replicate, split_instance
from pipeline.store import fingerprint, stage_dir
from stages.data.label_subsets import budget_name
from stages.subsets import SubsetsConfig
from stages.training.checkpoints import RESUMABLE_CHANGES

REPORT = "report"
PREDICT = "predict"
SELECT = "select"
LABEL_FREE = frozenset({"pretrain"})  # stages whose results never depend on the labels file
# Launched on every process when several are configured (evaluate trains the linear evaluation's layer); the others
# are cheap and run in the flow's own process.
TRAINING_STAGES = ("pretrain", "finetune", "distill", "evaluate")


@dataclass(frozen=True)
class Input:
    """One input of a stage: the directory of an upstream instance, or one file inside it."""

    run: str  # the upstream instance, e.g. "subsets"
    file: str | None = None  # e.g. "10pct.json"; None: the whole directory


@dataclass(frozen=True)
class StageRun:
    name: str  # the instance, e.g. "finetune[10pct]"
    module: str  # stages.<module> runs it; "report" is built by reports/
    config: Any  # the stage's config dataclass (a plain dict for the report)
    inputs: dict[str, Input] = field(default_factory=dict)
    fingerprint: str = ""
    out_dir: Path = Path()
    code_version: str = ""  # of the code this instance runs

    @property
    def kind(self) -> str:
        """The stage name without the budget: "finetune[10pct]" -> "finetune"."""
        return split_instance(self.name)[0]

    @property
    def upstream(self) -> list[str]:
        return sorted({i.run for i in self.inputs.values()})


Plan = dict[str, StageRun]  # instance name -> run, in dependency order


def stage_runs(cfg: ExperimentConfig) -> list[StageRun]:
    """Every instance of the experiment with its config and inputs, upstream before downstream."""
    seeds = cfg.seeds()
    tags = seeds if len(seeds) > 1 else [None]  # one seed: today's names (subsets, finetune[10pct]); else per seed
    runs = [_subsets_run(cfg, seed, tag) for seed, tag in zip(seeds, tags, strict=True)]
    runs.append(StageRun("pretrain", "pretrain", stage_config(cfg, "pretrain")))
    for tag in tags:
        runs += _budget_runs(cfg, tag)
    runs.append(StageRun("evaluate", "evaluate", stage_config(cfg, "evaluate"), {"pretrain": Input("pretrain")}))
    if cfg.predict.enabled:
        runs.append(_predict_run(cfg, tags[0]))
    if cfg.select.enabled:
        runs.append(_select_run(cfg, tags[0]))
    everything = {run.name: Input(run.name) for run in runs}
    report = cfg.report.model_dump() | {"dataset": cfg.data.source}  # the report names the data it speaks about
    runs.append(StageRun(REPORT, REPORT, report, everything))
    return runs


def _subsets_run(cfg: ExperimentConfig, seed: int, tag: int | None) -> StageRun:
    subset_names = {**cfg.budget_names("finetune"), **cfg.budget_names("baseline")}
    subsets = SubsetsConfig(
        data=stage_config(cfg, "pretrain").data,
        budgets=tuple(subset_names.values()),
        seed=seed,
        user_lists={name: str(path) for name, path in cfg.subsets.items()},
    )
    return StageRun(instance_name("subsets", replicate(None, tag)), "subsets", subsets)


def _budget_runs(cfg: ExperimentConfig, tag: int | None) -> list[StageRun]:
    """The baseline, fine-tuning and distillation of every budget, on the subsets of one seed."""
    subsets, runs = instance_name("subsets", replicate(None, tag)), []
    for budget in cfg.budget_names("baseline"):
        runs.append(_budget_run(cfg, "baseline", budget, tag, {"subset": Input(subsets, f"{budget}.json")}))
    for budget in cfg.budget_names("finetune"):
        subset = Input(subsets, f"{budget}.json")
        runs.append(_budget_run(cfg, "finetune", budget, tag, {"subset": subset, "pretrain": Input("pretrain")}))
        teacher = {"teacher": Input(instance_name("finetune", replicate(budget, tag)))}
        teacher |= {"subset": subset} if stage_config(cfg, "distill", budget).alpha < 1 else {}
        runs.append(_budget_run(cfg, "distill", budget, tag, teacher))
    return runs


def _predict_run(cfg: ExperimentConfig, tag: int | None) -> StageRun:
    budget = cfg.prelabel_budget()
    inputs = {
        "classifier": Input(instance_name(cfg.predict.model, replicate(budget, tag))),
        "subset": Input(instance_name("subsets", replicate(None, tag)), f"{budget}.json"),  # labeled: no pre-label
    }
    config = stage_config(cfg, "predict")
    if config.image_size is None:  # the classifier's own crop size
        config = dataclasses.replace(config, image_size=stage_config(cfg, cfg.predict.model, budget).image_size)
    return StageRun(PREDICT, PREDICT, config, inputs)


def _select_run(cfg: ExperimentConfig, tag: int | None) -> StageRun:
    """The images to label next, steered by the fine-tuned teacher of the last budget."""
    budget = budget_name(cfg.budgets[-1])
    inputs = {
        "pretrain": Input("pretrain"),
        "teacher": Input(instance_name("finetune", replicate(budget, tag))),
        "subset": Input(instance_name("subsets", replicate(None, tag)), f"{budget}.json"),
    }
    config = stage_config(cfg, "select")
    if config.image_size is None:  # the pretrained encoder's crop size
        config = dataclasses.replace(config, image_size=stage_config(cfg, "pretrain").image_size)
    return StageRun(SELECT, SELECT, config, inputs)


def _budget_run(cfg: ExperimentConfig, kind: str, budget: str, tag: int | None, inputs: dict[str, Input]) -> StageRun:
    module = "finetune" if kind == "baseline" else kind  # the baseline is the finetune stage without --pretrain
    return StageRun(instance_name(kind, replicate(budget, tag)), module, stage_config(cfg, kind, budget), inputs)


def build_plan(cfg: ExperimentConfig, code: str | None = None) -> Plan:
    """Fingerprint every instance (upstream first) and place it under `runs_dir/<experiment>/`. Each instance's
    code version covers the code it runs (pipeline/code_version.py); `code` pins one version for all of them."""
    plan: Plan = {}
    versions: dict[str, str] = {}
    for run in stage_runs(cfg):
        # The file too: two budgets read different subset files of one subsets run.
        upstream = {name: f"{plan[i.run].fingerprint}/{i.file or ''}" for name, i in run.inputs.items()}
        if run.module == "subsets":  # user-supplied lists: their content, not their path, decides the subsets
            upstream = {f"list:{name}": file_sha256(path) for name, path in run.config.user_lists.items()}
        if cfg.data.labels is not None and run.module not in LABEL_FREE:
            upstream["labels-file"] = labels_digest(cfg.data.labels)
        entry = "reports" if run.module == REPORT else f"stages.{run.module}"
        version = code or versions.setdefault(entry, code_version(entry))
        key = fingerprint(fingerprinted_settings(run), upstream, version)
        out_dir = stage_dir(cfg.runs_dir, cfg.experiment, run.name, key)
        plan[run.name] = dataclasses.replace(run, fingerprint=key, out_dir=out_dir, code_version=version)
    return plan


def labels_digest(path: str) -> str:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"data.labels: {path} does not exist; write a CSV with the columns `image` and `label`"
        ) from None


def fingerprinted_settings(run: StageRun) -> Any:
    """What decides the run's results: its result settings; for the label-free stages, without the labels file."""
    settings = result_settings(run.config)
    if run.module in LABEL_FREE and isinstance(settings, dict) and "data" in settings:
        settings["data"] = {key: value for key, value in settings["data"].items() if key != "labels"}
    return settings


def result_settings(config: Any) -> Any:
    """The config without the settings that change only speed, memory, logging or tracking (the ones a checkpoint
    may also be resumed under): changing those reuses finished results instead of rerunning them."""
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    if not isinstance(values, dict):
        return values
    return {key: result_settings(value) for key, value in values.items() if key not in RESUMABLE_CHANGES}


def input_paths(plan: Plan, run: StageRun) -> dict[str, Path]:
    """The stage's `inputs` argument: input name -> upstream directory or file."""
    return {name: plan[i.run].out_dir / i.file if i.file else plan[i.run].out_dir for name, i in run.inputs.items()}


def select(plan: Plan, patterns: Iterable[str]) -> set[str]:
    """Instances named by `patterns`: "finetune" means every budget's, "finetune[10pct]" that one alone."""
    chosen = set()
    for pattern in patterns:
        matches = {name for name, run in plan.items() if pattern in (name, run.kind)}
        if not matches:
            kinds = sorted({run.kind for run in plan.values()} | set(plan))
            raise ValueError(f"no stage {pattern!r} in this experiment; stages: {', '.join(kinds)}")
        chosen |= matches
    return chosen


def downstream(plan: Plan, names: set[str]) -> set[str]:
    """`names` and every instance that reads from them, directly or not."""
    found = set(names)
    for run in plan.values():  # dependency order: an instance's upstream is settled before it is reached
        if any(u in found for u in run.upstream):
            found.add(run.name)
    return found
