"""Bytes per edge of the sparse contact histograms and the peak memory of one merge of a whole region graph.

A synthetic volume (``lsd_nm.synthetic``) with noisy affinities, fragments by the watershed, every edge's contacts,
then ``merge_region_graph`` with hist_quant_75. Run: ``python benchmarks/merge_memory.py [Z Y X]``
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_segments import _noisy_affinities  # noqa: E402

from lsd_nm.agglomerate import scoring_function  # noqa: E402
from lsd_nm.contacts import contacts_in_block  # noqa: E402
from lsd_nm.fragments import watershed_from_affinities  # noqa: E402
from lsd_nm.region_merging import merge_region_graph  # noqa: E402
from lsd_nm.synthetic import generate_volume  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(shape: tuple[int, int, int]) -> None:
    _, labels = generate_volume(shape, (20, 9, 9), 2)
    affs = _noisy_affinities(labels, 2)
    fragments = watershed_from_affinities(affs.astype(np.float32) / 255, min_seed_distance=4)
    contacts = contacts_in_block(affs, fragments)
    edges = len(contacts.edges)
    sparse = contacts.bins.nbytes + contacts.counts.nbytes + contacts.starts.nbytes
    before = peak_mib()
    start = time.perf_counter()
    merge_region_graph(np.unique(fragments), contacts, scoring_function("hist_quant_75"))
    seconds = time.perf_counter() - start
    print(f"volume {shape}: {edges} edges, {len(contacts.bins) / edges:.1f} non-zero bins/edge")
    print(f"histograms: {sparse / edges:.1f} B/edge sparse (bins + counts + starts) vs 2048 B/edge dense int64")
    print(f"merge: {seconds:.2f} s; peak RSS {before:.0f} MiB before the merge, {peak_mib():.0f} MiB after")


if __name__ == "__main__":
    main(tuple(int(x) for x in sys.argv[1:4]) if len(sys.argv) > 3 else (32, 216, 216))
