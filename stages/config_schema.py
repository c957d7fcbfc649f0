"""How a stage config is declared: each field holds its default, its bounds and its help text, once.

    @config_dataclass
    class EvaluateConfig:
        knn_k: Annotated[StrictInt, Ge(1)] = 20
        '''neighbours that vote in the kNN classifier'''

A config is a frozen pydantic dataclass. Constructing one checks every field (types without coercion, so "32" is not
an integer; bounds as `annotated_types` constraints) and the config's cross-field rules (its `model_validator`s,
whose messages start with the field they are about: "sk must be false for depth 18 ..."). A bad value raises
`InvalidConfig`, a ValueError of one line. The docstring under a field is its help text. Everything else is derived
from these declarations: the stage command line and its `--help` (stages/training/cli.py), and the sections of the
experiment YAML with their error messages (pipeline/config/).

`SPEED_ONLY` in a field's annotation marks a setting that changes only speed, memory, logging or tracking, never
what is trained: a run may resume under another value, and the pipeline's fingerprints leave it out.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict, ValidationError

T = TypeVar("T")

# Not strict as a whole: a strict pydantic dataclass accepts only instances of itself, never a mapping of its fields
# (a YAML section). Its fields are strict one by one instead (StrictInt, StrictFloat, StrictBool).
CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


class SpeedOnly:
    """The marker type of `SPEED_ONLY`."""

    def __repr__(self) -> str:
        return "SPEED_ONLY"


SPEED_ONLY = SpeedOnly()
SPEED_ONLY_FIELDS: set[str] = set()  # names of the SPEED_ONLY fields of every config class defined so far


class InvalidConfig(ValueError):
    """A config value of the wrong type, out of its bounds or against a rule: one line naming each field."""

    def __init__(self, error: ValidationError) -> None:
        self.problems = error.errors(include_url=False)  # pydantic's: loc, type, msg, input, ctx
        super().__init__("; ".join(problem_line(p) for p in self.problems))


# pydantic's error type for each kind of bound -> the bound's name (as in annotated_types' Gt, Ge, ...) and symbol
BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def problem_line(problem: Mapping[str, Any]) -> str:
    """One problem as "temperature must be > 0, got 0.0" or "student.sk must be false for depth 18 ..."."""
    key = ".".join(str(part) for part in problem["loc"])
    kind, value, ctx = problem["type"], problem.get("input"), problem.get("ctx") or {}
    if kind == "value_error":  # a rule's own message, which starts with the field it is about
        message = str(ctx.get("error", problem["msg"]))
        return f"{key}.{message}" if key else message
    if kind in BOUNDS:
        name, symbol = BOUNDS[kind]
        return f"{key} must be {symbol} {ctx[name]:g}, got {value!r}"
    return f"{key + ': ' if key else ''}{problem['msg']}, got {value!r}"


def config_dataclass(cls: type[T] | None = None, *, error: type[InvalidConfig] = InvalidConfig) -> Any:
    """Make `cls` a stage config: a frozen, validating dataclass whose bad values raise `error` (`InvalidConfig` or
    a subclass of it). Use as `@config_dataclass` or `@config_dataclass(error=...)`."""
    if cls is None:
        return functools.partial(config_dataclass, error=error)
    config = pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)(cls)
    validate = config.__init__

    @functools.wraps(validate)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as problems:
            raise error(problems) from None

    config.__init__ = __init__
    SPEED_ONLY_FIELDS.update(speed_only_fields(config))
    return config


def speed_only_fields(cls: type) -> set[str]:
    """The fields of `cls` whose annotation carries `SPEED_ONLY`."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name for name, kind in hints.items() if SPEED_ONLY in getattr(kind, "__metadata__", ())}
