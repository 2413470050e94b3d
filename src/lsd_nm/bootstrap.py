"""Run the repository's scripts with the repository's environment, whichever ``python`` started them.

``make setup`` installs everything into ``<repository>/.venv``. A script started with another Python (``python
train.py 400000`` in a network folder, ``python 03_predict/segment.py …``) calls :func:`use_repository_venv` first:
it re-executes itself with ``.venv/bin/python`` (same arguments, same working directory), so the commands of the
READMEs work as written without activating anything. Inside a Singularity/Apptainer image (the image's Python has
the environment) or with ``LSD_NM_NO_VENV=1`` nothing is re-executed.

Only the standard library is used here (it runs before the environment is known), in syntax that any Python 3
parses, so that an old ``python`` gets the one-line advice instead of a traceback.
"""

import importlib.util
import os
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parents[2] / ".venv"
"""The repository's environment (``make setup`` creates it)."""
NO_VENV = "LSD_NM_NO_VENV"
"""Set to 1: run with the Python that started the script (a container's, or an environment of one's own)."""
CONTAINER_VARIABLES = ("SINGULARITY_CONTAINER", "APPTAINER_CONTAINER")
"""Set by Singularity/Apptainer inside an image."""


def use_repository_venv() -> None:
    """Re-execute the running script with ``.venv/bin/python`` unless it already runs there (or should not).

    Without a ``.venv`` and without the dependencies in the running Python, print how to set up and exit 2.
    """
    stay = os.environ.get(NO_VENV) == "1" or any(os.environ.get(v) for v in CONTAINER_VARIABLES)
    python = VENV / "bin" / "python"
    running_in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if python.exists() and not running_in_venv and not stay:
        os.execv(str(python), [str(python), *sys.argv])
    if importlib.util.find_spec("gunpowder") is None:
        sys.stderr.write(
            "error: the environment is not set up for {} ({}): run `make setup` in {} (it creates .venv/), "
            "then run this again\n".format(sys.executable, sys.version.split()[0], VENV.parent)
        )
        sys.exit(2)
