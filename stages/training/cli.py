"""The command line of a stage, derived by tyro from its config (declared as in stages/config_schema.py).

    python -m stages.pretrain --out runs/pretrain --epochs 20 --blur --data.source imagefolder:/data/train

Every config field is a flag that `--help` lists with its help text and default. Booleans are switches (`--blur`,
`--no-blur`), a nested config's fields carry its name
(`--data.image-size 224`), an optional value takes `None`, an optional nested config (`DistillConfig.student`) a JSON
object of its fields or `none`, a tuple or mapping several values (`--budgets 0.01 0.1`). Besides the config: `--out
DIR` and one `--<input> PATH` per upstream artifact. `--config-json` takes a whole config as JSON (`config_as_json`),
which the flags given with it change: the pipeline launches a stage under `accelerate launch` that way, so that the
stage gets exactly the config the flow has.

Bad input, a flag that does not parse or a value out of its bounds, ends with one line on stderr and exit status 2,
as a stage's own bad input does in `run_and_print` (which gives every kind of failure its exit status:
stages/failures.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import sys
import traceback
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import tyro
from pydantic import TypeAdapter, ValidationError
from tyro.conf import arg
from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec, PrimitiveTypeInfo

from stages.config_schema import InvalidConfig
from stages.failures import LASTING_FAULT_EXIT, MISTAKE_EXIT, Failure, failure_kind, lasting_fault_line

Config = TypeVar("Config")
REGISTRY = ConstructorRegistry()
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def parse_stage_args(
    prog: str,
    cls: type[Config],
    description: str,
    argv: list[str] | None = None,
    inputs: tuple[str, ...] = (),
    optional_inputs: tuple[str, ...] = (),
) -> tuple[Config, dict[str, Path], Path]:
    """Parse `--out DIR`, one `--<input> PATH` per upstream artifact, `--config-json` and the config flags of the
    stage `prog` ("stages.pretrain"). Returns (config, {input name: path}, out). Every name in `inputs` is required;
    a name in `optional_inputs` is in the dict only when its flag was given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_type(cls, config_from_json(prog, cls, argv), inputs, optional_inputs)
    try:
        with errors_on_one_line(prog):
            parsed = tyro.cli(
                command,
                args=argv,
                prog=f"python -m {prog}",
                description=description,
                registry=REGISTRY,
            )
    except InvalidConfig as error:
        usage_error(prog, str(error))
    except BrokenPipeError:  # `--help | head`: the reader stopped early, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        sys.exit(0)
    given = {name: getattr(parsed, name) for name in (*inputs, *optional_inputs)}
    return parsed.config, {name: path for name, path in given.items() if path is not None}, parsed.out


def config_as_json(config: Any) -> str:
    """A whole stage config as the JSON that `--config-json` reads back into an equal config."""
    return json.dumps(dataclasses.asdict(config))


def command_type(cls: type, base: Any | None, inputs: tuple[str, ...], optional_inputs: tuple[str, ...]) -> type:
    """The whole command line as one dataclass for tyro: `--out`, the inputs, `--config-json`, then the fields of
    `cls` at the top level (no `config.` prefix), with `base`'s values as their defaults."""
    fields: list[tuple] = [("out", Annotated[Path, arg(metavar="DIR", help="output directory (resumes if present)")])]
    fields += [(name, Annotated[Path, arg(metavar="PATH", help=f"path to the {name} artifact")]) for name in inputs]
    fields += [
        (name, Annotated[Path | None, arg(metavar="PATH", help=f"path to the {name} artifact (optional)")], None)
        for name in optional_inputs
    ]
    json_help = "a whole config as JSON, which the flags given with it change (how the pipeline launches a stage)"
    fields.append(("config_json", Annotated[str | None, arg(metavar="JSON", help=json_help)], None))
    default = dataclasses.field(default_factory=cls if base is None else lambda: base)
    fields.append(("config", Annotated[cls, arg(name="")], default))
    return dataclasses.make_dataclass("StageCommand", fields, frozen=True)


