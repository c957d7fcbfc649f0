"""The run store: every stage instance writes to `runs/<experiment>/<stage>/<fingerprint>/`.

- The fingerprint hashes the stage's own config, the fingerprints of what it reads (upstream stages, subset files)
  and the code version, so a changed setting or changed code lands in a new directory and nothing is overwritten.
- `manifest.json` (config, inputs, metrics, artifact sizes and sha256, wall time, devices, code version) is written
  last and atomically: a directory without it is unfinished, and a stage is done only while its manifest exists
  and every artifact it lists is still there with its recorded size (`is_complete`).
- Artifacts are every file of the stage directory except the manifest, `checkpoints/` (resumable state: only needed
  until the stage finishes, and may be deleted afterwards to save space) and half-written files (`*.partial`,
  `*.tmp`).
- One run of an experiment at a time: `experiment_lock` holds an `fcntl.flock` on `runs/<experiment>/.lock`, which
  the kernel releases if the holder dies. Linux and local disks; a lock on NFS is only as good as its flock support.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stages.files import write_text_atomic

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
LOCK_FILE = ".lock"
NOT_ARTIFACTS = ("checkpoints",)  # top-level folders of a stage directory that are not outputs
HALF_WRITTEN = (".partial", ".tmp")
DISTRIBUTION = "simclrv2-pipeline"
FINGERPRINT_CHARS = 16
STAGES_DIR = Path(__file__).resolve().parent.parent / "stages"

_INSTANCE = re.compile(r"([a-z][a-z0-9_]*)(?:\[([A-Za-z0-9._-]+)\])?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExperimentLocked(RuntimeError):
    """Another process is running the same experiment."""


# --- names and fingerprints -----------------------------------------------------------------------------------------


def stage_dirname(instance: str) -> str:
    """Directory name of a stage instance: "pretrain" -> "pretrain", "finetune[10pct]" -> "finetune-10pct"."""
    match = _INSTANCE.fullmatch(instance)
    if not match:
        raise ValueError(f"stage name {instance!r} is not of the form 'stage' or 'stage[budget]' (e.g. finetune[1pct])")
    stage, budget = match.groups()
    return f"{stage}-{budget}" if budget else stage


def stage_dir(root: Path | str, experiment: str, instance: str, fingerprint: str) -> Path:
    """`root/<experiment>/<stage dir name>/<fingerprint>`."""
    for what, value in (("experiment", experiment), ("fingerprint", fingerprint)):
        if not _NAME.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not a valid directory name (letters, digits, '.', '_', '-')")
    return Path(root) / experiment / stage_dirname(instance) / fingerprint


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal content, equal text. Paths become strings, dataclasses dicts."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable: {value!r}")


def fingerprint(stage_config: Mapping[str, Any] | Any, upstream: Mapping[str, str], code_version: str) -> str:
    """First 16 hex digits of the sha256 of the stage config (a mapping or a dataclass), the upstream fingerprints
    (name -> fingerprint or checksum) and the code version."""
    payload = {"config": stage_config, "upstream": dict(upstream), "code": code_version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:FINGERPRINT_CHARS]


def code_version(package_dir: Path | str = STAGES_DIR) -> str:
    """`<distribution version>+<12 hex digits>`: a hash of every `*.py` file of the `stages` package (relative path
    and content, sorted). Needs no git; a changed stage file changes every fingerprint computed with it."""
    package_dir = Path(package_dir)
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        content = path.read_bytes()
        digest.update(f"{path.relative_to(package_dir).as_posix()}\0{len(content)}\0".encode())
        digest.update(content)
    return f"{_distribution_version()}+{digest.hexdigest()[:12]}"


def _distribution_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # running from a checkout that was never installed


# --- artifacts and the manifest ------------------------------------------------------------------------------------


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_artifacts(stage_dir: Path | str) -> list[str]:
    """Relative POSIX paths of the stage's outputs, sorted: every regular file except the manifest, `checkpoints/`
    and half-written files. Symbolic links are left out (their target could change under the checksum)."""
    stage_dir = Path(stage_dir)
    found = []
    for path in stage_dir.rglob("*"):
        relative = path.relative_to(stage_dir)
        if relative.parts[0] in NOT_ARTIFACTS or relative.as_posix() == MANIFEST:
            continue
        if path.name.endswith(HALF_WRITTEN) or path.is_symlink() or not path.is_file():
            continue
        found.append(relative.as_posix())
    return sorted(found)


def write_json_atomic(path: Path | str, value: Any) -> None:
    """Readers see no file or the whole file (see `write_text_atomic`)."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=_plain, allow_nan=False) + "\n")


def write_manifest(
    stage_dir: Path | str,
    *,
    stage: str,
    fingerprint: str,
    config: Mapping[str, Any] | Any,
    inputs: Mapping[str, Any],
    metrics: Mapping[str, Any],
    wall_seconds: float,
    devices: Mapping[str, Any],
    code_version: str,
) -> dict:
    """Checksum every artifact, then write `manifest.json` atomically: call it last, when the stage has finished.
    `inputs`: upstream name -> {"dir": ..., "fingerprint": ...} (or a subset file and its sha256)."""
    stage_dir = Path(stage_dir)
    manifest = {
        "format": MANIFEST_FORMAT,
        "stage": stage,
        "fingerprint": fingerprint,
        "config": config,
        "inputs": dict(inputs),
        "metrics": dict(metrics),
        "artifacts": {
            name: {"sha256": file_sha256(stage_dir / name), "bytes": (stage_dir / name).stat().st_size}
            for name in list_artifacts(stage_dir)
        },
        "wall_seconds": round(float(wall_seconds), 3),
        "devices": dict(devices),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_version": code_version,
    }
    write_json_atomic(stage_dir / MANIFEST, manifest)
    return json.loads(canonical_json(manifest))  # what a reader of the file gets (tuples as lists, paths as strings)


def read_manifest(stage_dir: Path | str) -> dict:
    """The manifest of a finished stage; FileNotFoundError when the stage has not finished, ValueError if damaged."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the stage in {Path(stage_dir)} has not finished")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged ({error}); delete the stage directory to rerun it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), dict):
        raise ValueError(f"{path} is not a manifest (no 'artifacts' mapping); delete the stage directory to rerun it")
    return manifest


def missing_artifacts(stage_dir: Path | str, verify: bool = False) -> list[str]:
    """Artifacts listed in the manifest that are gone or changed: size by default, sha256 too with `verify`.
    Raises like `read_manifest` when there is no usable manifest."""
    stage_dir = Path(stage_dir)
    problems = []
    for name, record in sorted(read_manifest(stage_dir)["artifacts"].items()):
        path = stage_dir / name
        if not path.is_file():
            problems.append(f"{name} (missing)")
        elif path.stat().st_size != record.get("bytes"):
            problems.append(f"{name} (size {path.stat().st_size}, recorded {record.get('bytes')})")
        elif verify and file_sha256(path) != record.get("sha256"):
            problems.append(f"{name} (sha256 differs from the recorded one)")
    return problems


def is_complete(stage_dir: Path | str, verify: bool = False) -> bool:
    """True when the manifest exists and every artifact it lists is still there with its recorded size (and sha256
    with `verify`). A deleted or truncated artifact makes the stage incomplete, so it reruns."""
    try:
        return not missing_artifacts(stage_dir, verify)
    except (FileNotFoundError, ValueError):
        return False


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
