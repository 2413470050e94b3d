"""Step 1: predict affinities (and LSDs) of a large volume blockwise with a trained network (daisy workers).

Run: python 03_predict/01_predict_blockwise.py 03_predict/configs/synthetic.json [--overwrite]      (or: make predict)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["predict", *sys.argv[1:]]))