def config_from_json(prog: str, cls: type[Config], argv: list[str]) -> Config | None:
    """The config of `--config-json`, if given (read before tyro parses the flags, since it sets their defaults)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config-json", "--config_json")
    text = pre.parse_known_args(argv)[0].config_json
    if text is None:
        return None
    try:
        return config_from_text(cls, text)
    except InvalidConfig as error:
        usage_error(prog, f"--config-json: {error}")


@REGISTRY.primitive_rule
def optional_config_from_json(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    """`X | None` for a config dataclass X: one flag that takes a JSON object of X's fields, or `none` (tyro's own
    form for it would be a choice between subcommands)."""
    nested = optional_dataclass(info.type)
    if nested is None:
        return None
    return PrimitiveConstructorSpec(
        nargs=1,
        metavar="JSON|none",
        instance_from_str=lambda args: config_or_none(nested, args[0]),
        is_instance=lambda value: value is None or isinstance(value, nested),
        str_from_instance=lambda value: ["none" if value is None else config_as_json(value)],
    )


def optional_dataclass(kind: Any) -> type | None:
    """X for the type `X | None` where X is a dataclass; else None."""
    if typing.get_origin(kind) not in (types.UnionType, typing.Union):
        return None
    options = [k for k in typing.get_args(kind) if k is not type(None)]
    return options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None


def config_or_none(cls: type[Config], text: str) -> Config | None:
    if text.lower() == "none":
        return None
    try:
        return config_from_text(cls, text)
    except InvalidConfig as error:
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"expected a JSON object of {cls.__name__} fields ({names}) or none: {error}") from None


def config_from_text(cls: type[Config], text: str) -> Config:
    """A config from the JSON of its fields; every problem, bad JSON included, as one `InvalidConfig`."""
    try:
        return TypeAdapter(cls).validate_json(text)
    except ValidationError as error:
        raise InvalidConfig(error) from None


@contextlib.contextmanager
def errors_on_one_line(prog: str) -> Iterator[None]:
    """tyro reports a flag it cannot parse in a box of several lines on stderr: keep its message, on one line."""
    captured, message = io.StringIO(), None
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except SystemExit as stop:
        if not stop.code:  # --help
            raise
        message = box_message(captured.getvalue())
    finally:
        if message is None:
            sys.stderr.write(captured.getvalue())  # anything else tyro wrote, e.g. a warning
    if message is not None:
        usage_error(prog, message)


def box_message(text: str) -> str:
    """The message of tyro's error box, its rows up to the first rule, as one line (all of `text` if no box)."""
    rows = []
    for line in ANSI_ESCAPE.sub("", text).splitlines():
        if not line.startswith("│"):
            continue
        row = line.strip("│ ")
        if row and set(row) == {"─"}:
            break
        rows.append(row)
    return " ".join(row for row in rows if row) or " ".join(text.split())


def usage_error(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(MISTAKE_EXIT)


def run_and_print(prog: str, run: Callable[[], dict]) -> None:
    """Run a stage and print its metrics as JSON. Its failure ends with the exit status of its kind
    (stages/failures.py), which is how the pipeline tells them apart in a launched stage: bad input (and a NaN loss)
    with one line on stderr naming the culprit and the fix, exit status 2 (as a usage error); a fault of the machine
    that a retry will not fix (a full disk, a permission denied) with its traceback, then one line naming the path
    and what to do, exit status 3; anything else with its traceback, exit status 1. SIMCLRV2_DEBUG=1 shows the
    traceback of a mistake too."""
    try:
        metrics = run()
    except Exception as error:
        kind = failure_kind(error)
        if kind is Failure.MISTAKE and not os.environ.get("SIMCLRV2_DEBUG"):
            usage_error(prog, str(error))
        if kind is not Failure.LASTING_FAULT:
            raise
        traceback.print_exc()  # where it happened, when the line cannot name the path
        print(f"{prog}: error: {lasting_fault_line(error)}", file=sys.stderr)
        sys.exit(LASTING_FAULT_EXIT)
    print(json.dumps(metrics, indent=2))
