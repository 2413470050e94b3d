"""The paper-sized region graph of ``benchmarks/paper_graph.py``: its skeletons have the Benchmark ROI's size and lie
on the generated neurons, and its graph has neurons that the threshold separates.

Run: .venv/bin/python -m pytest tests/test_paper_graph.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import paper_graph  # noqa: E402


def test_the_skeletons_have_the_benchmark_rois_components_and_cable_and_each_lies_on_one_neuron():
    nodes = np.sort(np.random.default_rng(0).choice(2**40, 2_000_000, replace=False)).astype(np.uint64)
    skeletons, node_fragments = paper_graph.skeletons_on(nodes, spacing=100.0)
    components = skeletons["neuron_ids"]
    assert len(np.unique(components)) == paper_graph.COMPONENTS == 3410
    rows = skeletons["edges"].astype(np.int64) - 1
    length = np.linalg.norm(skeletons["positions"][rows[:, 0]] - skeletons["positions"][rows[:, 1]], axis=1).sum()
    assert abs(length - paper_graph.CABLE_NM) / paper_graph.CABLE_NM < 0.01
    assert np.all(components[rows[:, 0]] == components[rows[:, 1]])
    neuron = paper_graph.neurons_of(len(nodes))[np.searchsorted(nodes, node_fragments)]
    per_component = {int(c): set(neuron[components == c].tolist()) for c in np.unique(components)[:50]}
    assert all(len(n) == 1 for n in per_component.values())
    assert len({next(iter(n)) for n in per_component.values()}) == 50


def test_the_generated_graph_holds_neurons_that_thresholds_keep_apart(tmp_path):
    from lsd_nm.graph import read_graph_arrays
    from lsd_nm.segments import connected_components

    db = tmp_path / "g.db"
    nodes, edges = paper_graph.generate(db, 200_000, 4.9)
    ids, pairs, scores = read_graph_arrays(str(db))
    assert (len(ids), len(pairs)) == (nodes, edges)
    _, neuron_sizes = np.unique(paper_graph.neurons_of(nodes), return_counts=True)
    neurons = len(neuron_sizes)
    for threshold in paper_graph.THRESHOLDS:
        _, sizes = np.unique(connected_components(ids, pairs, scores, threshold), return_counts=True)
        assert 0.5 * neurons < len(sizes) < 10 * neurons, (threshold, len(sizes), neurons)
        assert sizes.max() < 3 * neuron_sizes.max(), (threshold, sizes.max())  # no segment spans the volume
