"""The run store: every stage instance writes to `runs/<experiment>/<stage>/<fingerprint>/`.

- The fingerprint hashes the settings of the stage that decide its result (pipeline/plan.py), the fingerprints of
  what it reads (upstream stages, subset files) and the version of the code it runs (pipeline/code_version.py), so
  a changed setting or changed code lands in a new directory and nothing is overwritten.
- What a finished stage directory holds, and when it counts as finished, is its manifest (pipeline/manifest.py).
- One run of an experiment at a time: `experiment_lock` holds an `fcntl.flock` on `runs/<experiment>/.lock`, which
  the kernel releases if the holder dies. Linux and local disks; a lock on NFS is only as good as its flock support.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.manifest import canonical_json, stage_dirname
from pipeline.processes import group_running

LOCK_FILE = ".lock"
FINGERPRINT_CHARS = 16

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExperimentLocked(RuntimeError):
    """Another process is running the same experiment."""


# --- directories and fingerprints -----------------------------------------------------------------------------------


def stage_dir(root: Path | str, experiment: str, instance: str, fingerprint: str) -> Path:
    """`root/<experiment>/<stage dir name>/<fingerprint>`."""
    for what, value in (("experiment", experiment), ("fingerprint", fingerprint)):
        if not _NAME.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not a valid directory name (letters, digits, '.', '_', '-')")
    return Path(root) / experiment / stage_dirname(instance) / fingerprint


def fingerprint(stage_config: Mapping[str, Any] | Any, upstream: Mapping[str, str], code_version: str) -> str:
    """First 16 hex digits of the sha256 of the stage config (a mapping or a dataclass), the upstream fingerprints
    (name -> fingerprint or checksum) and the code version."""
    payload = {"config": stage_config, "upstream": dict(upstream), "code": code_version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:FINGERPRINT_CHARS]


def device_info(processes: int = 1, machines: int = 1, use_cpu: bool = False) -> dict:
    """What ran the stage, for the manifest and the compute cost: process count and the device kind and name."""
    import torch  # local: only this function needs torch

    if torch.cuda.is_available() and not use_cpu:
        return {"processes": processes, "machines": machines, "device": "cuda", "name": torch.cuda.get_device_name(0)}
    return {"processes": processes, "machines": machines, "device": "cpu", "name": _cpu_name()}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "cpu"


# --- one run per experiment -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def experiment_lock(
    root: Path | str, experiment: str, timeout: float | None = 0.0, poll: float = 0.2
) -> Iterator[Path]:
    """Hold `root/<experiment>/.lock` for the duration of the block.

    timeout: 0 stops at once, None waits for ever, else seconds to wait; then `ExperimentLocked` names the holder
    (pid, host, start time) and the lock file. The lock is an `fcntl.flock`: the kernel drops it when every process
    that holds its descriptor has exited, so a stale lock file never blocks anyone. Launched stages inherit the
    descriptor (`held_lock_descriptors`), so the lock lives as long as any of them; their process group is written
    into the file too, and a group still running from an earlier holder keeps the lock taken. The file itself is kept
    (deleting it would let two processes lock two different files)."""
    path = Path(root) / experiment / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _open_lock_file(path)
    try:
        _acquire(descriptor, path, experiment, timeout, poll)
        try:
            _write_holder(descriptor)
            _HELD[path] = descriptor
            yield path
        finally:
            _HELD.pop(path, None)
            os.ftruncate(descriptor, 0)  # before unlocking: a new holder's details are never erased
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


_HELD: dict[Path, int] = {}  # the experiment locks this process holds: lock file -> descriptor


def held_lock_descriptors() -> list[int]:
    """The descriptors of the locks this process holds, for launched stages to inherit (`pass_fds`)."""
    return list(_HELD.values())


def record_stage_group(group: int | None) -> None:
    """Write the process group of the stage now launched (None: it ended) into every lock this process holds, so
    that a later run sees it if this process dies first and leaves the group behind."""
    for descriptor in _HELD.values():
        holder = {**_read_holder(descriptor), "stage_group": group}
        _write(descriptor, json.dumps(holder))


def _open_lock_file(path: Path) -> int:
    try:  # O_NOFOLLOW: a link planted in the runs directory must not make the lock truncate another file
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        if path.is_symlink():
            raise ExperimentLocked(f"lock file {path} is a symbolic link; remove it (a plain file is made)") from None
        raise


def _acquire(descriptor: int, path: Path, experiment: str, timeout: float | None, poll: float) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            leftover = _leftover_group(descriptor)
            if leftover is None:
                return
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            holder = f"processes of an earlier run's stage still run (process group {leftover}: `kill -- -{leftover}`)"
        except BlockingIOError:
            holder = lock_holder(path)
        if deadline is not None and time.monotonic() >= deadline:
            waited = f" after waiting {timeout:g} s" if timeout else ""
            raise ExperimentLocked(
                f"experiment {experiment!r} is already running{waited} ({holder}; lock file {path}). "
                "Wait for that run to finish or stop it; this run changed nothing."
            )
        time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


def _leftover_group(descriptor: int) -> int | None:
    """The process group an earlier holder launched and left running on this host, if any of it still runs."""
    holder = _read_holder(descriptor)
    group = holder.get("stage_group")
    if isinstance(group, int) and holder.get("host") == socket.gethostname() and group_running(group):
        return group
    return None


def _read_holder(descriptor: int) -> dict:
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(descriptor: int) -> None:
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    _write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))


def _write(descriptor: int, text: str) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, text.encode(), 0)


def lock_holder(path: Path | str) -> str:
    """ "pid 123 on host, since <time>" from a lock file, and the process group of its launched stage if one runs;
    "holder unknown" while it is being written."""
    try:
        holder = json.loads(Path(path).read_text(encoding="utf-8"))
        text = f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
    group = holder.get("stage_group")
    return text + (f"; its launched stage is process group {group}" if isinstance(group, int) else "")
