"""Time the generation of the embedded synthetic dataset (the target: all of `synthetic` in ≤ 60 s on 2 cores).

Run: .venv/bin/python benchmarks/synthetic.py   (appends a line to benchmarks/RESULTS.md)
"""

import os
import platform
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

from common import append_rows

from lsd_nm.synthetic import make_synthetic

if __name__ == "__main__":
    rows = []
    for dataset in ("synthetic", "synthetic_iso"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            make_synthetic(dataset, data_dir=Path(tmp), workers=2)
            rows.append((dataset, time.perf_counter() - start))
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"| {date.today()} | make_synthetic {d} (4 volumes, 2 workers) | {s:.1f} s | {peak_children:.2f} GB peak per worker | {machine} |" for d, s in rows]
    append_rows(lines)
