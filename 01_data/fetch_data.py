"""Download training volumes of the public bucket open-neurodata into 01_data/funke/<dataset>/training/.

Run: python 01_data/fetch_data.py --dataset zebrafinch [--volume gt_z255-383_y1407-1663_x1535-1791.zarr ...|--all]
     [--endpoint-url URL] [--out DIR] [--jobs N]          (or: make fetch-data DATASET=zebrafinch [VOLUMES=…|ALL=1])
"""

import sys

from lsd_nm.s3 import main_fetch_data

if __name__ == "__main__":
    sys.exit(main_fetch_data(sys.argv[1:]))
