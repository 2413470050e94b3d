"""Step 4: segments — connected components of the region graph at every merge threshold → fragment-segment LUTs (.npz).

Run: python 03_predict/04_find_segments.py 03_predict/configs/synthetic.json [--overwrite]
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["find-segments", *sys.argv[1:]]))
