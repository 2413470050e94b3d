"""Reproduce the paper's tables for one network: every ROI of the paper scored (zebrafinch: threshold on the
validation skeletons, test skeletons scored at it; hemi, FIB-25: dense labels), our number beside the paper's
→ reproduce/<dataset>_<network>.csv, .md and .png (VOI sum over ROI size).

Run: python 03_predict/07_reproduce.py --dataset zebrafinch --network mtlsd [--config RUN.json ...] [--min-cut]
     (or: make reproduce DATASET=zebrafinch NETWORK=mtlsd), after make fetch-test-data and make fetch-published
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["reproduce", *sys.argv[1:]]))
