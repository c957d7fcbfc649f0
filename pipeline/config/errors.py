"""Config problems as one line each, naming the dotted key and what is allowed: `pretrain.batch_size: 0 is out of
range; it must be >= 1`, never a traceback or pydantic's own wording."""

from __future__ import annotations

import difflib
import re
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from stages.config_schema import BOUNDS

UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")  # in a section; in a stage config (a dataclass)


class ConfigError(ValueError):
    """A bad config: one line naming the key and what is allowed."""


def format_error(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    """One pydantic error of validating `root` (the experiment) as one line naming its dotted key."""
    loc, kind, value, ctx = error["loc"], error["type"], error.get("input"), error.get("ctx") or {}
    key = dotted(loc)
    annotation, metadata = annotation_at(root, loc)
    if kind in UNKNOWN_KEY:
        allowed = ", ".join(keys_at(root, loc[:-1]))
        return f"{key}: unknown key{_did_you_mean(root, loc)}; allowed keys: {allowed}"
    if kind in ("missing", "missing_argument"):
        return f"{key}: required key is missing"
    if kind == "literal_error":
        return f"{key}: {show(value)} is not one of {ctx.get('expected', '')}".replace(" or ", ", ")
    if kind == "value_error":
        return _value_error(root, loc, str(ctx.get("error", error["msg"])))
    if kind == "too_short":
        return f"{key}: needs at least {ctx.get('min_length')} item, got {show(value)}"
    if kind == "finite_number":
        return f"{key}: expected a finite number, got {show(value)}"
    if kind in BOUNDS:
        return f"{key}: {show(value)} is out of range; it must be {_range(metadata) or error['msg'].lower()}"
    if annotation is not None and (kind.endswith(("_type", "_parsing")) or kind == "int_from_float"):
        return f"{key}: expected {describe(annotation)}, got {show(value)}"
    return f"{key}: {error['msg']} (got {show(value)})"


def dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _value_error(root: type[BaseModel], loc: Sequence[str | int], message: str) -> str:
    """A rule says "sk must be false for depth 18": name the key `model.sk` when the field is known there."""
    if not loc:
        return message  # experiment-wide checks name their keys themselves
    match = re.match(r"(\w+) (must .*)", message)
    if match and match.group(1) in keys_at(root, loc):
        return f"{dotted((*loc, match.group(1)))}: {match.group(2)}"
    return f"{dotted(loc)}: {message}"


def _did_you_mean(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    close = difflib.get_close_matches(str(loc[-1]), keys_at(root, loc[:-1]), n=1)
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


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (types.UnionType, typing.Union)


def _fields(kind: Any) -> dict[str, FieldInfo] | None:
    """The fields of a section: a pydantic model or a stage config (a pydantic dataclass); None for anything else."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind.model_fields
    return getattr(kind, "__pydantic_fields__", None) if isinstance(kind, type) else None


def annotation_at(root: type[BaseModel], loc: Sequence[str | int]) -> tuple[Any, list]:
    """The declared type (and its constraints) at `loc` in `root`; (None, []) when not found."""
    kind: Any = root
    metadata: list = []
    for part in loc:
        bare, _, _ = _unwrap(kind)
        fields = _fields(bare)
        if fields is not None and part in fields:
            kind, metadata = fields[part].annotation, list(fields[part].metadata)
        elif typing.get_origin(bare) is list and isinstance(part, int):
            kind, metadata = typing.get_args(bare)[0], []
        elif typing.get_origin(bare) is dict:
            kind, metadata = typing.get_args(bare)[1], []
        else:
            return None, []
    return kind, metadata + _unwrap(kind)[1]


def keys_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    return list(_fields(_unwrap(annotation_at(root, loc)[0])[0]) or [])


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
    elif _fields(bare) is not None:
        text = "a section with keys " + ", ".join(_fields(bare))
    elif _is_union(bare):
        text = " or ".join(describe(k) for k in typing.get_args(bare))
    else:
        text = words.get(bare, getattr(bare, "__name__", str(bare)))
    return f"{text} or null" if optional else text


def _range(metadata: Sequence[Any]) -> str:
    """Constraints such as Ge(0), Lt(1) as ">= 0 and < 1"."""
    parts = [f"{symbol} {getattr(m, name)}" for m in metadata for name, symbol in BOUNDS.values() if hasattr(m, name)]
    return " and ".join(p for p in parts if not p.endswith(" None"))


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened before it is written out: a YAML alias bomb is a list that
    repeats itself a billion times, and its full repr would never end."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a section"
    text = _SHORT.repr(value)
    return text if len(text) <= SHOW_CHARS else text[: SHOW_CHARS - 3] + "..."


SHOW_CHARS = 60
_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, SHOW_CHARS, SHOW_CHARS
