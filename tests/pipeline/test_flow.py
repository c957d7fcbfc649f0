"""The Prefect flow on real digits: runs every stage, skips finished ones, reruns forced ones and their dependents."""

import json

import pytest

from pipeline.config import load_config
from pipeline.flow import simclrv2_pipeline
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan
from pipeline.preflight import UpstreamMissing
from tests.pipeline.conftest import TINY_RUN


def manifest_times(overrides: list[str]) -> dict[str, int]:
    plan = build_plan(load_config(None, overrides))
    return {name: (run.out_dir / "manifest.json").stat().st_mtime_ns for name, run in plan.items()}


@pytest.mark.slow
def test_flow_runs_skips_and_reruns_what_depends_on_a_forced_stage(tiny_run):
    report = simclrv2_pipeline(None, tiny_run)
    plan = build_plan(load_config(None, tiny_run))
    assert set(plan) == {
        "subsets", "pretrain", "evaluate", "report",
        "baseline[20labels]", "baseline[100labels]", "finetune[20labels]", "finetune[100labels]",
        "distill[20labels]", "distill[100labels]", "predict",
    }  # fmt: skip
    for name, run in plan.items():
        manifest = read_manifest(run.out_dir)
        assert manifest["stage"] == name and manifest["fingerprint"] == run.fingerprint
    table = (plan["report"].out_dir / "report.csv").read_text()
    finetune = read_manifest(plan["finetune[20labels]"].out_dir)["metrics"]
    assert f"{finetune['test_top1']}" in table
    assert report.endswith("report.html")
    first = manifest_times(tiny_run)

    simclrv2_pipeline(None, tiny_run)  # everything is done: nothing reruns
    assert manifest_times(tiny_run) == first

    simclrv2_pipeline(None, tiny_run, force="finetune[20labels]")
    again = manifest_times(tiny_run)
    rerun = {name for name in first if again[name] != first[name]}
    assert rerun == {"finetune[20labels]", "distill[20labels]", "report"}


@pytest.mark.slow
def test_only_needs_finished_upstream_stages(tiny_run):
    with pytest.raises(UpstreamMissing, match=r"finetune\[20labels\] needs .*--only"):
        simclrv2_pipeline(None, tiny_run, only="finetune[20labels]")
    simclrv2_pipeline(None, tiny_run, only="subsets,pretrain")
    simclrv2_pipeline(None, tiny_run, only="finetune[20labels]")
    plan = build_plan(load_config(None, tiny_run))
    done = {name for name, run in plan.items() if (run.out_dir / "manifest.json").exists()}
    assert done == {"subsets", "pretrain", "finetune[20labels]"}
    metrics = json.loads((plan["finetune[20labels]"].out_dir / "metrics.json").read_text())
    assert metrics["initialization"] == "pretrain"


@pytest.mark.slow
def test_logging_settings_reuse_every_stage_and_the_temperature_reruns_pretraining_onwards(tiny_run):
    simclrv2_pipeline(None, tiny_run)
    first = manifest_times(tiny_run)

    logging_only = [*tiny_run, "pretrain.log_every=3", "finetune.tensorboard=true", "distill.checkpoint_every=7"]
    simclrv2_pipeline(None, logging_only)
    assert manifest_times(logging_only) == first  # the same directories, none rewritten

    warmer = [*tiny_run, "pretrain.temperature=0.3"]
    simclrv2_pipeline(None, warmer)
    again = manifest_times(warmer)
    kept = {name for name in first if again[name] == first[name]}
    assert kept == {"subsets", "baseline[20labels]", "baseline[100labels]"}


@pytest.mark.slow
def test_several_subset_seeds_run_and_report_their_mean(tmp_path):
    overrides = [
        *(item for item in TINY_RUN if not item.startswith("budgets")),
        f"runs_dir={tmp_path / 'runs'}",
        "budgets=[20]",
        "subset_seeds=[0, 1]",
        "predict.enabled=false",
    ]
    simclrv2_pipeline(None, overrides)
    plan = build_plan(load_config(None, overrides))
    assert {"subsets[s0]", "subsets[s1]", "finetune[20labels-s1]", "distill[20labels-s0]"} <= set(plan)
    subsets = [read_manifest(plan[f"subsets[s{seed}]"].out_dir)["metrics"] for seed in (0, 1)]
    first, second = (json.loads((plan[f"subsets[s{s}]"].out_dir / "20labels.json").read_text()) for s in (0, 1))
    assert first["indices"] != second["indices"] and subsets[0]["num_labels"] == subsets[1]["num_labels"]
    markdown = (plan["report"].out_dir / "report.md").read_text()
    assert "## Across subset seeds" in markdown and "20 labels (seed 1)" in markdown
