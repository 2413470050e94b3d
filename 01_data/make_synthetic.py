"""Generate the embedded synthetic EM dataset in the bucket's layout (01_data/funke/<dataset>/{training,testing}/).

Run: python 01_data/make_synthetic.py [--dataset synthetic|synthetic_iso] [--force] [--png out.png]
     (or: make synthetic [DATASET=synthetic_iso])
"""

import sys

from lsd_nm.cli import main

if __name__ == "__main__":
    sys.exit(main(["synthetic", *sys.argv[1:]]))
