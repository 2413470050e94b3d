"""Show one volume in neuroglancer: raw, neuron ids, labels mask and any prediction in the container.

Run: python 01_data/view_data.py 01_data/funke/synthetic/training/train_0.zarr [--bind-address 0.0.0.0]
     [--screenshot out.png [--size 800 600]]          (or: make view DATA=… [ARGS="--screenshot out.png"])
"""

import sys

from lsd_nm.view import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
