"""The experiment config: one YAML file, validated by pydantic, that drives every stage of the pipeline.

The per-stage sections are generated from the stage config dataclasses (`stages.*.XxxConfig`), so every stage
default lives in one place: the dataclass. Layout (see configs/quickstart.yaml for a commented example):

    experiment: name              # names the run directory runs_dir/<experiment>/
    runs_dir: runs                # relative paths here and below are taken from the current directory
    data: {...}                   # stages.data.sources.DataConfig, shared by every stage
    model: {...}                  # stages.pretrain.EncoderConfig: the SimCLRv2 encoder, also the baseline's
    budgets: [0.01, 0.1]          # label budgets: fractions in (0, 1] or label counts >= 1
    subset_seed: 0
    subsets: {1pct: list.txt}     # optional: budget name -> user-supplied id / file-name list
    pretrain / finetune / baseline / distill / evaluate: {...}   # the stage dataclass fields minus data (and model)
    report: {...}                 # label-budget report: prices and the 100%-label baseline
    launch: {...}                 # `accelerate launch` settings for several processes or machines

`finetune`, `baseline` and `distill` run once per budget; their `per_budget: {<budget name>: {...}}` overrides any
of their keys for one budget (SimCLRv2 fine-tunes 60 epochs on 1% and 30 on 10%). Budget names are those of
`stages.subsets.budget_name` (1pct, 12p5pct, 250labels; 100pct for the full-label baseline). Entries of `subsets`
and `per_budget` for budgets that are not in `budgets` are kept but unused, so `--set budgets=[...]` works on any
file; a key that is no budget name at all is an error. `stage_config` turns a section into the stage's dataclass
with `data` and `model` filled in.

Every problem is one `ConfigError` line naming the dotted key (`pretrain.batch_size: ...`), never a traceback.
"""

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from stages.data.label_subsets import budget_name, check_budget
from stages.data.sources import DataConfig
from stages.distill import DistillConfig
from stages.evaluate import EvaluateConfig
from stages.finetune import FinetuneConfig
from stages.models.resnet import BASIC_BLOCK_DEPTHS, STAGE_BLOCKS
from stages.pretrain import EncoderConfig, PretrainConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"
STAGE_CLASSES: dict[str, type] = {
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "baseline": FinetuneConfig,  # the supervised baseline is the finetune stage without pretrained weights
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
}
STAGES = tuple(STAGE_CLASSES)
BUDGET_STAGES = ("finetune", "baseline", "distill")  # one instance per label budget
FULL_LABELS = 1.0  # the budget of the optional 100%-label baseline

# Bounds that the stage dataclasses do not check themselves, by field name (the same name means the same thing in
# every stage). A field the dataclass already checks in __post_init__ is checked twice, harmlessly.
BOUNDS: dict[str, dict[str, float]] = {
    "batch_size": {"ge": 1},
    "eval_batch_size": {"ge": 1},
    "image_size": {"ge": 1},
    "checkpoint_every": {"ge": 1},
    "log_every": {"ge": 1},
    "knn_k": {"ge": 1},
    "probe_max_iter": {"ge": 1},
    "head_layers": {"ge": 1},
    "proj_selector": {"ge": 0},
    "epochs": {"gt": 0},
    "base_lr": {"gt": 0},
    "width": {"gt": 0},
    "temperature": {"gt": 0},
    "knn_temperature": {"gt": 0},
    "probe_c": {"gt": 0},
    "weight_decay": {"ge": 0},
    "warmup_epochs": {"ge": 0},
    "color_strength": {"ge": 0},
    "momentum": {"ge": 0, "lt": 1},
    "alpha": {"ge": 0, "le": 1},
}


class ConfigError(ValueError):
    """A bad config: one line naming the key and what is allowed."""


# --- sections generated from the stage dataclasses -----------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(kind: Any) -> type | None:
    """The dataclass that `kind` names, alone or as `X | None`; else None."""
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    found = [k for k in options if dataclasses.is_dataclass(k)]
    return found[0] if found else None


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (types.UnionType, typing.Union)


