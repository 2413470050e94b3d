"""Step 2: fragments — a seeded watershed per block of out_file's volumes/affs → volumes/fragments + region-graph nodes.

Run: python 03_predict/02_extract_fragments.py 03_predict/configs/synthetic.json [--overwrite]
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this repository's package
    from lsd_nm.bootstrap import use_repository_venv

    use_repository_venv()  # any `python` will do: the script re-runs itself with the repository's .venv
    from lsd_nm.cli import main

    sys.exit(main(["extract-fragments", *sys.argv[1:]]))
