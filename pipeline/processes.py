"""Process groups on this host: whether one still runs. Launched stages run in a group of their own (pipeline/
launcher.py), and the run lock counts one that outlived its launcher as still running (pipeline/store.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def group_running(group: int) -> bool:
    """Whether a process of `group` still runs. Zombies (dead workers that an init process has yet to reap, which
    some container inits never do) do not count."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    if not os.path.isdir("/proc"):
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]  # after "pid (comm)"
            if int(pgrp) == group and state not in ("Z", "X"):
                return True
    return False