def build_dataclass(cls: type, values: Mapping[str, Any]) -> Any:
    """`cls(**values)` with nested mappings turned into the nested dataclasses; unknown keys are dropped."""
    hints = _hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, nested = values[field.name], _dataclass_in(hints[field.name])
        kwargs[field.name] = build_dataclass(nested, value) if nested and isinstance(value, Mapping) else value
    return cls(**kwargs)


STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors; no silent coercion ("32" is not an int)."""

    model_config = STRICT
    dataclass_source: ClassVar[type | None] = None  # the dataclass whose __post_init__ checks run on the values
    dataclass_checks: ClassVar[tuple[Callable[[dict], None], ...]] = ()

    @model_validator(mode="after")
    def _dataclass_checks(self) -> Self:
        values = self.model_dump()
        for check in self.dataclass_checks:
            check(values)
        if self.dataclass_source is not None:
            build_dataclass(self.dataclass_source, values)  # runs its __post_init__: the stage owns its rules
        return self


class Override(BaseModel):
    """A `per_budget` entry: any subset of a section's keys (validated again when merged, in ExperimentConfig).
    It dumps only the keys written, so a dump validates again and merging never resets a key to None."""

    model_config = STRICT

    @model_serializer(mode="wrap")
    def _written_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


def _check_encoder(values: dict) -> None:
    depths = ", ".join(map(str, sorted(STAGE_BLOCKS)))
    if values["depth"] not in STAGE_BLOCKS:
        raise ValueError(f"depth must be one of {depths}, got {values['depth']!r}")
    if values["sk"] and values["depth"] in BASIC_BLOCK_DEPTHS:
        raise ValueError(
            f"sk must be false for depth {values['depth']} (basic blocks); Selective Kernels need depth 50, 101, "
            "152 or 200"
        )


EXTRA_CHECKS: dict[type, tuple[Callable[[dict], None], ...]] = {EncoderConfig: (_check_encoder,)}


def _section_type(name: str, kind: Any) -> Any:
    """A dataclass field's type as a pydantic type: nested dataclasses become sections, bounds are attached."""
    nested = _dataclass_in(kind)
    if nested is not None:
        model = section_model(nested)
        return model | None if _is_union(kind) else model
    if kind in (int, float) and name in BOUNDS:
        return Annotated[kind, Field(**BOUNDS[name])]
    return kind


def _section_default(field: dataclasses.Field) -> Any:
    value = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return section_model(type(value))(**dataclasses.asdict(value)) if dataclasses.is_dataclass(value) else value


@functools.cache
def section_model(cls: type, exclude: frozenset[str] = frozenset(), name: str | None = None) -> type[Section]:
    """A strict pydantic model with the fields, types and defaults of dataclass `cls`, minus `exclude`."""
    hints = _hints(cls)
    fields = {
        f.name: (_section_type(f.name, hints[f.name]), _section_default(f))
        for f in dataclasses.fields(cls)
        if f.name not in exclude
    }
    model = create_model(name or cls.__name__ + "Section", __base__=Section, **fields)
    model.dataclass_source = cls
    model.dataclass_checks = EXTRA_CHECKS.get(cls, ())
    return model


def override_model(section: type[BaseModel]) -> type[BaseModel]:
    """Every key of `section` optional (unset keys are left out when merging), same types and bounds."""
    fields = {
        key: (Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation, None)
        for key, field in section.model_fields.items()
    }
    return create_model(section.__name__.replace("Section", "Override"), __base__=Override, **fields)


def stage_section(stage: str, exclude: frozenset[str]) -> type[BaseModel]:
    """The section of a stage: its dataclass fields minus `exclude`, plus `per_budget` for per-budget stages."""
    base = section_model(STAGE_CLASSES[stage], exclude, stage.capitalize() + "Section")
    if stage not in BUDGET_STAGES:
        return base
    per_budget = (dict[str, override_model(base)], {})  # type: ignore[valid-type]
    return create_model(f"{stage.capitalize()}BudgetSection", __base__=base, per_budget=per_budget)


