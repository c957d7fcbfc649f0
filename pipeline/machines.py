"""A training stage on several machines: rank 0 on the flow's own machine, ranks 1.. on the other machines' Prefect
workers, as flow runs of `launch.rank_deployment` (pipeline/machine_rank.py).

Why Prefect workers: the user already runs Prefect, so one worker per machine (`prefect worker start --pool ...
--limit 1`, started once) is all it takes, and nothing has to be started by hand per stage. `--limit 1` makes a
worker take one rank at a time. Every rank runs the same `accelerate launch` command with its own `--machine_rank`;
torch's rendezvous at `main_process_ip:main_process_port` joins them.

The stage succeeds only when every rank does. When a rank fails, is cancelled or finds no worker in time, rank 0's
processes are killed; when rank 0 fails or its task is cancelled, the other ranks' flow runs are cancelled (their
workers then kill them). Either way the stage fails with one message naming the rank.

Assumed, as for `accelerate launch` on several machines: the runs directory is on a filesystem every machine sees
(the main process writes checkpoints and weights, every process reads them back), and the code and data paths are
the same on every machine.
"""

from __future__ import annotations

import contextvars
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from pipeline.config import LaunchConfig
from pipeline.deployment_inputs import ConfigRequest, load_deployment_request
from pipeline.launcher import StageFailed, launch_command, launch_env, run_launched
from pipeline.plan import StageRun

POLL_SECONDS = 2.0
FINISH_WAIT_SECONDS = 120.0  # after rank 0 ends well, the others only have to exit
CANCEL_WAIT_SECONDS = 60.0  # Prefect's worker: SIGTERM, then SIGKILL after its 30 s grace period
NOT_STARTED = (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED)


@dataclass(frozen=True)
class RankRun:
    rank: int
    flow_run_id: UUID
    name: str


