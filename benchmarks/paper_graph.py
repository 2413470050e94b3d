"""The global steps at the paper's size: a region graph of 10⁷-10⁸ edges in SQLite, read into arrays and turned into
LUTs for 3 thresholds (what ``04_find_segments`` does), and the evaluation of one network's Benchmark ROI on it (the
skeletons' sites mapped through each LUT, ERL and site VOI at every threshold, the min-cut metric at the best one:
what ``06_evaluate`` does after its site lookup), with time and peak memory of each part.

Run: .venv/bin/python benchmarks/paper_graph.py [--edges 100000000] [--edges-per-node 4.9] [--keep DB] [--print-only]

The graph is generated with neurons in it: fragment ids spread over 40 bits, fragments of one neuron numbered
together (neurons of lognormal size, median 50 fragments), each edge between a fragment and one of its near
neighbours in id order (fragments of one block are numbered together, so their edges are near in id). An edge inside
a neuron scores uniform in [0, 0.3] (10 % never merged: NaN, as waterz leaves some; 2 % in [0.3, 1]: splits), an
edge between neurons uniform in [0.75, 1] but 0.1 % in [0, 0.6] (false merges that the min-cut metric must cut).
The skeletons are those of the masked Benchmark ROI in size (protocol.md §4: 3,410 components, 75,952,863 nm of
cable) on the largest neurons, one site every ``--site-spacing`` nm (the published node spacing is not known here;
100 nm gives 759,529 sites), a site's fragment drawn from its neuron's in runs along the skeleton. ``--edges-per-node``: our test volume's region graph
has 4.9 edges per fragment (738 edges, 152 fragments: ``tests/predict_volumes.py`` through steps 2-3); the published
runs' graphs hold roughly 10⁷-10⁸ edges per network on the Benchmark ROI. Each part runs in a fresh process, so that
each peak RSS is that part's alone. Not timed: the site lookup in a fragments volume (chunk reads at the sites:
storage-bound, and a fragments volume of the Benchmark ROI, 4.78·10¹¹ voxels, does not fit this machine's disk).
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


COMPONENTS = 3410
"""Skeleton components of the masked Benchmark ROI (protocol.md §4)."""
CABLE_NM = 75_952_863
"""Their cable length (protocol.md §4)."""


def neurons_of(n: int, seed: int = 1) -> np.ndarray:
    """The neuron of each of ``n`` fragments in id order: runs of lognormal length (median 50 fragments)."""
    rng = np.random.default_rng(seed + 1)
    sizes = np.maximum(1, rng.lognormal(np.log(50), 1.5, size=n // 25 + 10).astype(np.int64))
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    return np.repeat(np.arange(len(sizes)), sizes)[:n]


def generate(path: Path, edges: int, per_node: float, seed: int = 1) -> tuple[int, int]:
    """Write a region graph of ``edges`` edges in our SQLite layout; returns (nodes, edges) written."""
    from lsd_nm.graph import GraphOwner, create_graph

    rng = np.random.default_rng(seed)
    n = int(edges / per_node)
    ids = np.unique(rng.integers(1, 2**40, size=int(n * 1.01), dtype=np.int64))[:n]
    rng.shuffle(ids)
    ids = np.sort(ids[:n])
    neuron = neurons_of(n, seed)
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
            same = neuron[iu] == neuron[iv]
            draw = rng.random(count)
            scores = np.where(same, rng.uniform(0, 0.3, count), rng.uniform(0.75, 1, count))
            scores = np.where(same & (draw < 0.02), rng.uniform(0.3, 1, count), scores)
            scores = np.where(~same & (draw < 0.001), rng.uniform(0, 0.6, count), scores)
            scores = scores.astype(np.float32).astype(np.float64)
            scores[same & (draw > 0.9)] = np.nan
            values = [None if s != s else s for s in scores.tolist()]
            con.executemany("INSERT OR IGNORE INTO edges (u, v, merge_score, agglomerated) VALUES (?, ?, ?, 1)",
                            zip(ids[iu].tolist(), ids[iv].tolist(), values))  # fmt: skip
            written += count
        total = con.execute("SELECT COUNT(*) FROM edges").fetchone()[0]
    return n, int(total)


def skeletons_on(nodes: np.ndarray, spacing: float, seed: int = 1) -> tuple[dict, np.ndarray]:
    """Skeletons of the Benchmark ROI's size on the generated graph's largest neurons: :data:`COMPONENTS` chains of
    sites ``spacing`` nm apart, :data:`CABLE_NM` in all, each component's share of the cable proportional to its
    neuron's fragments; returns the skeleton arrays and the fragment under each site."""
    rng = np.random.default_rng(seed + 2)
    neuron = neurons_of(len(nodes), seed)
    starts = np.flatnonzero(np.r_[True, neuron[1:] != neuron[:-1]])
    sizes = np.diff(np.r_[starts, len(neuron)])
    chosen = np.argsort(sizes, kind="stable")[::-1][:COMPONENTS]
    sites = np.maximum(2, np.rint(CABLE_NM / spacing * sizes[chosen] / sizes[chosen].sum()).astype(np.int64))
    component = np.repeat(np.arange(1, len(chosen) + 1), sites)
    # a site's fragment: runs of ~5 sites on one fragment of the component's neuron
    run = np.cumsum(np.r_[True, rng.random(len(component) - 1) < 0.2] | np.r_[True, np.diff(component) != 0])
    first = starts[chosen][component - 1]
    pick = first + (rng.random(run.max() + 1)[run] * sizes[chosen][component - 1]).astype(np.int64)
    steps = rng.normal(size=(len(component), 3))
    steps *= spacing / np.linalg.norm(steps, axis=1, keepdims=True)
    positions = np.cumsum(steps, axis=0) + 10**6
    node_ids = np.arange(1, len(component) + 1, dtype=np.uint64)
    chain = np.flatnonzero(component[1:] == component[:-1])
    skeletons = {"node_ids": node_ids, "positions": positions, "neuron_ids": component.astype(np.uint64),
                 "edges": np.stack([node_ids[chain], node_ids[chain + 1]], axis=1)}  # fmt: skip
    return skeletons, nodes[pick]


