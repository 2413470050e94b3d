"""A blockwise worker started as a command (``RunConfig.worker_command`` + this), e.g. on a cluster node.

Run (by :func:`lsd_nm.blockwise.run_blockwise`, with ``DAISY_CONTEXT`` in the environment):
``python -m lsd_nm.blockwise_worker <out_file>/.blocks/<task>/worker.pkl``
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from .blockwise import _loop_over_blocks


def main(argv: list[str]) -> int:
    """Load the pickled ``(worker_setup, process_block)`` pair and process blocks until none are left."""
    worker_setup, process_block = pickle.loads(Path(argv[0]).read_bytes())
    _loop_over_blocks(worker_setup, process_block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
