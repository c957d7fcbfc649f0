"""Command lines for the stages, generated from their config dataclasses.

Every field becomes a flag (`--batch-size 256`); fields of a nested config get its name as a prefix
(`--data.source imagefolder:/data/train`). `python -m stages.<name> --help` lists them with their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

Config = TypeVar("Config")


def _flag(prefix: str, name: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _parse_value(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        inner = _parse_value(options[0])
        return lambda text: None if text.lower() == "none" else inner(text)
    if kind is bool:
        return _parse_bool
    if origin in (list, tuple) or kind is typing.Any:
        return json.loads  # e.g. --budgets '[0.01, 0.1]'
    if typing.get_origin(kind) is typing.Literal:
        return str
    return kind


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            _add_fields(parser, kind, prefix + field.name + ".")
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        parser.add_argument(
            _flag(prefix, field.name),
            dest=prefix + field.name,
            type=_parse_value(kind),
            default=argparse.SUPPRESS,
            choices=choices,
            metavar=None if choices else field.name.upper(),
            help=f"default: {default!r}",
        )


def _build(cls: type[Config], values: dict[str, Any], prefix: str = "") -> Config:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            kwargs[field.name] = _build(hints[field.name], values, key + ".")
        elif key in values:
            value = values[key]
            kwargs[field.name] = tuple(value) if typing.get_origin(hints[field.name]) is tuple else value
    return cls(**kwargs)


def parse_stage_args(
    cls: type[Config], description: str, argv: list[str] | None = None, inputs: tuple[str, ...] = ()
) -> tuple[Config, dict[str, Path], Path]:
    """Parse `--out DIR`, one `--<input> PATH` per upstream artifact, and the config flags."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory of this stage (resumes if present)")
    for name in inputs:
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"path to the {name} artifact")
    _add_fields(parser, cls)
    values = vars(parser.parse_args(argv))
    out = values.pop("out")
    upstream = {name: values.pop(name) for name in inputs}
    return _build(cls, values), upstream, out
