"""The sections of the experiment YAML. A stage's section is generated from its config (`stages.*.XxxConfig`): the
same fields, types, defaults and bounds, minus `data` and `model`, which are sections of their own (the stages'
`DataConfig` and `EncoderConfig` themselves). `report` and `launch` are written here: no stage reads them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
    model_validator,
)

from stages.distill import DistillConfig
from stages.evaluate import EvaluateConfig
from stages.finetune import FinetuneConfig
from stages.predict import PredictConfig
from stages.pretrain import PretrainConfig
from stages.select import SelectConfig

STAGE_CLASSES: dict[str, type] = {
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "baseline": FinetuneConfig,  # the supervised baseline is the finetune stage without pretrained weights
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "predict": PredictConfig,
    "select": SelectConfig,
}
STAGES = tuple(STAGE_CLASSES)
BUDGET_STAGES = ("finetune", "baseline", "distill")  # one instance per label budget
SHARED_SECTIONS = frozenset({"data", "model"})  # the experiment's own sections, filled into every stage's config
NO_HEAD = frozenset({"proj_selector", "classifier", "cv_folds"})  # the baseline: no pretrained head or features
RUN_IMAGES = frozenset({"images"})  # the flow's predict stage pre-labels the run's own unlabeled images
PREDICT_MODEL = {  # whether and with which classifier the flow pre-labels: keys of the section no stage reads
    "enabled": (bool, Field(True, description="pre-label the unlabeled training images at the end of every run")),
    "model": (
        Literal["distill", "finetune", "baseline"],
        Field("distill", description="the stage whose classifier pre-labels the unlabeled images"),
    ),
    "budget": (
        str | None,
        Field(None, description="its label budget, e.g. 10pct; None: the last one in `budgets`"),
    ),
}
SELECT_SWITCH = {  # the select stage runs in the flow only when asked; `simclrv2 select` runs it any time
    "enabled": (bool, Field(False, description="list the images to label next at the end of every run")),
}

RANK_DEPLOYMENT = "simclrv2-stage-rank/ranks"  # prefect.yaml's deployment of pipeline/machine_rank.py:stage_rank
STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors; no silent coercion ("32" is not an int)."""

    model_config = STRICT


class Override(BaseModel):
    """A `per_budget` entry: any subset of a section's keys (checked again with the rest when the budget's config is
    built). It dumps only the keys written, so a dump validates again and merging never resets a key to None."""

    model_config = STRICT

    @model_serializer(mode="wrap")
    def _written_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


def stage_section(stage: str, exclude: frozenset[str] = frozenset(), extra: dict | None = None) -> type[Section]:
    """The section of `stage`: its config's fields minus the shared sections and `exclude`, plus the flow's own
    `extra` fields and, for the stages that run once per budget, `per_budget` (key: budget name)."""
    config_fields = STAGE_CLASSES[stage].__pydantic_fields__
    fields = {
        name: (info.annotation, info) for name, info in config_fields.items() if name not in SHARED_SECTIONS | exclude
    }
    fields |= extra or {}
    section = create_model(f"{stage.capitalize()}Section", __base__=Section, **fields)
    if stage not in BUDGET_STAGES:
        return section
    per_budget = (dict[str, override_model(section)], {})  # type: ignore[valid-type]
    return create_model(f"{stage.capitalize()}BudgetSection", __base__=section, per_budget=per_budget)


def override_model(section: type[BaseModel]) -> type[BaseModel]:
    """Every key of `section` optional (unset keys are left out when merging), same types and bounds."""
    fields = {
        key: (Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation, None)
        for key, field in section.model_fields.items()
    }
    return create_model(section.__name__.replace("Section", "Override"), __base__=Override, **fields)


PretrainSection = stage_section("pretrain")
FinetuneSection = stage_section("finetune")
BaselineSection = stage_section("baseline", NO_HEAD)
DistillSection = stage_section("distill")
EvaluateSection = stage_section("evaluate")
PredictSection = stage_section("predict", RUN_IMAGES, PREDICT_MODEL)
SelectSection = stage_section("select", frozenset(), SELECT_SWITCH)


class ReportConfig(BaseModel):
    """The assumptions of the label-budget report (printed in it, in plain words)."""

    model_config = STRICT
    cost_per_label: float = Field(0.10, ge=0)  # price of one label, in `currency`
    currency: str = Field("USD", min_length=1, max_length=12)
    device_hour_price: float = Field(1.0, ge=0)  # price of one device (GPU, or CPU machine) for one hour
    full_label_baseline: bool = False  # also train the supervised baseline on 100% of the labels
    # pre-labels: the accuracy a confidence threshold must reach on the test set (its 95% Wilson lower bound)
    prelabel_target_accuracy: float = Field(0.95, gt=0, le=1)


class LaunchConfig(BaseModel):
    """How stages run: in-process for one process, else under `accelerate launch` with these flags. With several
    machines the flow's machine is rank 0 and starts ranks 1.. as flow runs of `rank_deployment` (pipeline/machines.py).
    """

    model_config = STRICT
    num_processes: int = Field(1, ge=1)  # total over all machines, as `accelerate launch --num_processes`
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0)  # the flow's machine is 0; it gives each other machine its rank
    main_process_ip: str | None = None  # rank 0's address (the machine that runs the flow); required with several
    # "<flow>/<deployment>" whose workers (one per other machine, --limit 1) run ranks 1..; required with several
    rank_deployment: str | None = None
    rank_start_timeout: float = Field(600.0, gt=0)  # seconds ranks 1.. may wait for a free worker; then the stage fails
    main_process_port: int = Field(29500, ge=1, le=65535)
    rdzv_backend: Literal["static", "c10d"] = "static"
    same_network: bool = True
    gpu_ids: str | None = None  # e.g. "0,1,2,3"; None: every visible GPU
    use_cpu: bool = False  # several CPU processes over gloo (ACCELERATE_USE_CPU=1 with --multi_gpu)
    extra_args: list[str] = []  # passed to `accelerate launch` as they are, e.g. ["--config_file", "fsdp.yaml"]
    # seconds a stage may run; then its processes are stopped and it fails, not retried (a rerun resumes it)
    stage_timeout: float = Field(7 * 24 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank must be < num_machines ({self.num_machines}), got {self.machine_rank}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("main_process_ip must be set (the address of rank 0) when num_machines > 1")
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"num_processes must be a multiple of num_machines ({self.num_machines}): it counts the processes of "
                f"all machines; got {self.num_processes}"
            )
        if self.num_machines > 1 and not self.rank_deployment:
            raise ValueError(
                "rank_deployment must be set when num_machines > 1: the Prefect deployment whose workers start the "
                f"other machines' ranks, e.g. {RANK_DEPLOYMENT!r} from prefect.yaml (README: Several machines)"
            )
        if self.rank_deployment is not None and not re.fullmatch(r"[^/]+/[^/]+", self.rank_deployment):
            raise ValueError(
                f"rank_deployment must be '<flow name>/<deployment name>', e.g. {RANK_DEPLOYMENT!r}; "
                f"got {self.rank_deployment!r}"
            )
        return self
