"""Run every 03_predict step of one config in order (predict, fragments, agglomerate, segments, segmentation,
evaluation), each resuming its finished work.

Run: python 03_predict/segment.py 03_predict/configs/synthetic.json [--overwrite] [--start N]      (or: make segment)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["segment", *sys.argv[1:]]))
