"""The status of a run: per step, blocks done / failed / in all, the last error of a failed block, elapsed time and
ETA of a running step, its worker processes still alive. Reads only; works during a run, after a kill and at the end.

Run: python 03_predict/status.py 03_predict/configs/synthetic.json [--json]      (or: make status)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["status", *sys.argv[1:]]))