DataSection = section_model(DataConfig)
EncoderSection = section_model(EncoderConfig)
PretrainSection = stage_section("pretrain", frozenset({"data", "model"}))
FinetuneSection = stage_section("finetune", frozenset({"data", "model"}))
BaselineSection = stage_section("baseline", frozenset({"data", "model", "proj_selector"}))  # no head to select
DistillSection = stage_section("distill", frozenset({"data"}))
EvaluateSection = stage_section("evaluate", frozenset({"data"}))


# --- hand-written sections ------------------------------------------------------------------------------------------


class ReportConfig(BaseModel):
    """The assumptions of the label-budget report (printed in it, in plain words)."""

    model_config = STRICT
    cost_per_label: float = Field(0.10, ge=0)  # price of one label, in `currency`
    currency: str = Field("USD", min_length=1, max_length=12)
    device_hour_price: float = Field(1.0, ge=0)  # price of one device (GPU, or CPU machine) for one hour
    full_label_baseline: bool = False  # also train the supervised baseline on 100% of the labels


class LaunchConfig(BaseModel):
    """How stages run: in-process for one process, else under `accelerate launch` with these flags."""

    model_config = STRICT
    num_processes: int = Field(1, ge=1)  # total over all machines, as `accelerate launch --num_processes`
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0)  # this machine's rank; the flow runs on rank 0
    main_process_ip: str | None = None  # rank 0's address; required with several machines
    main_process_port: int = Field(29500, ge=1, le=65535)
    rdzv_backend: Literal["static", "c10d"] = "static"
    same_network: bool = True
    gpu_ids: str | None = None  # e.g. "0,1,2,3"; None: every visible GPU
    use_cpu: bool = False  # several CPU processes over gloo (ACCELERATE_USE_CPU=1 with --multi_gpu)
    extra_args: list[str] = []  # passed to `accelerate launch` as they are, e.g. ["--config_file", "fsdp.yaml"]

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
        return self


# --- the experiment -------------------------------------------------------------------------------------------------

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_name(value: Any) -> Any:
    if isinstance(value, str) and not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_' or '-' (it names a directory)")
    return value


Budget = Annotated[int | float, BeforeValidator(check_budget)]  # check_budget's message says what is accepted
LoosePath = Annotated[Path, Strict(False)]  # YAML gives strings


class ExperimentConfig(BaseModel):
    """A whole experiment. Build it with `load_config`; turn a section into a stage's dataclass with `stage_config`."""

    model_config = STRICT
    experiment: Annotated[str, BeforeValidator(_check_name)]
    runs_dir: LoosePath = Path("runs")
    data: DataSection = DataSection()  # type: ignore[valid-type]
    model: EncoderSection = EncoderSection()  # type: ignore[valid-type]
    budgets: list[Budget] = Field(min_length=1)
    subset_seed: int = 0
    subsets: dict[str, LoosePath] = {}
    pretrain: PretrainSection = PretrainSection()  # type: ignore[valid-type]
    finetune: FinetuneSection = FinetuneSection()  # type: ignore[valid-type]
    baseline: BaselineSection = BaselineSection()  # type: ignore[valid-type]
    distill: DistillSection = DistillSection()  # type: ignore[valid-type]
    evaluate: EvaluateSection = EvaluateSection()  # type: ignore[valid-type]
    report: ReportConfig = ReportConfig()
    launch: LaunchConfig = LaunchConfig()

    def budget_names(self, stage: str = "finetune") -> dict[str, float | int]:
        """Budget name -> budget for `stage`'s instances; the baseline adds 100% when the report asks for it."""
        names = {budget_name(b): b for b in self.budgets}
        if stage == "baseline" and self.report.full_label_baseline:
            names.setdefault(budget_name(FULL_LABELS), FULL_LABELS)
        return names

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_unique_budgets(self.budgets)
        for name in self.subsets:
            _check_budget_key(f"subsets.{name}", name)
        for stage in STAGES:
            _check_stage(self, stage, None)
            for budget in getattr(getattr(self, stage), "per_budget", {}):
                _check_budget_key(f"{stage}.per_budget.{budget}", budget)
                if budget in self.budget_names(stage):  # entries for budgets not in this run are kept, unused
                    _check_stage(self, stage, budget)
        return self


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


