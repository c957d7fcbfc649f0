"""The experiment: its sections, its label budgets, and every stage instance's config, built once when it is
validated.

`finetune`, `baseline` and `distill` run once per budget; their `per_budget: {<budget name>: {...}}` overrides any of
their keys for one budget (SimCLRv2 fine-tunes 60 epochs on 1% and 30 on 10%). Budget names are those of
`stages.data.label_subsets.budget_name` (1pct, 12p5pct, 250labels; 100pct for the full-label baseline). Entries of
`subsets` and `per_budget` for budgets that are not in `budgets` are kept but unused, so `--set budgets=[...]` works on
any file; a key that is no budget name at all is an error. `stage_config` gives a stage instance's config dataclass,
with `data` and `model` filled in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, Strict, model_validator

from pipeline.config.errors import ConfigError, format_error
from pipeline.config.sections import (
    BUDGET_STAGES,
    STAGE_CLASSES,
    STAGES,
    STRICT,
    BaselineSection,
    DistillSection,
    EvaluateSection,
    FinetuneSection,
    LaunchConfig,
    PredictSection,
    PretrainSection,
    ReportConfig,
    SelectSection,
)
from stages.config_schema import InvalidConfig
from stages.data.label_subsets import budget_name, check_budget, parse_budget_name
from stages.data.sources import DataConfig
from stages.models.architecture import EncoderConfig
from stages.models.heads import proj_selector_problem

FULL_LABELS = 1.0  # the budget of the optional 100%-label baseline
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_name(value: Any) -> Any:
    if isinstance(value, str) and not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_' or '-' (it names a directory)")
    return value


Budget = Annotated[
    int | float | Literal["all"], BeforeValidator(check_budget)
]  # check_budget's message says what is accepted
LoosePath = Annotated[Path, Strict(False)]  # YAML gives strings
Instance = tuple[str, str | None]  # (stage, budget name); None: the stage's own section, without per_budget


class ExperimentConfig(BaseModel):
    """A whole experiment. Build it with `load_config`; get a stage instance's config with `stage_config`."""

    model_config = STRICT
    experiment: Annotated[str, BeforeValidator(_check_name)]
    runs_dir: LoosePath = Path("runs")
    data: DataConfig = DataConfig()
    model: EncoderConfig = EncoderConfig()
    budgets: list[Budget] = Field(min_length=1)
    subset_seed: int = 0
    subset_seeds: list[int] = []  # several: every budget's subsets, baseline, fine-tuning and distillation per seed
    subsets: dict[str, LoosePath] = {}
    pretrain: PretrainSection = PretrainSection()  # type: ignore[valid-type]
    finetune: FinetuneSection = FinetuneSection()  # type: ignore[valid-type]
    baseline: BaselineSection = BaselineSection()  # type: ignore[valid-type]
    distill: DistillSection = DistillSection()  # type: ignore[valid-type]
    evaluate: EvaluateSection = EvaluateSection()  # type: ignore[valid-type]
    predict: PredictSection = PredictSection()  # type: ignore[valid-type]
    select: SelectSection = SelectSection()  # type: ignore[valid-type]
    report: ReportConfig = ReportConfig()
    launch: LaunchConfig = LaunchConfig()
    _stage_configs: dict[Instance, Any] = PrivateAttr(default_factory=dict)

    def budget_names(self, stage: str = "finetune") -> dict[str, float | int]:
        """Budget name -> budget for `stage`'s instances; the baseline adds 100% when the report asks for it."""
        names = {budget_name(b): b for b in self.budgets}
        if stage == "baseline" and self.report.full_label_baseline:
            names.setdefault(budget_name(FULL_LABELS), FULL_LABELS)
        return names

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_unique_budgets(self.budgets)
        if self.launch.machine_rank != 0:
            raise ValueError(
                f"launch.machine_rank: must be 0, got {self.launch.machine_rank}: the machine that runs the flow is "
                "rank 0 and gives every other machine its rank (through launch.rank_deployment)"
            )
        if len(set(self.subset_seeds)) != len(self.subset_seeds):
            raise ValueError(f"subset_seeds: {self.subset_seeds} lists a seed more than once; list each seed once")
        for name in self.subsets:
            _check_budget_key(f"subsets.{name}", name)
        for stage in BUDGET_STAGES:
            for budget in getattr(self, stage).per_budget:
                _check_budget_key(f"{stage}.per_budget.{budget}", budget)
        if self.predict.budget is not None and self.predict.budget not in self.budget_names(self.predict.model):
            names = ", ".join(self.budget_names(self.predict.model))
            raise ValueError(f"predict.budget: {self.predict.budget!r} is not one of the budgets ({names})")
        self._stage_configs = {instance: build_stage_config(self, *instance) for instance in self.instances()}
        return self

    def seeds(self) -> list[int]:
        """The subset seeds of the run: `subset_seeds`, else `subset_seed` alone."""
        return list(self.subset_seeds) or [self.subset_seed]

    def prelabel_budget(self) -> str:
        """The budget whose classifier pre-labels the unlabeled images: `predict.budget`, else the last budget."""
        return self.predict.budget or budget_name(self.budgets[-1])

    def instances(self) -> list[Instance]:
        """Every stage's own section, and each budget of the per-budget stages."""
        return [(stage, None) for stage in STAGES] + [
            (stage, budget) for stage in BUDGET_STAGES for budget in self.budget_names(stage)
        ]


