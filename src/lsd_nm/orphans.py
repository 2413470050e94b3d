"""Helper processes that do not outlive the process they work for (after a ``kill -9``, an OOM kill, a closed ssh
session).

Two means, both per process: :func:`die_with_parent` asks Linux to kill this process when its parent *thread* ends
(``prctl(PR_SET_PDEATHSIG)``; safe only where the parent started it from a thread that lives as long as the parent
does, e.g. its main thread); :func:`watch` runs a daemon thread that calls back once a given process is gone (any
ancestor, whichever thread started us).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent thread ends."""


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when the thread that started it ends (at once, if the parent
    is gone already).

    Args:
        sig: the signal (SIGKILL: nothing of this process runs after its parent is gone).

    Returns:
        Whether it is in place (False where prctl is missing: not Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        done = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if done and os.getppid() != parent:  # the parent died before prctl: the signal will never come
        os.kill(os.getpid(), sig)
    return done


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs; a zombie (dead, not yet reaped by its parent) does not.

    Args:
        pid: the process id.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux), or gone meanwhile (the next look tells)
        return True
    return stat[stat.rindex(")") + 2] not in "ZX"  # the state follows "pid (comm) "


def watch(pid: int, on_death: Callable[[], None], interval: float = 0.5) -> threading.Thread:
    """Call ``on_death()`` from a daemon thread of this process as soon as process ``pid`` is gone.

    Args:
        pid: the process to watch.
        on_death: what to do then (typically end this process with :func:`os._exit`).
        interval: seconds between two looks.

    Returns:
        The (started) watching thread.
    """

    def run() -> None:
        while is_alive(pid):
            time.sleep(interval)
        on_death()

    thread = threading.Thread(target=run, name=f"watch-{pid}", daemon=True)
    thread.start()
    return thread
