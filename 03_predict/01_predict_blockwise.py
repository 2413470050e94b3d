"""Step 1: predict affinities (and LSDs) of a large volume blockwise with a trained network (daisy workers).

Run: python 03_predict/01_predict_blockwise.py CONFIG.json [--overwrite]
"""

import sys

from lsd_nm.predict_blockwise import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
