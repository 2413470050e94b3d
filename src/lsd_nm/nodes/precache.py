"""PreCache: gunpowder's, but an error in a worker reaches the caller as an error it can still recognise."""

from __future__ import annotations

import gunpowder as gp

from ..config import ConfigError, user_error


class PreCache(gp.PreCache):
    """:class:`gunpowder.PreCache` whose workers' errors survive the trip to the requesting process.

    gunpowder's workers put what they raise on a queue, pickled: the exception's cause and context are lost on
    the way, so a :class:`ConfigError` raised upstream (wrapped by gunpowder) is no longer found by
    :func:`lsd_nm.config.user_error`, and an exception that cannot be pickled never arrives (the caller waits
    forever). Here a worker's error is replaced by the :class:`ConfigError` behind it, or else by a
    ``RuntimeError`` with its text; either is raised by the request that gets it.

    Args:
        cache_size (int): how many batches to hold at most.
        num_workers (int): how many processes fill the cache.
    """

    def _run_worker(self):
        try:
            return super()._run_worker()
        except Exception as e:
            error = user_error(e)
            if error is not None:
                raise ConfigError(str(error)) from None
            raise RuntimeError(f"in a {type(self).__name__} worker: {e}") from None