def part(db: str, what: str, spacing: float = 100.0) -> dict:
    """One part in this (fresh) process: its seconds and this process's peak RSS."""
    from lsd_nm.graph import read_graph_arrays
    from lsd_nm.metrics import best_row, min_cut_metric, sweep_thresholds
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
    if what == "evaluate":
        start = time.perf_counter()
        luts = {t: (nodes, connected_components(nodes, edges, scores, t)) for t in THRESHOLDS}
        result["luts_s"] = time.perf_counter() - start
        skeletons, node_fragments = skeletons_on(nodes, spacing)
        result["sites"], result["cable_nm"] = len(node_fragments), CABLE_NM
        start = time.perf_counter()
        rows = sweep_thresholds(luts, skeletons=skeletons, node_fragments=node_fragments)
        result["sweep_s"] = time.perf_counter() - start
        best = best_row(rows)
        result["best"] = {k: best[k] for k in ("threshold", "voi_split", "voi_merge", "erl")}
        start = time.perf_counter()
        result["min_cut"] = min_cut_metric((edges, scores), luts[best["threshold"]], best["threshold"],
                                           node_fragments, skeletons)  # fmt: skip
        result["min_cut_s"] = time.perf_counter() - start
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=float, default=1e7, help="edges of the generated graph (default: 10^7)")
    parser.add_argument("--edges-per-node", type=float, default=4.9)
    parser.add_argument("--keep", type=Path, default=None, help="write the graph here and keep it (reused if there)")
    parser.add_argument("--site-spacing", type=float, default=100.0, help="nm between skeleton sites (default: 100)")
    parser.add_argument("--part", nargs=3, metavar=("DB", "WHAT", "SPACING"), help=argparse.SUPPRESS)
    output_arguments(parser)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(part(args.part[0], args.part[1], float(args.part[2]))))
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
        for what in ("read", "luts", "evaluate"):
            command = [sys.executable, __file__, "--part", str(db), what, str(args.site_spacing)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{what} failed:\n{done.stderr[-3000:]}")
            runs[what] = json.loads(done.stdout.strip().splitlines()[-1])
    where = machine(load_start, load())
    today = date.today().isoformat()
    read, luts, ev = runs["read"], runs["luts"], runs["evaluate"]
    best, cut = ev["best"], ev["min_cut"]
    lines = [
        f"| {today} | region graph at the paper's size: read into arrays (SQLite, {e:,} edges, {n:,} nodes, "
        f"{size:.1f} GB file, {made}) | {read['read_s']:.1f} s | {read['peak_gb']:.2f} GB peak RSS | {where} |",
        f"| {today} | find_segments' work on it: read + LUTs of {len(THRESHOLDS)} thresholds ({e:,} edges) | "
        f"{luts['read_s']:.1f} s + {luts['luts_s']:.1f} s | {luts['peak_gb']:.2f} GB peak RSS | {where} |",
        f"| {today} | evaluation of the Benchmark ROI on it ({COMPONENTS:,} components, {CABLE_NM / 1e6:.1f} mm, "
        f"{ev['sites']:,} sites every {args.site_spacing:g} nm): read + LUTs + ERL and site VOI at "
        f"{len(THRESHOLDS)} thresholds + min-cut at the best ({best['threshold']:g}: VOI {best['voi_split']:.3f} / "
        f"{best['voi_merge']:.3f}, {cut['splits_needed']:,} splits, {cut['merges_needed']:,} merges needed) | "
        f"{ev['read_s']:.1f} s + {ev['luts_s']:.1f} s + {ev['sweep_s']:.1f} s + {ev['min_cut_s']:.1f} s | "
        f"{ev['peak_gb']:.2f} GB peak RSS | {where} |",
    ]
    report(args, lines)


if __name__ == "__main__":
    main()
