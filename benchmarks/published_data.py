"""Time reading the authors' region-graph dumps (bson) and converting them into our SQLite region graph.

The Benchmark ROI's region graphs hold millions of fragments, so the rates decide whether fetch-published takes
minutes or hours. Measured in one run, as ratios to pymongo's bare decoding of the same files.

Run: .venv/bin/python benchmarks/published_data.py [NODES]   (appends a line to benchmarks/RESULTS.md)
"""

import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import bson
import numpy as np
from common import append_rows, load, machine

from lsd_nm.bson_dump import read_region_graph
from lsd_nm.paper_data import write_region_graph


def write_dumps(folder: Path, n: int) -> tuple[Path, Path]:
    """``n`` fragments and ``3 n`` edges in the authors' document layout."""
    rng = np.random.default_rng(0)
    ids = rng.choice(10**12, n, replace=False) + 1
    centers = rng.uniform(0, 100_000, (n, 3))
    nodes, edges = folder / "nodes.bson", folder / "edges_hist_quant_75.bson"
    with open(nodes, "wb") as f:
        f.writelines(
            bson.encode({"_id": bson.ObjectId(), "id": i, "center_z": z, "center_y": y, "center_x": x})
            for i, (z, y, x) in zip(ids.tolist(), centers.tolist())
        )
    u, v = rng.integers(0, n, (2, 3 * n))
    scores = rng.uniform(0, 1, 3 * n)
    with open(edges, "wb") as f:
        f.writelines(
            bson.encode({"_id": bson.ObjectId(), "u": a, "v": b, "merge_score": s, "agglomerated": True})
            for a, b, s in zip(ids[u].tolist(), ids[v].tolist(), scores.tolist())
        )
    return nodes, edges


def bare_decode(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in bson.decode_file_iter(f))


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    load_start = load()
    with tempfile.TemporaryDirectory() as tmp:
        nodes, edges = write_dumps(Path(tmp), n)
        docs = 4 * n
        t = time.perf_counter()
        bare_decode(nodes), bare_decode(edges)
        bare = time.perf_counter() - t
        t = time.perf_counter()
        graph = read_region_graph(nodes, edges)
        read = time.perf_counter() - t
        t = time.perf_counter()
        write_region_graph(graph, Path(tmp) / "g.db")
        write = time.perf_counter() - t
    where = machine(load_start, load())
    line = (
        f"| {date.today()} | region-graph dump of {n:,} nodes + {3 * n:,} edges: bson → arrays (read_region_graph) vs "
        f"bare pymongo decoding; arrays → SQLite (write_region_graph) | read {read:.1f} s vs bare {bare:.1f} s "
        f"(×{read / bare:.2f}; {docs / read:,.0f} documents/s); SQLite {write:.1f} s ({docs / write:,.0f} rows/s) | | {where} |"
    )
    append_rows([line])
