"""Generate the embedded synthetic EM dataset in the bucket's layout (01_data/funke/<dataset>/{training,testing}/).

Run: python 01_data/make_synthetic.py [--dataset synthetic|synthetic_iso] [--force] [--png out.png]
     (or: make synthetic [DATASET=synthetic_iso])
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["synthetic", *sys.argv[1:]]))
