"""`python -m pipeline.die_with_parent PARENT_PID COMMAND...`: run COMMAND so that it gets SIGTERM when its parent
dies, even by SIGKILL (stages/training/parent_death.py; the request survives the exec).

A launched stage runs in a process group of its own, so that stopping it reaches every worker; but then nothing
stops it when `simclrv2 run` itself is killed, and it would train on, unwatched, holding the GPUs. `accelerate
launch` stops its workers when it gets SIGTERM. Elsewhere than Linux the command just runs.
"""

from __future__ import annotations

import os
import sys

from stages.training.parent_death import stop_with_parent


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    if not stop_with_parent(parent):
        sys.exit(f"pipeline.die_with_parent: the launching process {parent} is gone; not starting {command[0]}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
