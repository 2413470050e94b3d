"""``python -m lsd_nm`` is the ``lsd-nm`` command."""

import sys

from .cli import main

sys.exit(main())
