"""A stage instance's name and its manifest: the one record of what a finished stage produced.

- Instance names: a stage alone ("pretrain") or a stage at a label budget ("finetune[10pct]"); on disk the budget
  joins with a dash ("finetune-10pct").
- `manifest.json` (config, inputs, metrics, artifact sizes and sha256, wall time, devices, code version) is written
  last and atomically: a directory without it is unfinished, and a stage is done only while its manifest exists
  and every artifact it lists is still there with its recorded size (`is_complete`).
- Artifacts are every file of the stage directory except the manifest, `checkpoints/` (resumable state: only needed
  until the stage finishes, and may be deleted afterwards to save space) and half-written files (`*.partial`,
  `*.tmp`).

Imports neither Prefect nor torch: reports/ reads manifests with it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
NOT_ARTIFACTS = ("checkpoints", "export")  # top-level folders of a stage directory that are not its outputs
HALF_WRITTEN = (".partial", ".tmp")

_INSTANCE = re.compile(r"([a-z][a-z0-9_]*)(?:\[([A-Za-z0-9._-]+)\])?")


# --- instance names -------------------------------------------------------------------------------------------------


def split_instance(name: str) -> tuple[str, str | None]:
    """ "finetune[10pct]" -> ("finetune", "10pct"); "pretrain" -> ("pretrain", None). ValueError for any other form
    (the name becomes a directory name, so "../x" or "a/b" must never pass)."""
    match = _INSTANCE.fullmatch(name)
    if not match:
        raise ValueError(f"stage name {name!r} is not of the form 'stage' or 'stage[budget]' (e.g. finetune[1pct])")
    stage, budget = match.groups()
    return stage, budget


def instance_name(stage: str, budget: str | None = None) -> str:
    """("finetune", "10pct") -> "finetune[10pct]"; ("pretrain", None) -> "pretrain"."""
    name = f"{stage}[{budget}]" if budget else stage
    split_instance(name)  # the same rules as for a name read back
    return name


SEED_MARK = "-s"  # "20labels-s1": budget 20labels drawn with subset seed 1 (budget names never hold a "-")


def replicate(budget: str | None, seed: int | None) -> str | None:
    """The bracket of one subset seed's instance: ("20labels", 1) -> "20labels-s1", (None, 1) -> "s1" (its
    subsets); without a seed (a run with one seed), the budget alone."""
    if seed is None:
        return budget
    return f"{budget}{SEED_MARK}{seed}" if budget else f"s{seed}"


def split_replicate(bracket: str | None) -> tuple[str | None, int | None]:
    """The inverse of `replicate`: "20labels-s1" -> ("20labels", 1), "s1" -> (None, 1), "10pct" -> ("10pct", None)."""
    if bracket is None:
        return None, None
    if match := re.fullmatch(r"s([0-9]+)", bracket):
        return None, int(match.group(1))
    budget, mark, seed = bracket.rpartition(SEED_MARK)
    if mark and seed.isdigit():
        return budget, int(seed)
    return bracket, None


def stage_dirname(instance: str) -> str:
    """Directory name of a stage instance: "pretrain" -> "pretrain", "finetune[10pct]" -> "finetune-10pct"."""
    stage, budget = split_instance(instance)
    return f"{stage}-{budget}" if budget else stage


# --- JSON and checksums ---------------------------------------------------------------------------------------------


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


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path | str, value: Any) -> None:
    """Readers see no file or the whole file (see `write_text_atomic`)."""
    # Imported here: `stages` imports torch, and reading a manifest (reports/) must not.
    from stages.training.files import write_text_atomic

    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=_plain, allow_nan=False) + "\n")


# --- artifacts and the manifest -------------------------------------------------------------------------------------


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
