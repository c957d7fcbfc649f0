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
    (pid, host, start time) and the lock file. The lock is an `fcntl.flock`: the kernel drops it when the holder
    exits or is killed, so a stale lock file never blocks anyone. The file itself is kept (deleting it would let two
    processes lock two different files)."""
    path = Path(root) / experiment / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(descriptor, path, experiment, timeout, poll)
        try:
            _write_holder(descriptor)
            yield path
        finally:
            os.ftruncate(descriptor, 0)  # before unlocking: a new holder's details are never erased
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _acquire(descriptor: int, path: Path, experiment: str, timeout: float | None, poll: float) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                waited = f" after waiting {timeout:g} s" if timeout else ""
                raise ExperimentLocked(
                    f"experiment {experiment!r} is already running{waited} ({lock_holder(path)}; lock file {path}). "
                    "Wait for that run to finish or stop it; this run changed nothing."
                ) from None
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


def _write_holder(descriptor: int) -> None:
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, holder.encode(), 0)


def lock_holder(path: Path | str) -> str:
    """ "pid 123 on host, since <time>" from a lock file; "holder unknown" while it is being written."""
    try:
        holder = json.loads(Path(path).read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