def parse_budget_name(name: str) -> float | int | None:
    """The budget a name stands for ("10pct" -> 0.1, "250labels" -> 250), or None if it is not a budget name."""
    if count := re.fullmatch(r"([0-9]+)labels", name):
        budget: float | int = int(count.group(1))
    elif percent := re.fullmatch(r"([0-9]+(?:p[0-9]+)?)pct", name):
        budget = float(percent.group(1).replace("p", ".")) / 100
    else:
        return None
    try:
        return budget if budget_name(budget) == name else None  # the canonical spelling only: not "010pct"
    except ValueError:  # out of range: 0pct, 150pct, 0labels
        return None


def _check_stage(cfg: ExperimentConfig, stage: str, budget: str | None) -> None:
    """Merged per-budget values pass the dataclass checks; the classifier's head layer exists."""
    key = f"{stage}.per_budget.{budget}" if budget else stage
    try:
        built = stage_config(cfg, stage, budget)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None
    selector = getattr(built, "proj_selector", 0) if stage == "finetune" else 0
    if selector > cfg.model.head_layers:
        raise ValueError(
            f"{key}.proj_selector: {selector} is above model.head_layers ({cfg.model.head_layers}); "
            f"use 0..{cfg.model.head_layers}"
        )


# --- sections -> stage dataclasses ---------------------------------------------------------------------------------


def stage_config(cfg: ExperimentConfig, stage: str, budget: str | None = None) -> Any:
    """The dataclass config of `stage` ("pretrain", "finetune", ...), with the experiment's `data` and `model`
    filled in and, for a budget name such as "10pct", that budget's `per_budget` overrides applied."""
    if stage not in STAGE_CLASSES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    section = getattr(cfg, stage)
    values = section.model_dump(exclude={"per_budget"})
    if budget is not None:
        if stage not in BUDGET_STAGES:
            raise ConfigError(f"stage {stage!r} runs once, not per budget; call it without a budget")
        if budget not in cfg.budget_names(stage):
            names = ", ".join(cfg.budget_names(stage))
            raise ConfigError(f"{stage}: no budget named {budget!r}; the budgets are {names}")
        if budget in section.per_budget:
            values.update(section.per_budget[budget].model_dump())  # the keys written, a written null too
    values["data"] = cfg.data.model_dump()
    if "model" in {f.name for f in dataclasses.fields(STAGE_CLASSES[stage])}:
        values["model"] = cfg.model.model_dump()
    return build_dataclass(STAGE_CLASSES[stage], values)


# --- YAML and --set overrides --------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML with two fixes: `1e-4` is a float (YAML 1.2; PyYAML 1.1 reads a string), a repeated key is an error
    (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader itself reports an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"repeated key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}: invalid YAML{at}: {' '.join(str(problem).split())}") from None


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "not found"
        raise ConfigError(f"config file {path} {state}; pass an existing YAML file (e.g. configs/quickstart.yaml)")
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (experiment: ..., budgets: ...), got {_show(raw)}")
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Apply one `--set a.b.c=value` onto the nested dict; the value is parsed as YAML (numbers, bools, lists)."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set pretrain.epochs=5")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {item!r}: {where} is {_show(child)}, not a section with keys")
        node = child
    node[parts[-1]] = parse_yaml(text, f"--set {item!r}")


def validate_config(raw: Mapping[str, Any], where: str = "config") -> ExperimentConfig:
    """Validate a nested dict; every problem becomes one line naming its dotted key."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(format_error(e) for e in error.errors(include_url=False))
        raise ConfigError(f"{problems} (in {where})") from None


def load_config(path: Path | str | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML config (None: configs/quickstart.yaml), apply `--set` overrides, validate."""
    path = DEFAULT_CONFIG if path is None else Path(path)
    raw = read_config_file(path)
    for item in overrides:
        apply_override(raw, item)
    where = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return validate_config(raw, where)


# --- pydantic errors -> one line each ------------------------------------------------------------------------------


