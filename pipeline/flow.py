"""The Prefect flow: one task per stage instance, skipping what the run store already holds.

    simclrv2 run                                   # the quickstart, through this flow
    prefect deployment run 'simclrv2-pipeline/quickstart' --param force=finetune

Each task runs its stage in this process (one process) or under `accelerate launch` (several, see
pipeline/launcher.py; on several machines, ranks 1.. run on the other machines' Prefect workers, see
pipeline/machines.py), forwards the stage's log lines into the Prefect run log, shows training progress as a
progress artifact and the stage's metrics as a table artifact, then writes the stage's manifest. A task that fails
is retried once when a retry can fix it (a lost process, out of memory on a busy GPU; stages resume from their last
checkpoint, so a retry costs little), never for a mistake in the input (pipeline/failures.py). A failed run ends with
one line naming the stage and the culprit: the flow run's state message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment as this_deployment

from pipeline.config import ExperimentConfig, LaunchConfig
from pipeline.deployment_inputs import (
    ConfigRequest,
    RequestRefused,
    check_wait,
    load_cli_request,
    load_deployment_request,
)
from pipeline.failures import PipelineFailed, retry_only_crashes
from pipeline.launcher import run_in_process, run_stage
from pipeline.machines import run_on_machines
from pipeline.manifest import is_complete, read_manifest, write_manifest
from pipeline.plan import REPORT, TRAINING_STAGES, Plan, StageRun, build_plan, downstream, input_paths, select
from pipeline.preflight import check_upstream, preflight
from pipeline.store import device_info, experiment_lock
from reports import ReportSettings, build_report
from stages.training.checkpoints import flat_config

FLOW_NAME = "simclrv2-pipeline"
REPORT_MARKDOWN, REPORT_HTML = "report.md", "report.html"
PROGRESS = re.compile(r"step (\d+)/(\d+)")
# Accelerate keeps one process-wide state, so in-process stages take turns; launched ones could overlap, but they
# would share the same GPUs and rendezvous port, so they take turns too.
_ONE_STAGE_AT_A_TIME = threading.Lock()


def parse_names(names: str | list[str] | None) -> list[str]:
    """Stage names from a parameter: a list, or one comma-separated string (handy with `--param force=a,b`)."""
    if not names:
        return []
    items = names.split(",") if isinstance(names, str) else names
    return [item.strip() for item in items if item.strip()]


@flow(name=FLOW_NAME)
def simclrv2_pipeline(
    config: str | None = None,
    overrides: list[str] | None = None,
    only: str | list[str] | None = None,
    force: str | list[str] | None = None,
    wait_for_lock: float = 0.0,
    experiment: ExperimentConfig | None = None,
) -> str:
    """Run the experiment of `config` (a YAML path; None: configs/quickstart.yaml) with `--set`-style `overrides`.

    only: run just these stages (e.g. "finetune" or "finetune[10pct]"), from existing upstream artifacts.
    force: rerun these stages and everything downstream of them, even if finished.
    wait_for_lock: seconds to wait when another run of the same experiment holds it (0: stop at once).
    experiment: `config` with `overrides` already validated (`simclrv2 run` checks it before the flow starts), so
    that it is not loaded twice; None (deployments): load it here.

    A deployment run takes its parameters from whoever reaches the Prefect API: it reads configs from the checkout
    only and its overrides change no path and no launch command (pipeline/deployment_inputs.py)."""
    request = ConfigRequest.of(config, overrides, deployment=this_deployment.id is not None)
    cfg = _requested_config(request, wait_for_lock, experiment)
    plan = build_plan(cfg)
    targets = select(plan, parse_names(only)) if only else set(plan)
    forced = downstream(plan, select(plan, parse_names(force))) & targets if force else set()
    logger = get_run_logger()
    with experiment_lock(cfg.runs_dir, cfg.experiment, timeout=wait_for_lock):
        if experiment is None:  # a deployment: `simclrv2 run` checked all this before Prefect started
            preflight(cfg, plan, targets, forced)
        else:
            check_upstream(plan, targets, forced)
        for name in sorted(forced):
            logger.info("--force: removing %s to rerun %s", plan[name].out_dir, name)
            shutil.rmtree(plan[name].out_dir, ignore_errors=True)
        futures = {}
        for name, run in plan.items():
            if name in targets:
                waits = [futures[u] for u in run.upstream if u in futures]
                futures[name] = stage_task.with_options(task_run_name=name).submit(
                    plan, name, cfg.launch, request, wait_for=waits
                )
        for name, future in futures.items():  # in dependency order: the first failure is the upstream one
            try:
                future.result()
            except Exception as error:
                raise PipelineFailed(name, error) from error  # its message: the failed run's one line
    logger.info("report: %s", report_path(plan))
    return str(report_path(plan))


def _requested_config(
    request: ConfigRequest, wait_for_lock: float, experiment: ExperimentConfig | None
) -> ExperimentConfig:
    """The run's config: in a deployment run, only what its caller may ask (pipeline/deployment_inputs.py)."""
    if this_deployment.id is None:
        return experiment if experiment is not None else load_cli_request(request.config, request.overrides)
    if experiment is not None:
        raise RequestRefused("experiment: not a deployment parameter; pass `config` (a file in configs/), `overrides`")
    check_wait(wait_for_lock)
    return load_deployment_request(request.config, request.overrides)


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, retry_condition_fn=retry_only_crashes)
def stage_task(plan: Plan, name: str, launch: LaunchConfig, request: ConfigRequest) -> dict:
    """Run one stage instance unless the store holds it; write its manifest; publish its metrics."""
    run, logger = plan[name], get_run_logger()
    if is_complete(run.out_dir):
        logger.info("%s is done (%s): skipped", name, run.out_dir)
        return read_manifest(run.out_dir)["metrics"]
    with _ONE_STAGE_AT_A_TIME, stage_logs_to(logger, name) as on_line:
        start = time.perf_counter()
        metrics = execute(plan, run, launch, on_line, request)
        wall = time.perf_counter() - start
    launched = launch.num_processes > 1 and run.module in TRAINING_STAGES
    devices = device_info(
        launch.num_processes if launched else 1, launch.num_machines if launched else 1, launch.use_cpu
    )
    write_manifest(
        run.out_dir,
        stage=name,
        fingerprint=run.fingerprint,
        config=_plain(run.config),
        inputs={
            key: {"path": str(path), "fingerprint": plan[run.inputs[key].run].fingerprint}
            for key, path in input_paths(plan, run).items()
        },
        metrics=metrics,
        wall_seconds=wall,
        devices=devices,
        code_version=run.code_version,
    )
    create_table_artifact(
        [{"metric": key, "value": value} for key, value in flat_config(metrics).items()],
        key=_artifact_key(name),
        description=f"metrics of {name} ({run.out_dir})",
    )
    logger.info("%s finished in %.1f s: %s", name, wall, run.out_dir)
    return metrics


