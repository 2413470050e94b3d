"""Agglomeration: waterz per block over volumes/fragments → region-graph edges with merge scores.

Run: python 03_predict/03_agglomerate.py 03_predict/configs/synthetic.json [--overwrite]
"""

import sys

from lsd_nm.agglomerate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
