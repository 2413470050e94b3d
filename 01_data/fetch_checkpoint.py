"""Download a network's published TF1 checkpoints into 02_train/<dataset>/<network>/, ready to use (no hand edits).

Run: python 01_data/fetch_checkpoint.py --dataset zebrafinch --network mtlsd [--out DIR] [--endpoint-url URL]
     (or: make fetch-checkpoint DATASET=zebrafinch NETWORK=mtlsd)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["fetch-checkpoint", *sys.argv[1:]]))
