"""Evaluation: VOI, ARAND, ERL over the threshold sweep → <out_file stem>.scores.csv/.json, .voi_vs_threshold.png.

Run: python 03_predict/06_evaluate.py 03_predict/configs/synthetic.json
"""

import sys

from lsd_nm.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
