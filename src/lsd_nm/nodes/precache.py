"""PreCache: gunpowder's, but an error in a worker reaches the caller as an error it can still recognise, and the
workers die with the trainer."""

from __future__ import annotations

import os
import signal

import gunpowder as gp

from ..config import ConfigError, user_error
from ..orphans import die_with_parent, watch


class PreCache(gp.PreCache):
    """:class:`gunpowder.PreCache` whose workers' errors survive the trip to the requesting process, and whose
    processes do not outlive it.

    gunpowder's workers put what they raise on a queue, pickled: the exception's cause and context are lost on
    the way, so a :class:`ConfigError` raised upstream (wrapped by gunpowder) is no longer found by
    :func:`lsd_nm.config.user_error`, and an exception that cannot be pickled never arrives (the caller waits
    forever). Here a worker's error is replaced by the :class:`ConfigError` behind it, or else by a
    ``RuntimeError`` with its text; either is raised by the request that gets it.

    gunpowder's pool is a watchdog process (a child of the requesting process) that starts the workers. When the
    requester is killed, the watchdog tries to put a "parent died" notice on the full batch queue nobody reads
    any more and blocks there for good, and its workers, seeing it alive, wait for queue space for good. Here each
    worker dies with the watchdog (a parent-death signal: the watchdog starts them from its main thread) and
    watches the requester: once that is gone, it kills the watchdog, and so every worker, then itself.

    The workers may run at a lower scheduling priority than the requester (``niceness``): where both share the
    same cores (training on a CPU), the requester's work (the train step) then gets most of a core it shares with a
    worker (at nice +10, ~10 times the worker's share), and the workers fill the cycles the step leaves idle.

    Args:
        cache_size (int): how many batches to hold at most.
        num_workers (int): how many processes fill the cache.
        niceness (int): added to the workers' nice value (0: the requester's priority; 19: the lowest).
    """

    def __init__(self, cache_size: int = 50, num_workers: int = 20, niceness: int = 0):
        super().__init__(cache_size=cache_size, num_workers=num_workers)
        self.niceness = niceness

    def provide(self, request):
        # the process the workers serve (the pool is started by the request that reaches it)
        self._requester = os.getpid()
        return super().provide(request)

    def abandon(self) -> None:
        """End the pool without gunpowder's orderly stop (for a trainer stopped by a signal that reached the pool
        too: a watchdog or worker ended by it may have left the pool's stop event locked or its queue full, and
        the orderly stop, also run when the pool is garbage-collected, would wait for good). The watchdog is killed,
        its workers die with it."""
        pool, self.workers = self.workers, None
        if pool is None:
            return
        watchdog = pool._ProducerPool__watch_dog  # gunpowder keeps it private; None once stopped
        if watchdog is not None and watchdog._popen is not None:
            watchdog.kill()
            watchdog.join(10)
        pool._ProducerPool__watch_dog = None  # its __del__ then does nothing

    def _run_worker(self):
        if _follow(getattr(self, "_requester", None)) and self.niceness:
            os.nice(self.niceness)
        try:
            return super()._run_worker()
        except Exception as e:
            error = user_error(e)
            if error is not None:
                raise ConfigError(str(error)) from None
            raise RuntimeError(f"in a {type(self).__name__} worker: {e}") from None


_followed_in: set[int] = set()
"""The processes (pids) where :func:`_follow` is in place; a forked child inherits the set, hence pids."""


def _follow(requester: int | None) -> bool:
    """In a PreCache worker (once per process): die with the pool's watchdog, and end the watchdog and this worker
    once ``requester`` is gone. Returns whether this call set it up (the first in this worker process)."""
    if requester is None or os.getpid() in _followed_in or os.getpid() == requester:
        return False
    _followed_in.add(os.getpid())
    die_with_parent()
    pool = os.getppid()

    def requester_gone() -> None:
        if pool != requester and os.getppid() == pool:  # still our parent, so still the watchdog
            os.kill(pool, signal.SIGKILL)
        os._exit(1)

    watch(requester, requester_gone)
    return True
