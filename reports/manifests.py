"""Reading stage outputs: a stage instance's manifest, and what its name says (kind and label budget)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

MANIFEST = "manifest.json"


def read_manifest(stage_dir: Path) -> dict:
    return json.loads((Path(stage_dir) / MANIFEST).read_text())


def read_manifests(stage_dirs: Mapping[str, Path]) -> dict[str, dict]:
    """Instance name -> its manifest, in the order given (the pipeline passes plan order)."""
    return {name: read_manifest(stage_dir) for name, stage_dir in stage_dirs.items()}


def split_instance(name: str) -> tuple[str, str]:
    """ "finetune[20labels]" -> ("finetune", "20labels"); "pretrain" -> ("pretrain", "")."""
    kind, _, budget = name.partition("[")
    return kind, budget.rstrip("]")
