"""Your own volumes (zarr, OME-Zarr, HDF5) as a dataset: registry entry, converted volumes, 02_train and 03_predict.

Run: python 01_data/new_dataset.py --name NAME --train a.h5 [b.zarr ...] [--test c.h5] [--raw-dataset em/image]
     [--labels-dataset gt/segments] [--mask-dataset ...] [--voxel-size Z Y X] [--rescale] [--force]
     (or: make new-dataset NAME=… TRAIN="…" …)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["new-dataset", *sys.argv[1:]]))
