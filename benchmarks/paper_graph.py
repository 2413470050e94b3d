"""The global step at the paper's size: a region graph of 10⁷-10⁸ edges in SQLite, read into arrays and turned into
LUTs for 3 thresholds (what ``04_find_segments`` does), with time and peak memory of each part.

Run: .venv/bin/python benchmarks/paper_graph.py [--edges 100000000] [--edges-per-node 3] [--keep DB] [--print-only]

The graph is generated: fragment ids spread over 40 bits, each edge between a fragment and one of its near neighbours
in id order (fragments of one block are numbered together, so their edges are near in id), merge scores uniform in
[0, 1] with 10 % never merged (NaN), as waterz leaves them. ``--edges-per-node``: our test volume's region graph
has 4.9 edges per fragment (738 edges, 152 fragments: ``tests/predict_volumes.py`` through steps 2-3); the published
runs' graphs hold roughly 10⁷-10⁸ edges per network on the Benchmark ROI. The reading and the LUTs run in a fresh process each, so that each peak RSS
is that part's alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import load, machine, output_arguments, report  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.7)
CHUNK = 2_000_000


def generate(path: Path, edges: int, per_node: float, seed: int = 1) -> tuple[int, int]:
    """Write a region graph of ``edges`` edges in our SQLite layout; returns (nodes, edges) written."""
    from lsd_nm.graph import GraphOwner, create_graph

    rng = np.random.default_rng(seed)
    n = int(edges / per_node)
    ids = np.unique(rng.integers(1, 2**40, size=int(n * 1.01), dtype=np.int64))[:n]
    rng.shuffle(ids)
    ids = np.sort(ids[:n])
    create_graph(str(path), GraphOwner("generated.zarr", "generated"))
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        for start in range(0, n, CHUNK):
            part = ids[start : start + CHUNK]
            centers = rng.integers(0, 10**6, size=(len(part), 3))
            con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                            zip(part.tolist(), *(centers[:, d].tolist() for d in range(3))))  # fmt: skip
        written = 0
        while written < edges:
            count = min(CHUNK, edges - written)
            iu = rng.integers(0, n - 64, size=count)
            iv = iu + rng.integers(1, 64, size=count)
            scores = rng.random(count).astype(np.float32).astype(np.float64)
            scores[rng.random(count) < 0.1] = np.nan
            values = [None if s != s else s for s in scores.tolist()]
            con.executemany("INSERT OR IGNORE INTO edges (u, v, merge_score, agglomerated) VALUES (?, ?, ?, 1)",
                            zip(ids[iu].tolist(), ids[iv].tolist(), values))  # fmt: skip
            written += count
        total = con.execute("SELECT COUNT(*) FROM edges").fetchone()[0]
    return n, int(total)


def part(db: str, what: str) -> dict:
    """One part in this (fresh) process: its seconds and this process's peak RSS."""
    from lsd_nm.graph import read_graph_arrays
    from lsd_nm.segments import connected_components

    start = time.perf_counter()
    nodes, edges, scores = read_graph_arrays(db)
    read = time.perf_counter() - start
    result = {"read_s": read, "nodes": int(nodes.size), "edges": int(len(edges))}
    if what == "luts":
        start = time.perf_counter()
        for t in THRESHOLDS:
            segments = connected_components(nodes, edges, scores, t)
            result[f"segments_{t}"] = int(np.unique(segments).size)
        result["luts_s"] = time.perf_counter() - start
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=float, default=1e7, help="edges of the generated graph (default: 10^7)")
    parser.add_argument("--edges-per-node", type=float, default=4.9)
    parser.add_argument("--keep", type=Path, default=None, help="write the graph here and keep it (reused if there)")
    parser.add_argument("--part", nargs=2, metavar=("DB", "WHAT"), help=argparse.SUPPRESS)
    output_arguments(parser)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(part(*args.part)))
        return
    load_start = load()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as scratch:
        db = args.keep or Path(scratch) / "paper.rag.db"
        start = time.perf_counter()
        if not db.exists():
            n, e = generate(db, int(args.edges), args.edges_per_node)
            made = f"generated in {time.perf_counter() - start:.0f} s"
        else:
            with sqlite3.connect(db) as con:
                n, e = (con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("nodes", "edges"))
            made = "reused"
        size = db.stat().st_size / 2**30
        runs = {}
        for what in ("read", "luts"):
            done = subprocess.run([sys.executable, __file__, "--part", str(db), what], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{what} failed:\n{done.stderr[-3000:]}")
            runs[what] = json.loads(done.stdout.strip().splitlines()[-1])
    where = machine(load_start, load())
    today = date.today().isoformat()
    read, luts = runs["read"], runs["luts"]
    lines = [
        f"| {today} | region graph at the paper's size: read into arrays (SQLite, {e:,} edges, {n:,} nodes, "
        f"{size:.1f} GB file, {made}) | {read['read_s']:.1f} s | {read['peak_gb']:.2f} GB peak RSS | {where} |",
        f"| {today} | find_segments' work on it: read + LUTs of {len(THRESHOLDS)} thresholds ({e:,} edges) | "
        f"{luts['read_s']:.1f} s + {luts['luts_s']:.1f} s | {luts['peak_gb']:.2f} GB peak RSS | {where} |",
    ]
    report(args, lines)


if __name__ == "__main__":
    main()
