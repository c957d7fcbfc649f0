"""Reading stage outputs: the manifests of a run's stage instances."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.manifest import read_manifest


def read_manifests(stage_dirs: Mapping[str, Path]) -> dict[str, dict]:
    """Instance name -> its manifest, in the order given (the pipeline passes plan order)."""
    return {name: read_manifest(stage_dir) for name, stage_dir in stage_dirs.items()}
