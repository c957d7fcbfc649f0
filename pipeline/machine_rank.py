"""One other machine's share of a training stage on several machines: the flow a Prefect worker there runs.

The pipeline's flow runs rank 0 itself and starts ranks 1.. as flow runs of this flow's deployment (prefect.yaml,
`launch.rank_deployment`); see pipeline/machines.py. Each runs the same `accelerate launch` command as rank 0 with its
own `--machine_rank`, so its processes join rank 0's at `main_process_ip:main_process_port`. Kept free of the
pipeline's heavier imports: a worker starts it for every stage.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from pipeline.config import LaunchConfig
from pipeline.launcher import launch_command_from_json, launch_env, run_launched

RANK_FLOW = "simclrv2-stage-rank"


@flow(name=RANK_FLOW)
def stage_rank(
    module: str, config_json: str, inputs: dict[str, str], out_dir: str, launch: dict, machine_rank: int
) -> None:
    """Run `stages.<module>`'s processes of machine `machine_rank` under `accelerate launch` until they finish.

    launch: the experiment's `launch` section (its JSON form); config_json: the stage's whole config. A failure, or
    cancelling this flow run, kills every process it started (pipeline/launcher.py)."""
    logger = get_run_logger()
    logger.info("%s: machine rank %d of %d", module, machine_rank, launch["num_machines"])
    run_launched(*rank_command(module, config_json, inputs, out_dir, launch, machine_rank), logger.info)


def rank_command(
    module: str, config_json: str, inputs: dict[str, str], out_dir: str, launch: dict, machine_rank: int
) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command of machine `machine_rank`, and its environment, from the flow's parameters."""
    rank_launch = LaunchConfig.model_validate({**launch, "machine_rank": machine_rank})
    paths = {name: Path(path) for name, path in inputs.items()}
    return launch_command_from_json(module, config_json, paths, Path(out_dir), rank_launch), launch_env(rank_launch)
