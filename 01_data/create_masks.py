"""Write volumes/labels/labels_mask (uint8) into every fetched or synthetic volume: ones, 0 where hemi is unlabelled.

Run: python 01_data/create_masks.py [--dataset hemi ...] [--data-dir DIR] [--force]          (or: make masks)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["create-masks", *sys.argv[1:]]))
