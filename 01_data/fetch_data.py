"""Download training volumes of the public bucket open-neurodata into 01_data/funke/<dataset>/training/.

Run: python 01_data/fetch_data.py --dataset zebrafinch [--volume gt_z255-383_y1407-1663_x1535-1791.zarr ...|--all]
     [--endpoint-url URL] [--out DIR] [--jobs N]          (or: make fetch-data DATASET=zebrafinch [VOLUMES=…|ALL=1])
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["fetch-data", *sys.argv[1:]]))
