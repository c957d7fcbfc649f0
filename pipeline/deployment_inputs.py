"""What a caller may ask of the pipeline's deployments: their parameters are a public interface.

Whoever reaches the Prefect API can start a deployment run with any parameters, and a worker runs it as its own user.
So a caller chooses what to train, never what runs or where it reads and writes:

- `config` names a YAML file inside the checkout's `configs/`, or inside a directory that the worker's operator lists
  in `SIMCLRV2_CONFIG_DIRS` (separated by ':'), never any other path on the worker;
- `overrides` change training settings, budgets and the number of processes, but not
  - what a launched stage's command line holds or which machines and deployments it reaches (`LAUNCH_FROM_FILE`),
    anywhere: from `simclrv2 run --set` either, since the other machines of a run accept only what a deployment
    run may ask;
  - where a deployment run reads or writes (`PATHS_FROM_FILE`).
  The config file, which the operator put on the machine, may set all of these.

Every refusal is one `RequestRefused` line (a mistake: exit 2, never retried) naming the parameter and the fix, and
it never shows what a refused file holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, apply_override, validate_config
from pipeline.config.loading import describe_request, read_config_file, shortened

CHECKOUT = DEFAULT_CONFIG.parents[1]
CONFIG_DIRS_ENV = "SIMCLRV2_CONFIG_DIRS"
# They shape the command that launched stages run, or pick the hosts and deployments that run it.
LAUNCH_FROM_FILE = ("launch.extra_args", "launch.main_process_ip", "launch.rank_deployment")
# Where a run reads and writes.
PATHS_FROM_FILE = ("runs_dir", "data.source", "data.labels", "data.unlabeled", "subsets")
MAX_WAIT_FOR_LOCK = 24 * 3600.0
_ABSENT = object()


class RequestRefused(ConfigError):
    """A deployment parameter asks for something a caller may not set."""


@dataclass(frozen=True)
class ConfigRequest:
    """The config file and overrides a run was started with: what the other machines of a stage load again."""

    config: str | None = None  # None: configs/quickstart.yaml
    overrides: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: Path | str | None, overrides: Sequence[str] | None, deployment: bool = False) -> ConfigRequest:
        """The request as the file it names was read: a deployment run's relative name from the checkout
        (`confined_config`), a command line's from the current directory."""
        if config is None:
            return cls(None, tuple(overrides or ()))
        path = confined_config(str(config)) if deployment else Path(config).resolve()
        return cls(str(path), tuple(overrides or ()))

    def for_other_machines(self) -> str | None:
        """The config path as another machine takes it: relative to the checkout when it lies inside this one (the
        checkouts may sit at different places), else absolute."""
        if self.config is None:
            return None
        path, checkout = Path(self.config).resolve(), CHECKOUT.resolve()
        return str(path.relative_to(checkout)) if path.is_relative_to(checkout) else str(path)


def config_dirs() -> list[Path]:
    """The directories a deployment run may read its config from: the checkout's configs/ and the operator's list."""
    listed = [Path(item) for item in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if item.strip()]
    return [DEFAULT_CONFIG.parent.resolve(), *(path.resolve() for path in listed)]


def confined_config(config: str | None) -> Path:
    """The config file a deployment run may read: relative names are taken from the checkout, and the file (links
    followed) must lie inside `config_dirs()`."""
    if config is None:
        return DEFAULT_CONFIG
    path = Path(config)
    resolved = (path if path.is_absolute() else CHECKOUT / path).resolve()
    allowed = config_dirs()
    if not any(resolved.is_relative_to(directory) for directory in allowed):
        raise RequestRefused(
            f"config {shortened(config, 300)}: a deployment run reads its config only from "
            f"{', '.join(map(str, allowed))}; put the YAML file there, or have the worker's operator list its "
            f"directory in {CONFIG_DIRS_ENV}"
        )
    return resolved


def check_overrides(path: Path, overrides: Sequence[str], protected: Sequence[str], who: str) -> ExperimentConfig:
    """`path` with `overrides`, validated; `RequestRefused` when the overrides change a `protected` key, however they
    reach it (the key itself, or a whole section written over). Compared as written, before defaults fill in."""
    raw = read_config_file(path)
    before = {key: _written(raw, key) for key in protected}
    for item in overrides:
        apply_override(raw, item)
    touched = [key for key in protected if _written(raw, key) != before[key]]
    if touched:
        raise RequestRefused(
            f"{who}: overrides may not change {', '.join(touched)}; set {'it' if len(touched) == 1 else 'them'} in "
            f"the config file ({path}), which the machine's operator chose"
        )
    return validate_config(raw, describe_request(path, overrides))


def _written(raw: Any, key: str) -> Any:
    """The value at a dotted key of the YAML as written; `_ABSENT` where it is not written."""
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return _ABSENT
        raw = raw[part]
    return raw


def load_cli_request(config: Path | str | None, overrides: Sequence[str]) -> ExperimentConfig:
    """`simclrv2 run`'s config: any file the user names, and `--set` for anything but the launch keys above."""
    path = DEFAULT_CONFIG if config is None else Path(config)
    return check_overrides(path, overrides, LAUNCH_FROM_FILE, "--set")


def load_deployment_request(config: str | None, overrides: Sequence[str] | None) -> ExperimentConfig:
    """A deployment run's config, from parameters a remote caller chose."""
    protected = (*LAUNCH_FROM_FILE, *PATHS_FROM_FILE)
    return check_overrides(confined_config(config), list(overrides or []), protected, "deployment run")


def check_wait(wait_for_lock: float) -> float:
    """A deployment run may wait for the experiment's lock for a day at most, not hold a worker for ever."""
    if not 0 <= wait_for_lock <= MAX_WAIT_FOR_LOCK:
        raise RequestRefused(f"wait_for_lock: {wait_for_lock:g} s is out of range; it must be >= 0 and <= 86400")
    return wait_for_lock
