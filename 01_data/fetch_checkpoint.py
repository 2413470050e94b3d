"""Download a network's published TF1 checkpoints into 02_train/<dataset>/<network>/, ready to use (no hand edits).

Run: python 01_data/fetch_checkpoint.py --dataset zebrafinch --network mtlsd [--out DIR] [--endpoint-url URL]
     (or: make fetch-checkpoint DATASET=zebrafinch NETWORK=mtlsd)
"""

import sys

from lsd_nm.checkpoints_tf1 import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