def execute(plan: Plan, run: StageRun, launch: LaunchConfig, on_line: Any, request: ConfigRequest) -> dict:
    inputs = input_paths(plan, run)
    if run.module == REPORT:
        settings = ReportSettings.from_config(run.config, run.config["dataset"])
        metrics = build_report({name: plan[name].out_dir for name in run.upstream}, run.out_dir, settings)
        publish_report(run.out_dir, metrics)
        return metrics
    if run.module in TRAINING_STAGES and launch.num_machines > 1:
        return run_on_machines(run, inputs, launch, on_line, request)
    if run.module in TRAINING_STAGES:
        return run_stage(run.module, run.config, inputs, run.out_dir, launch, on_line)
    # cheap stages: one process is enough
    return run_in_process(run.module, run.config, inputs, run.out_dir, launch.stage_timeout)


@contextlib.contextmanager
def stage_logs_to(logger: logging.LoggerAdapter, name: str) -> Iterator[Any]:
    """Forward the `stages` loggers (in-process) and the output lines (launched) to the Prefect run log, and turn
    "step N/M" messages into a progress artifact."""
    progress = Progress(name)

    def on_line(line: str) -> None:
        logger.info(line)
        progress.update_from(line)

    handler = _ForwardingHandler(on_line)
    stages_logger = logging.getLogger("stages")
    stages_logger.addHandler(handler)
    try:
        yield on_line
    finally:
        stages_logger.removeHandler(handler)


class _ForwardingHandler(logging.Handler):
    def __init__(self, on_line: Any) -> None:
        super().__init__(logging.INFO)
        self.on_line = on_line

    def emit(self, record: logging.LogRecord) -> None:
        self.on_line(f"{record.name}: {record.getMessage()}")


class Progress:
    """A Prefect progress artifact for one stage, created at its first "step N/M" and updated at most every 2%."""

    def __init__(self, name: str) -> None:
        self.name, self.artifact, self.shown = name, None, -1.0

    def update_from(self, line: str) -> None:
        match = PROGRESS.search(line)
        if not match:
            return
        percent = 100 * int(match[1]) / max(int(match[2]), 1)
        if self.artifact is None:
            self.artifact = create_progress_artifact(percent, description=f"{self.name} training steps")
        elif percent - self.shown >= 2 or percent == 100:
            update_progress_artifact(self.artifact, percent)
        else:
            return
        self.shown = percent


def _plain(config: Any) -> Any:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config


def _artifact_key(name: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return "simclrv2-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def publish_report(report_dir: Path, metrics: dict) -> None:
    """The label-budget report on the flow run: its Markdown, and its table with every number."""
    create_markdown_artifact(
        (report_dir / REPORT_MARKDOWN).read_text(), key="simclrv2-label-budget-report", description=metrics["headline"]
    )
    create_table_artifact(metrics["rows"], key="simclrv2-label-budget-table", description="every number of the report")
    create_table_artifact(metrics["compute"], key="simclrv2-compute-cost", description="compute cost per stage")


def report_path(plan: Plan) -> Path:
    return plan[REPORT].out_dir / REPORT_HTML
