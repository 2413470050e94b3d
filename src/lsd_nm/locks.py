"""Locks that keep two processes from writing one thing: a run's ``out_file``, a network folder in training.

A lock is a file ``<name>.lock`` holding ``pid host start``, created atomically (``O_EXCL``). A second process stops
with one line naming the holder; the lock of a process of this machine that no longer runs (killed) is taken over
with a note. A lock held on another host cannot be checked from here: it is refused, and the message says how to
clear it if that run is gone.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .orphans import is_alive


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says."""

    pid: str
    host: str
    since: str

    @property
    def gone(self) -> bool:
        """The holder is a process of this machine that no longer runs (killed): its lock may be taken over."""
        return self.host == socket.gethostname() and self.pid.isdigit() and not is_alive(int(self.pid))

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host} since {self.since}"


def lock_holder(path: Path) -> Holder | None:
    """The holder written in the lock file ``path`` (None: no lock there, or not one of ours)."""
    try:
        owner = Path(path).read_text().split(" ", 2)
    except OSError:
        return None
    return Holder(*owner) if len(owner) == 3 else None


@contextmanager
def hold_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs.

    Args:
        path: the lock file (its folder is created).
        busy: what is locked, as the refusal names it (e.g. ``"'out.zarr' is being written"``).

    Raises:
        ConfigError: another live process (or one on another host) holds the lock.
    """
    path = Path(path)
    mine = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = "a file is in the way of its folder" if isinstance(e, FileExistsError) else e.strerror
        raise ConfigError(f"cannot write the lock {path} ({reason}): its folder must be writable") from None
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(path)
            if holder is None and not path.exists():  # released meanwhile: try again
                continue
            if holder is not None and holder.gone:
                print(f"note: taking over the lock {path} of process {holder.pid} (started {holder.since}), which no "
                      "longer runs", file=sys.stderr)  # fmt: skip
                path.unlink(missing_ok=True)
                continue
            who = holder or "another process"
            raise ConfigError(f"{busy} by {who} (lock {path}); wait for it to finish, or delete the lock if that run "
                              "is gone") from None  # fmt: skip
        except OSError as e:  # a read-only mount, a full disk, no permission: nothing can be written there
            raise ConfigError(f"cannot write the lock {path} ({e.strerror}): its folder must be writable") from None
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        break
    me = os.getpid()
    try:
        yield
    finally:
        try:  # (a process forked meanwhile leaving this block does not release its parent's lock)
            if os.getpid() == me and path.read_text() == mine:
                path.unlink()
        except FileNotFoundError:
            pass
