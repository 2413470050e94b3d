"""A network folder's script: runs the step this file is named after, on the folder it sits in.

Run from the folder (every network folder has the same five scripts; any `python` will do: the script re-runs itself
with the repository's .venv):
    python mknet.py                      build the network, print its summary, write net_train.json / net_predict.json
    python train.py ITERATION            train until ITERATION, resuming from the latest checkpoint
    python predict_scan.py [ITERATION] [--raw-file F] ...   predict a volume in memory into test_prediction.zarr
    python predict.py RUN_CONFIG.json    blockwise prediction (03_predict step 1) with this folder's network
    python view_batch.py [ITERATION]     look at a training snapshot (default: the newest)
e.g. cd 02_train/zebrafinch/mtlsd && python train.py 400000
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).resolve()
    sys.path.insert(0, str(here.parents[3] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()
    from lsd_nm.cli import main

    sys.exit(main([here.stem.replace("_", "-"), str(here.parent), *sys.argv[1:]]))
