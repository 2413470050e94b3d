"""Download the original Singularity images (lsd:v0.8.img, lsd_legacy.img) of the public bucket into 00_containers/.

Run: python 00_containers/download_imgs.py [--image lsd:v0.8.img|lsd_legacy.img ...|--all] [--endpoint-url URL] [--out DIR]
"""

import sys

from lsd_nm.s3 import main_download_imgs

if __name__ == "__main__":
    sys.exit(main_download_imgs(sys.argv[1:]))
