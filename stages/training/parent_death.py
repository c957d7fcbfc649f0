"""A process that stops when the process that started it dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG).

Used twice: `simclrv2 run` starts each launched stage this way (pipeline/die_with_parent.py), and every worker that
`accelerate launch` starts asks for it too, since torch starts its workers in sessions of their own where nothing
else would stop them if their launcher were killed. A worker left behind would train on unwatched, keep its GPU, and
write into a stage directory that the next run of the experiment owns.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
TORCHRUN_WORKER = "TORCHELASTIC_RUN_ID"  # set by torch's launcher in every worker's environment


def stop_with_parent(parent: int, sent: signal.Signals = signal.SIGTERM) -> bool:
    """Have the kernel send `sent` to this process when its parent dies; False when `parent` is gone already (it
    died before the request, which then never fires). Elsewhere than Linux: True, and nothing is asked."""
    if not sys.platform.startswith("linux"):
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sent), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent


def stop_with_launcher() -> None:
    """In a worker of `accelerate launch`: stop when the launcher dies; exit at once if it is already gone."""
    if TORCHRUN_WORKER not in os.environ:
        return
    stop_with_parent(os.getppid())
    if os.getppid() == 1:  # the launcher died before the request: adopted by init, no signal would come
        sys.exit("the launcher of this worker is gone; stopping")
