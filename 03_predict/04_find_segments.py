"""Segments: connected components of the region graph at every merge threshold → fragment-segment LUTs (.npz).

Run: python 03_predict/04_find_segments.py 03_predict/configs/synthetic.json [--overwrite]
"""

import sys

from lsd_nm.segments import main_find_segments

if __name__ == "__main__":
    sys.exit(main_find_segments(sys.argv[1:]))