def format_error(error: Mapping[str, Any]) -> str:
    loc, kind, value, ctx = error["loc"], error["type"], error.get("input"), error.get("ctx") or {}
    key = dotted(loc)
    annotation, metadata = _annotation_at(loc)
    if kind == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(loc)}; allowed keys: {', '.join(_keys_at(loc[:-1]))}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        return f"{key}: {_show(value)} is not one of {ctx.get('expected', '')}".replace(" or ", ", ")
    if kind == "value_error":
        return _value_error(loc, str(ctx.get("error", error["msg"])))
    if kind == "too_short":
        return f"{key}: needs at least {ctx.get('min_length')} item, got {_show(value)}"
    if kind == "finite_number":
        return f"{key}: expected a finite number, got {_show(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{key}: {_show(value)} is out of range; it must be {_range(metadata) or error['msg'].lower()}"
    if annotation is not None and (kind.endswith(("_type", "_parsing")) or kind == "int_from_float"):
        return f"{key}: expected {describe(annotation)}, got {_show(value)}"
    return f"{key}: {error['msg']} (got {_show(value)})"


def dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _value_error(loc: Sequence[str | int], message: str) -> str:
    """A dataclass check says "epochs must be > 0": name the key `finetune.epochs` when the field is known."""
    if not loc:
        return message  # cross-section checks name their keys themselves
    match = re.match(r"(\w+) (must .*)", message)
    if match and match.group(1) in _keys_at(loc):
        return f"{dotted((*loc, match.group(1)))}: {match.group(2)}"
    return f"{dotted(loc)}: {message}"


def _did_you_mean(loc: Sequence[str | int]) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap(kind: Any) -> tuple[Any, list, bool]:
    """`kind` without Annotated (its metadata kept) and without `| None` (reported as optional)."""
    metadata: list = []
    optional = False
    while True:
        args = typing.get_args(kind)
        if typing.get_origin(kind) is Annotated:
            metadata += list(kind.__metadata__)
            kind = args[0]
        elif _is_union(kind) and type(None) in args:
            optional = True
            rest = tuple(k for k in args if k is not type(None))
            kind = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 - a runtime-built union
        else:
            return kind, metadata, optional


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _annotation_at(loc: Sequence[str | int]) -> tuple[Any, list]:
    """The declared type (and its constraints) at `loc` in ExperimentConfig; (None, []) when not found."""
    kind: Any = ExperimentConfig
    metadata: list = []
    for part in loc:
        bare, _, _ = _unwrap(kind)
        if _is_model(bare) and part in bare.model_fields:
            field = bare.model_fields[part]
            kind, metadata = field.annotation, list(field.metadata)
        elif typing.get_origin(bare) is list and isinstance(part, int):
            kind, metadata = typing.get_args(bare)[0], []
        elif typing.get_origin(bare) is dict:
            kind, metadata = typing.get_args(bare)[1], []
        else:
            return None, []
    return kind, metadata + _unwrap(kind)[1]


def _keys_at(loc: Sequence[str | int]) -> list[str]:
    bare = _unwrap(_annotation_at(loc)[0])[0]
    return list(bare.model_fields) if _is_model(bare) else []


def describe(kind: Any) -> str:
    """A type in the words of a YAML user: "an integer", "one of 'lars', 'sgd'", "a number or null"."""
    bare, _, optional = _unwrap(kind)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if typing.get_origin(bare) is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(bare))
    elif typing.get_origin(bare) is list:
        text = "a list"
    elif typing.get_origin(bare) is dict:
        text = "a mapping of keys to values"
    elif _is_model(bare):
        text = "a section with keys " + ", ".join(bare.model_fields)
    elif _is_union(bare):
        text = " or ".join(describe(k) for k in typing.get_args(bare))
    else:
        text = words.get(bare, getattr(bare, "__name__", str(bare)))
    return f"{text} or null" if optional else text


def _range(metadata: Sequence[Any]) -> str:
    """Constraints such as Ge(0), Lt(1) as ">= 0 and < 1"."""
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [f"{symbol} {getattr(m, name)}" for m in metadata for name, symbol in symbols.items() if hasattr(m, name)]
    return " and ".join(p for p in parts if not p.endswith(" None"))


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a section"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
