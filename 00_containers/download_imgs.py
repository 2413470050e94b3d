"""Download the original Singularity images (lsd:v0.8.img, lsd_legacy.img) of the public bucket into 00_containers/.

Run: python 00_containers/download_imgs.py [--image lsd:v0.8.img|lsd_legacy.img ...|--all] [--endpoint-url URL] [--out DIR]
     (or: make images [ARGS=--all])
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["images", *sys.argv[1:]]))
