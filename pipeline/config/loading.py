"""Reading the experiment config: one YAML file (see configs/quickstart.yaml for a commented example) with
`--set a.b.c=value` overrides applied, validated once into an `ExperimentConfig`.

    experiment: name              # names the run directory runs_dir/<experiment>/
    runs_dir: runs                # relative paths here and below are taken from the current directory
    data: {...}                   # stages.data.sources.DataConfig, shared by every stage
    model: {...}                  # stages.models.architecture.EncoderConfig: the SimCLRv2 encoder, also the baseline's
    budgets: [0.01, 0.1]          # label budgets: fractions in (0, 1] or label counts >= 1
    subset_seed: 0
    subsets: {1pct: list.txt}     # optional: budget name -> user-supplied id / file-name list
    pretrain / finetune / baseline / distill / evaluate: {...}   # the stage config fields minus data (and model)
    report: {...}                 # label-budget report: prices and the 100%-label baseline
    launch: {...}                 # `accelerate launch` settings for several processes or machines

Every problem is one `ConfigError` line naming the dotted key (`pretrain.batch_size: ...`), never a traceback.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.errors import ConfigError, format_error, show
from pipeline.config.experiment import ExperimentConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


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


class _ValueLoader(_YamlLoader):
    """A `--set` value: one value, no aliases. An alias repeats a node without copying it, so a few hundred bytes of
    aliases to aliases make a list of a billion items that every later step (validation, messages) would walk."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a --set value", mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str, loader: type[yaml.SafeLoader] = _YamlLoader) -> Any:
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader subclass: no arbitrary objects
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
        # Named by its type only: a file that is no config (`config=/etc/passwd`) is never echoed.
        kind = "nothing" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: the top level must be a mapping (experiment: ..., budgets: ...), got {kind}")
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Apply one `--set a.b.c=value` onto the nested dict; the value is parsed as YAML (numbers, bools, lists)."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        example = "e.g. --set pretrain.epochs=5"
        raise ConfigError(f"--set {shortened(item)}: expected KEY=VALUE with a dotted key, {example}")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {shortened(item)}: {where} is {show(child)}, not a section with keys")
        node = child
    node[parts[-1]] = parse_yaml(text, f"--set {shortened(item)}", _ValueLoader)


def validate_config(raw: Mapping[str, Any], where: str = "config") -> ExperimentConfig:
    """Validate a nested dict; every problem becomes one line naming its dotted key."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(format_error(e, ExperimentConfig) for e in error.errors(include_url=False))
        raise ConfigError(f"{problems} (in {where})") from None


def load_config(path: Path | str | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML config (None: configs/quickstart.yaml), apply `--set` overrides, validate."""
    path = DEFAULT_CONFIG if path is None else Path(path)
    raw = read_config_file(path)
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, describe_request(path, overrides))


def describe_request(path: Path, overrides: Sequence[str]) -> str:
    """Where a config came from, for its error messages."""
    text = " ".join(overrides)
    return f"{path} with --set {text if len(text) <= 200 else text[:197] + '...'}" if overrides else str(path)


def shortened(text: str, limit: int = 80) -> str:
    """`text` quoted, cut to `limit` characters before quoting (a deployment parameter may be megabytes long)."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."
