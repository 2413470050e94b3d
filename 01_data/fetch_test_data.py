"""Download the paper's test data: the zebrafinch validation and test skeletons (→ .skeletons.npz with every per-ROI
mask and component array) and neuropil mask, with --roi the test raw of that ROI (from the authors' precomputed
volume, with the network's context); the hemi and FIB-25 test labels, masks and raw.

Run: python 01_data/fetch_test_data.py --dataset zebrafinch [--roi 11_micron_roi [--network mtlsd]]
     [--endpoint-url URL] [--out DIR] [--jobs N]          (or: make fetch-test-data DATASET=zebrafinch [ROI=…])
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["fetch-test-data", *sys.argv[1:]]))
