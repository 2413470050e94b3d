"""Download the authors' published supervoxels and region graphs of one network (bson dumps of their MongoDB
collections) and convert them into our fragments and SQLite region graph, so that 04_find_segments and 06_evaluate
run on them unchanged (zebrafinch: only the supervoxel chunks under the test skeletons' nodes).

Run: python 01_data/fetch_published.py --dataset zebrafinch --network mtlsd [--run RUN] [--all-supervoxels]
     [--endpoint-url URL] [--out DIR] [--jobs N]          (or: make fetch-published DATASET=zebrafinch NETWORK=mtlsd)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["fetch-published", *sys.argv[1:]]))
