"""Show one volume in neuroglancer: raw, neuron ids, labels mask and any prediction in the container.

Run: python 01_data/view_data.py 01_data/funke/synthetic/training/train_0.zarr [--bind-address 0.0.0.0]
     [--screenshot out.png [--size 800 600]]          (or: make view DATA=… [ARGS="--screenshot out.png"])
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["view", *sys.argv[1:]]))
