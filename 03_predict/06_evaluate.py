"""Step 6: evaluation — VOI, ARAND, ERL over the threshold sweep → <out_file stem>.scores.csv/.json, .voi_vs_threshold.png.

Run: python 03_predict/06_evaluate.py 03_predict/configs/synthetic.json      (or: make evaluate)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
