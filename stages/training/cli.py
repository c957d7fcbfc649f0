"""Command lines for the stages, generated from their config dataclasses, and back.

Every field becomes a flag (`--batch-size 256`); fields of a nested config get its name as a prefix
(`--data.source imagefolder:/data/train`). Booleans take true/false, lists and tuples JSON (`--budgets '[0.01, 0.1]'`),
an optional field `none`, and an optional nested config a JSON object of its fields
(`--student '{"depth": 18, "width": 0.5}'`). `python -m stages.<name> --help` lists the flags with their defaults.

`config_to_args(config)` is the inverse: the flags that `parse_stage_args` turns back into an equal config, for
running a stage as a subprocess (`accelerate launch -m stages.<name> --out DIR --<input> PATH *config_to_args(c)`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Config = TypeVar("Config")


def _flag(prefix: str, name: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _optional(kind: Any) -> Any | None:
    """`X` for a type `X | None`, else None."""
    if typing.get_origin(kind) not in (types.UnionType, typing.Union):
        return None
    options = [k for k in typing.get_args(kind) if k is not type(None)]
    return options[0]


def _parse_value(kind: Any) -> Callable[[str], Any]:
    inner_kind = _optional(kind)
    if inner_kind is not None:
        inner = _parse_value(inner_kind)

        def parse_optional(text: str) -> Any:
            return None if text.lower() == "none" else inner(text)

        parse_optional.__name__ = getattr(inner, "__name__", "value")  # argparse names it in "invalid ... value"
        return parse_optional
    if dataclasses.is_dataclass(kind):
        return _dataclass_parser(kind)
    if kind is bool:
        return _parse_bool
    if typing.get_origin(kind) in (list, tuple, dict) or kind is typing.Any:
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


def _dataclass_parser(cls: type) -> Callable[[str], Any]:
    """A JSON object of `cls`'s fields -> `cls`; anything else is an argparse error that shows the expected form."""
    fields = dataclasses.fields(cls)
    example = json.dumps({f.name: f.default for f in fields[:2] if f.default is not dataclasses.MISSING})

    def parse(text: str) -> Any:
        try:
            values = json.loads(text)
            if not isinstance(values, dict):
                raise TypeError(f"not a JSON object: {text!r}")
            return _from_dict(cls, values)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(
                f"expected a JSON object of {cls.__name__} fields ({', '.join(f.name for f in fields)}) such as "
                f"'{example}', or none ({error})"
            ) from None

    return parse


def _from_dict(cls: type[Config], values: dict[str, Any]) -> Config:
    """`cls(**values)` with nested dataclasses and tuples rebuilt from their JSON forms (dicts and lists)."""
    hints = typing.get_type_hints(cls)
    kwargs = dict(values)
    for field in dataclasses.fields(cls):
        if field.name not in kwargs:
            continue
        kind, value = hints[field.name], kwargs[field.name]
        nested = _optional(kind) or kind
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            kwargs[field.name] = _from_dict(nested, value)
        elif typing.get_origin(nested) is tuple and isinstance(value, list):
            kwargs[field.name] = tuple(value)
    return cls(**kwargs)  # an unknown field name is a TypeError that names it


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            _add_fields(parser, kind, prefix + field.name + ".")
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        nested = _optional(kind)
        form = f"a JSON object of {nested.__name__} fields, or none; " if dataclasses.is_dataclass(nested) else ""
        parser.add_argument(
            _flag(prefix, field.name),
            dest=prefix + field.name,
            type=_parse_value(kind),
            default=argparse.SUPPRESS,
            choices=choices,
            metavar=None if choices else field.name.upper(),
            help=f"{form}default: {default!r}",
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
    cls: type[Config],
    description: str,
    argv: list[str] | None = None,
    inputs: tuple[str, ...] = (),
    optional_inputs: tuple[str, ...] = (),
) -> tuple[Config, dict[str, Path], Path]:
    """Parse `--out DIR`, one `--<input> PATH` per upstream artifact, and the config flags.

    Returns (config, {input name: path}, out). Every name in `inputs` is required; a name in `optional_inputs` is in
    the dict only when its flag was given."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory of this stage (resumes if present)")
    for name in inputs:
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"path to the {name} artifact")
    for name in optional_inputs:
        parser.add_argument(
            f"--{name}", type=Path, default=argparse.SUPPRESS, help=f"path to the {name} artifact (optional)"
        )
    _add_fields(parser, cls)
    values = vars(parser.parse_args(argv))
    out = values.pop("out")
    upstream = {name: values.pop(name) for name in (*inputs, *optional_inputs) if name in values}
    return _build(cls, values), upstream, out


def config_to_args(config: Any) -> list[str]:
    """The flags for every field of `config` (a stage config dataclass) that `parse_stage_args` turns back into an
    equal config. Each flag is one `--name=value` item, so that a value starting with '-' stays a value."""
    return _field_args(config, "")


def _field_args(config: Any, prefix: str) -> list[str]:
    hints = typing.get_type_hints(type(config))
    args = []
    for field in dataclasses.fields(config):
        kind, value = hints[field.name], getattr(config, field.name)
        if dataclasses.is_dataclass(kind):
            args += _field_args(value, prefix + field.name + ".")
        else:
            args.append(f"{_flag(prefix, field.name)}={_format_value(value, kind)}")
    return args


def _format_value(value: Any, kind: Any) -> str:
    """`value` as `_parse_value(kind)` reads it back."""
    if value is None and _optional(kind) is not None:
        return "none"
    if (_optional(kind) or kind) is typing.Any:
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if dataclasses.is_dataclass(value):
        return json.dumps(dataclasses.asdict(value))
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


BAD_INPUT = (ValueError, FileNotFoundError)  # DataError, SubsetError, config and checkpoint mismatches are ValueErrors


def run_and_print(prog: str, run: Callable[[], dict]) -> None:
    """Run a stage and print its metrics as JSON. Bad input (and a NaN loss) ends with one line on stderr naming the
    culprit and the fix, exit status 2 (as argparse's usage errors); SIMCLRV2_DEBUG=1 shows the traceback instead."""
    from stages.training.loop import NonFiniteLossError  # here: the CLI module stays free of torch until a stage runs

    try:
        metrics = run()
    except (*BAD_INPUT, NonFiniteLossError) as error:
        if os.environ.get("SIMCLRV2_DEBUG"):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(metrics, indent=2))
