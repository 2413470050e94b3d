"""The processes of a run, found by process group: a run started with ``start_new_session=True`` leads its own group,
and every process it starts (workers, their helpers) stays in it, also when re-parented after the leader's death."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def group_members(pgid: int) -> list[str]:
    """The live processes (not zombies) of process group ``pgid``, each as ``"pid command line"``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses, so split after the last ")"
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(f"{entry.name} {cmdline}")
    return members


def wait_until_gone(pgid: int, seconds: float) -> list[str]:
    """Wait up to ``seconds`` for process group ``pgid`` to be empty; returns what is still alive then."""
    deadline = time.monotonic() + seconds
    while (alive := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of process group ``pgid`` (a test's cleanup)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
