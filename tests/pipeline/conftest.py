import os
import tempfile

import pytest

# Prefect in tests: a throwaway home (its database), no telemetry, and time for the ephemeral server on 2 cores.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

# A whole experiment in well under a minute of training on digits: tiny network, few steps, small crops.
TINY_RUN = [
    "model.depth=18",
    "model.width=0.0625",
    "model.sk=false",
    "budgets=[20, 100]",
    "report.full_label_baseline=false",
    "pretrain.image_size=8",
    "pretrain.epochs=0.4",
    "finetune.image_size=8",
    "finetune.epochs=2",
    "finetune.per_budget={}",
    "baseline.image_size=8",
    "baseline.epochs=2",
    "baseline.per_budget={}",
    "distill.image_size=8",
    "distill.epochs=0.2",
    "distill.per_budget={}",
    "evaluate.image_size=8",
]


@pytest.fixture
def tiny_run(tmp_path) -> list[str]:
    """`--set` overrides of the quickstart for a fast run whose outputs land in `tmp_path/runs`."""
    return [*TINY_RUN, f"runs_dir={tmp_path / 'runs'}"]
