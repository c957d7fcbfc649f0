"""One other machine's share of a training stage on several machines: the flow a Prefect worker there runs.

The pipeline's flow runs rank 0 itself and starts ranks 1.. as flow runs of this flow's deployment (prefect.yaml,
`launch.rank_deployment`); see pipeline/machines.py. Each runs the same `accelerate launch` command as rank 0 with its
own `--machine_rank`, so its processes join rank 0's at `main_process_ip:main_process_port`.

Its parameters come from whoever reaches the Prefect API, so it trusts none of them as a command: it loads the run's
config file and overrides as any deployment run does (pipeline/deployment_inputs.py), builds the stage itself, and
runs it only when it is a training stage whose fingerprint and directory match what rank 0 computed.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from pipeline.config.loading import shortened
from pipeline.deployment_inputs import RequestRefused, load_deployment_request
from pipeline.launcher import launch_command, launch_env, run_launched
from pipeline.plan import TRAINING_STAGES, build_plan, input_paths

RANK_FLOW = "simclrv2-stage-rank"


@flow(name=RANK_FLOW)
def stage_rank(
    config: str | None, overrides: list[str], stage: str, fingerprint: str, out_dir: str, machine_rank: int
) -> None:
    """Run the processes of machine `machine_rank` of stage instance `stage` under `accelerate launch` until they end.

    config, overrides: the run's, as rank 0 loaded them; fingerprint, out_dir: what rank 0 made of them. A failure, a
    timeout (launch.stage_timeout), or cancelling this flow run kills every process it started."""
    logger = get_run_logger()
    command, env, timeout = rank_command(config, overrides, stage, fingerprint, out_dir, machine_rank)
    logger.info("%s: machine rank %d", stage, machine_rank)
    run_launched(command, env, logger.info, timeout)


def rank_command(
    config: str | None, overrides: list[str], stage: str, fingerprint: str, out_dir: str, machine_rank: int
) -> tuple[list[str], dict[str, str], float]:
    """The `accelerate launch` command of machine `machine_rank`, its environment and its timeout, built here from the
    run's config; `RequestRefused` for anything but a training stage that this machine computes as rank 0 did."""
    cfg = load_deployment_request(config, overrides)
    plan = build_plan(cfg)
    if stage not in plan or plan[stage].module not in TRAINING_STAGES:
        trained = ", ".join(name for name, run in plan.items() if run.module in TRAINING_STAGES)
        raise RequestRefused(f"stage {shortened(stage)}: not a training stage of {cfg.experiment!r} ({trained})")
    if not 1 <= machine_rank < cfg.launch.num_machines:
        last = cfg.launch.num_machines - 1
        raise RequestRefused(f"machine_rank {machine_rank}: must be 1..{last} (launch.num_machines - 1)")
    run = plan[stage]
    if run.fingerprint != fingerprint or run.out_dir.resolve() != Path(out_dir).resolve():
        raise RequestRefused(
            f"{stage}: this machine makes it {run.out_dir} but rank 0 made it {out_dir}: the checkouts (code, config "
            "files) or the data differ between the machines, or runs_dir is relative; use the same checkout and an "
            "absolute runs_dir on a filesystem every machine sees"
        )
    launch = cfg.launch.model_copy(update={"machine_rank": machine_rank})
    command = launch_command(run.module, run.config, input_paths(plan, run), run.out_dir, launch)
    return command, launch_env(launch), launch.stage_timeout