def _check_unique_budgets(budgets: list[float | int]) -> None:
    names = [budget_name(b) for b in budgets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"budgets: {budgets} lists the budget {repeated[0]} more than once; list each budget once")


def _check_budget_key(key: str, name: str) -> None:
    """A key of `subsets` or `per_budget` must be a budget name. It need not be one of `budgets`, so that
    `--set budgets=[...]` works on a file with entries for other budgets; a misspelt name is still caught."""
    if parse_budget_name(name) is None:
        raise ValueError(f"{key}: {name!r} is not a budget name; names look like 1pct, 12p5pct, 100pct or 250labels")


def build_stage_config(cfg: ExperimentConfig, stage: str, budget: str | None) -> Any:
    """The config dataclass of one stage instance: its section with the budget's `per_budget` keys applied and the
    experiment's `data` and `model` filled in. The config's own rules run here, and fine-tuning's head layer must
    exist in the head that pretraining builds; a problem names its key (`finetune.per_budget.1pct.proj_selector`)."""
    section = getattr(cfg, stage)
    cls = STAGE_CLASSES[stage]
    values = {name: getattr(section, name) for name in type(section).model_fields if name in cls.__pydantic_fields__}
    override = section.per_budget.get(budget) if budget is not None else None
    if override is not None:
        values |= {name: getattr(override, name) for name in override.model_fields_set}  # a written null too
    values |= {name: getattr(cfg, name) for name in ("data", "model") if name in cls.__pydantic_fields__}
    key = (stage, "per_budget", budget) if override is not None else (stage,)
    try:
        config = cls(**values)
    except InvalidConfig as error:
        lines = [format_error({**p, "loc": (*key, *p["loc"])}, type(cfg)) for p in error.problems]
        raise ValueError("; ".join(lines)) from None
    if stage == "finetune":  # fine-tuning keeps layers of the head that pretraining builds with `model`
        problem = proj_selector_problem(config.proj_selector, cfg.model.head_layers)
        if problem:
            raise ValueError(
                f"{'.'.join(map(str, key))}.proj_selector: {problem}; model.head_layers is {cfg.model.head_layers}"
            )
    return config


def stage_config(cfg: ExperimentConfig, stage: str, budget: str | None = None) -> Any:
    """The config dataclass of `stage` ("pretrain", "finetune", ...), with the experiment's `data` and `model` filled
    in and, for a budget name such as "10pct", that budget's `per_budget` overrides applied. Built once, when `cfg`
    was validated."""
    if stage not in STAGE_CLASSES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if budget is not None and stage not in BUDGET_STAGES:
        raise ConfigError(f"stage {stage!r} runs once, not per budget; call it without a budget")
    if budget is not None and budget not in cfg.budget_names(stage):
        names = ", ".join(cfg.budget_names(stage))
        raise ConfigError(f"{stage}: no budget named {budget!r}; the budgets are {names}")
    return cfg._stage_configs[(stage, budget)]
