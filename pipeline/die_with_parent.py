"""`python -m pipeline.die_with_parent PARENT_PID COMMAND...`: run COMMAND so that it gets SIGTERM when its parent
dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG, which survives the exec).

A launched stage runs in a process group of its own, so that stopping it reaches every worker; but then nothing
stops it when `simclrv2 run` itself is killed, and it would train on, unwatched, holding the GPUs. `accelerate
launch` stops its workers when it gets SIGTERM. Elsewhere than Linux the command just runs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the prctl: no signal would ever come
            sys.exit(f"pipeline.die_with_parent: the launching process {parent} is gone; not starting {command[0]}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
