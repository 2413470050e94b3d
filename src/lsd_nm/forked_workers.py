"""Local blockwise workers forked from a warm process (Linux): a worker's start-up cut to a fork.

daisy 2 starts every worker as a fresh interpreter (``python -m daisy._subprocess_worker``: its scheduler runs Rust
threads, so it cannot fork). A worker of ours then imports numpy, zarr, pydantic, scipy, scikit-image or waterz again
before its first block: 0.5-1.5 s per worker and step, the driver idle meanwhile (with 12 blocks of a few tenths of
a second each, more than the blocks themselves).

Here the step's driver forks a **zygote** (:class:`Zygote`) *before* daisy's scheduler starts, when forking is
safe. The zygote holds every module the driver imported, imports the step's ``preload`` modules while daisy starts,
and listens on a Unix socket (Linux abstract namespace, private to the run). Each worker daisy spawns is a thin
**proxy** (:class:`Proxy`, this module imports only the standard library): it hands its ``DAISY_CONTEXT`` and its
stdout/stderr (the worker's log files) to the zygote, which forks the real worker from its warm state; the worker runs
the usual block loop (``lsd_nm.blockwise._loop_over_blocks``) and the proxy exits with the worker's exit status, so
daisy's retries, worker restarts, block time-outs (the watchdog sits in the worker's ``daisy.Client``) and per-worker
logs work as with plain spawned workers.

Nothing outlives the driver: the zygote dies with the driver's thread that forked it, a worker with the zygote
(``prctl(PR_SET_PDEATHSIG)``, :mod:`lsd_nm.orphans`), and a worker whose proxy is gone is killed.
"""

from __future__ import annotations

import importlib
import os
import secrets
import select
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .orphans import die_with_parent

_STATUS = struct.Struct("<i")


def available() -> bool:
    """Whether workers can be forked from a zygote here (Linux: abstract Unix sockets, prctl, fork)."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


class Proxy:
    """What daisy runs in each of its worker processes: asks the zygote for a forked worker, waits for it, and exits
    with its status (picklable: only the zygote's address)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __call__(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
        except OSError as e:
            raise SystemExit(f"blockwise worker {os.getpid()}: the run's zygote is gone ({e})") from None
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(sock, [os.environ["DAISY_CONTEXT"].encode()], [sys.stdout.fileno(), sys.stderr.fileno()])
        status = b""
        while len(status) < _STATUS.size:
            chunk = sock.recv(_STATUS.size - len(status))
            if not chunk:
                raise SystemExit(f"blockwise worker {os.getpid()}: the run's zygote ended before the worker did")
            status += chunk
        code = _STATUS.unpack(status)[0]
        if code != 0:
            sys.exit(code if code > 0 else 128 - code)


class Zygote:
    """A warm process forked from the driver; forks one worker per :class:`Proxy` that connects.

    :meth:`close` it once the daisy run is over (workers still running are killed).

    Args:
        loop: the worker's body, ``loop(worker_setup, process_block)`` (processes blocks until none are left).
        worker_setup, process_block: passed to ``loop`` in each worker (by the fork: no pickling).
        preload: modules the zygote imports before forking workers (those the blocks import lazily).
    """

    def __init__(
        self,
        loop: Callable[[Any, Any], None],
        worker_setup: Any,
        process_block: Any,
        preload: Sequence[str] = (),
    ) -> None:
        self.address = f"\0lsd_nm-workers-{os.getpid()}-{secrets.token_hex(8)}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)
        listener.listen(64)
        control_read, self._control = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 0
            try:
                os.close(self._control)
                die_with_parent(signal.SIGKILL)
                _serve(listener, control_read, loop, worker_setup, process_block, preload)
            except BaseException:  # noqa: BLE001 - reported, then the zygote ends (its proxies fail with a message)
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(control_read)
        listener.close()
        self.pid = pid

    def proxy(self) -> Proxy:
        return Proxy(self.address)

    def close(self) -> None:
        """End the zygote (it kills workers still running) and reap it."""
        if self._control is None:
            return
        os.close(self._control)
        self._control = None
        os.waitpid(self.pid, 0)


def _serve(listener: socket.socket, control: int, loop, worker_setup, process_block, preload: Sequence[str]) -> None:
    """The zygote: fork a worker per connection, report each worker's exit status to its proxy, end when the driver
    closes ``control`` (or dies)."""
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:  # the worker imports it where it is used, and fails there with the block's traceback
            pass
    workers: dict[int, socket.socket] = {}  # pid → its proxy's connection
    while True:
        watched = [listener, control, *workers.values()]
        readable, _, _ = select.select(watched, [], [], 0.05)
        if control in readable:  # the driver is done (or gone)
            for pid in workers:
                _kill(pid)
            for pid in workers:
                os.waitpid(pid, 0)
            return
        if listener in readable:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
            pid = os.fork()
            if pid == 0:
                _work(message.decode(), fds, [listener.fileno(), control, *(c.fileno() for c in workers.values()), conn.fileno()],
                      loop, worker_setup, process_block)  # fmt: skip
            for fd in fds:
                os.close(fd)
            workers[pid] = conn
        for pid, conn in list(workers.items()):
            if conn in readable:  # the proxy is gone (killed): so goes its worker
                _kill(pid)
        while workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = workers.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(_STATUS.pack(os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
                conn.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _work(context: str, fds: list[int], close: list[int], loop, worker_setup, process_block) -> None:
    """A forked worker: the proxy's output and daisy context, then the block loop; never returns."""
    code = 0
    try:
        die_with_parent(signal.SIGKILL)
        for fd in close:
            os.close(fd)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.environ["DAISY_CONTEXT"] = context
        loop(worker_setup, process_block)
    except SystemExit as e:  # e.g. the block loop's "lost the scheduler" message
        if isinstance(e.code, int):
            code = e.code
        elif e.code is not None:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - the traceback goes to the worker's log, the status to daisy
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
