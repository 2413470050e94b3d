"""Run every 03_predict step of one config in order, skipping finished work.

Run: python 03_predict/segment.py CONFIG.json [--overwrite]   (or: make segment CONFIG=CONFIG.json)
"""

import sys

from lsd_nm.segment import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
