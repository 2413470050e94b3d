"""Write volumes/labels/labels_mask (uint8) into every fetched or synthetic volume: ones, 0 where hemi is unlabelled.

Run: python 01_data/create_masks.py [--dataset hemi ...] [--data-dir DIR] [--force]          (or: make masks)
"""

import sys

from lsd_nm.masks import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