class RankRuns:
    """Ranks 1.. of one stage as flow runs of the rank deployment: start them, read their states, cancel them."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.runs: list[RankRun] = []
        self.worker_command = "prefect worker start --pool <pool> --limit 1"  # what serves them (for messages)

    def check_deployment(self) -> None:
        """One clear error when the Prefect server this flow talks to does not know the rank deployment."""
        with get_client(sync_client=True) as client:
            try:
                deployment = client.read_deployment_by_name(self.deployment)
            except ObjectNotFound:
                raise StageFailed(
                    f"launch.rank_deployment: no deployment {self.deployment!r} on the Prefect server at "
                    f"{client.api_url}: register it with `prefect deploy --all` in the checkout (prefect.yaml), run "
                    "the flow against that server (PREFECT_API_URL), and start a worker on each other machine "
                    "(README: Several machines)"
                ) from None
        pool, queue = deployment.work_pool_name, deployment.work_queue_name
        self.worker_command = f"prefect worker start --pool {pool} --work-queue {queue} --limit 1"

    def start(self, rank: int, parameters: dict[str, Any], name: str) -> RankRun:
        flow_run = run_deployment(
            self.deployment, parameters=parameters, flow_run_name=name, timeout=0, tags=["simclrv2-rank"]
        )
        run = RankRun(rank, flow_run.id, name)
        self.runs.append(run)
        return run

    def states(self) -> dict[RankRun, State]:
        with get_client(sync_client=True) as client:
            return {run: client.read_flow_run(run.flow_run_id).state for run in self.runs}

    def cancel_unfinished(self) -> None:
        """Cancel every rank that has not ended: one still waiting for a worker at once, a running one through its
        worker (which kills its processes)."""
        with get_client(sync_client=True) as client:
            for run in self.runs:
                state = client.read_flow_run(run.flow_run_id).state
                if state is None or state.is_final():
                    continue
                new = Cancelled if state.type in NOT_STARTED else Cancelling
                client.set_flow_run_state(run.flow_run_id, new(message="another rank of the stage failed"), force=True)


def run_on_machines(
    run: StageRun,
    inputs: Mapping[str, Path],
    launch: LaunchConfig,
    on_line: Callable[[str], None],
    request: ConfigRequest,
    ranks: RankRuns | None = None,
) -> dict:
    """Run stage instance `run` on `launch.num_machines` machines (rank 0 here); return its metrics.

    request: the config file and overrides of the run, which every other machine loads again and checks as it does
    any deployment run's (pipeline/machine_rank.py); ranks: where ranks 1.. run (default: flow runs of
    `launch.rank_deployment`)."""
    check_rank_zero_is_here(launch.main_process_ip or "")
    load_deployment_request(request.for_other_machines(), request.overrides)  # what the ranks will refuse, now
    ranks = ranks or RankRuns(launch.rank_deployment or "")
    ranks.check_deployment()
    stage = f"{run.name} on {launch.num_machines} machines"
    watch = RankWatch(ranks, launch.rank_start_timeout)
    try:
        for rank in range(1, launch.num_machines):
            started = ranks.start(rank, rank_parameters(run, request, rank), f"{run.name} rank {rank}")
            on_line(f"{stage}: rank {rank} is flow run {started.name!r} ({started.flow_run_id}) of {ranks.deployment}")
        rank_zero = launch.model_copy(update={"machine_rank": 0})
        command = launch_command(run.module, run.config, inputs, run.out_dir, rank_zero)
        with watch:
            run_launched(command, launch_env(launch), on_line, launch.stage_timeout, stop=watch.stopped)
        wait_for_ranks(ranks, FINISH_WAIT_SECONDS)
    except BaseException as error:
        stopped = _cancel_quietly(ranks)
        if isinstance(error, StageFailed):
            failed = StageFailed(f"{stage} failed: {_cause(error, watch)}\n{stopped}", error.code, error.tail)
            failed.timed_out = error.timed_out
            raise failed from error
        raise
    return json.loads((Path(run.out_dir) / "metrics.json").read_text())


class RankFailed(StageFailed):
    """A rank other than 0 failed (the message names it)."""


def _cause(error: StageFailed, watch: RankWatch) -> str:
    """Which rank broke the stage: another rank (watched, or found after rank 0 ended) or rank 0 itself."""
    if watch.problem:
        return f"{watch.problem}; rank 0 was stopped"
    return str(error) if isinstance(error, RankFailed) else f"rank 0 (this machine) {error}"


def rank_parameters(run: StageRun, request: ConfigRequest, rank: int) -> dict[str, Any]:
    """The rank flow's parameters: the run's config file and overrides, and what rank 0 made of them (the stage's
    fingerprint and directory), which the rank checks against its own reading."""
    return {
        "config": request.for_other_machines(),
        "overrides": list(request.overrides),
        "stage": run.name,
        "fingerprint": run.fingerprint,
        "out_dir": str(run.out_dir),
        "machine_rank": rank,
    }


def check_rank_zero_is_here(address: str) -> None:
    """Rank 0's processes listen on `main_process_ip`, so the flow has to run on the machine that has it."""
    try:
        family, kind, _, _, socket_address = socket.getaddrinfo(address, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.bind(socket_address)
    except OSError:
        raise StageFailed(
            f"launch.main_process_ip {address!r} is not an address of this machine ({socket.gethostname()}), which "
            "runs rank 0 of every stage on several machines: run the flow on that machine (its worker alone serves "
            "the pool's default queue), or set launch.main_process_ip to this machine's address"
        ) from None


def rank_problem(
    states: Mapping[RankRun, State | None], waited: float, start_timeout: float, worker_command: str
) -> str | None:
    """Why the stage cannot succeed any more, or None: a rank ended without completing, or never found a worker."""
    for run, state in sorted(states.items(), key=lambda item: item[0].rank):
        if state is None:
            continue
        if (state.is_final() and state.type != StateType.COMPLETED) or state.type == StateType.CANCELLING:
            message = f": {state.message}" if state.message else ""
            return f"rank {run.rank} (flow run {run.name!r}, {run.flow_run_id}) ended {state.name}{message}"
        if state.type in NOT_STARTED and waited > start_timeout:
            return (
                f"rank {run.rank} (flow run {run.name!r}) found no free worker in {start_timeout:g} s "
                f"(launch.rank_start_timeout): start `{worker_command}` on each other machine"
            )
    return None


def all_completed(states: Mapping[RankRun, State | None]) -> bool:
    return all(state is not None and state.type == StateType.COMPLETED for state in states.values())


def wait_for_ranks(ranks: RankRuns, limit: float) -> None:
    """Wait until every rank has completed; RankFailed when one did not, or is still running after `limit` s."""
    deadline = time.monotonic() + limit
    while True:
        states = ranks.states()
        if all_completed(states):
            return
        problem = rank_problem(states, 0.0, float("inf"), ranks.worker_command)
        if problem:
            raise RankFailed(problem)
        if time.monotonic() > deadline:
            running = ", ".join(f"rank {run.rank} {state.name if state else '?'}" for run, state in states.items())
            raise RankFailed(f"rank 0 finished, but after {limit:g} s the other ranks have not ({running})")
        time.sleep(POLL_SECONDS)


class RankWatch:
    """While rank 0 runs, polls ranks 1..; on the first problem records it and sets `stopped` (which kills rank 0)."""

    def __init__(self, ranks: RankRuns, start_timeout: float) -> None:
        self.ranks, self.start_timeout = ranks, start_timeout
        self.problem: str | None = None
        self.stopped = threading.Event()
        self._done = threading.Event()
        # The Prefect settings in effect (the API URL) live in context variables: the thread gets a copy.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._watch,), daemon=True)

    def __enter__(self) -> RankWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        started = time.monotonic()
        while not self._done.wait(POLL_SECONDS):
            try:
                states = self.ranks.states()
            except Exception:  # the server is briefly unreachable: rank 0 goes on, the final wait will tell
                continue
            waited = time.monotonic() - started
            self.problem = rank_problem(states, waited, self.start_timeout, self.ranks.worker_command)
            if self.problem:
                self.stopped.set()
                return


def _cancel_quietly(ranks: RankRuns) -> str:
    """Cancel the ranks still running and wait for them to end; a line saying what became of them. Never raises: it
    runs while another error is on its way out."""
    try:
        ranks.cancel_unfinished()
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while True:
            states = ranks.states()
            if all(state is None or state.is_final() for state in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS / 2)
        ends = ", ".join(f"rank {run.rank} {state.name if state else '?'}" for run, state in states.items())
        return f"the other ranks now: {ends or 'none started'}"
    except Exception as error:
        return f"could not cancel the other ranks ({error!r}); cancel their flow runs in the Prefect UI"
