"""Segmentation: volumes/fragments relabelled blockwise through the LUT of each extract_threshold.

Run: python 03_predict/05_extract_segmentation.py 03_predict/configs/synthetic.json [--overwrite]
"""

import sys

from lsd_nm.segments import main_extract_segmentation

if __name__ == "__main__":
    sys.exit(main_extract_segmentation(sys.argv[1:]))
