"""Fragments: a seeded watershed per block of out_file's volumes/affs → volumes/fragments + region-graph nodes.

Run: python 03_predict/02_extract_fragments.py 03_predict/configs/synthetic.json [--overwrite]
"""

import sys

from lsd_nm.fragments import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
