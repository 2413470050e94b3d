"""lsd_nm.graph: our SQLite region graph against funlib.persistence's SQLiteGraphDataBase, the reference layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from funlib.geometry import Roi
from funlib.persistence.graphs import SQLiteGraphDataBase
from funlib.persistence.types import Vec

from test_agglomerate import postgres_url  # noqa: F401 - the PostgreSQL server fixture

from lsd_nm.graph import (
    EDGE_ATTRS,
    SQLiteRegionGraph,
    drop_edges,
    open_graph,
    read_edges,
    read_nodes,
    write_edges,
    write_nodes,
)  # fmt: skip


def _funlib(path: Path, mode: str) -> SQLiteGraphDataBase:
    extra = {"node_attrs": {"center": Vec(int, 3)}, "edge_attrs": dict(EDGE_ATTRS)} if mode == "w" else {}
    return SQLiteGraphDataBase(path, position_attribute="center", mode=mode, directed=False, **extra)


def _graph(seed: int = 0) -> tuple[dict[int, tuple[int, int, int]], dict[tuple[int, int], tuple[float | None, bool]]]:
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(1, 10**12, size=60, dtype=np.int64))
    centers = {int(i): tuple(int(c) for c in rng.integers(-500, 5000, size=3)) for i in ids}
    edges = {}
    for _ in range(150):
        u, v = sorted(int(x) for x in rng.choice(ids, size=2, replace=False))
        score = None if rng.random() < 0.2 else float(rng.random())
        edges[(u, v)] = (score, bool(rng.random() < 0.8))
    return centers, edges


ROI = Roi((0, 100, -200), (2000, 3000, 4000))


@pytest.mark.parametrize("writer", ["ours", "funlib"])
def test_either_class_reads_what_the_other_wrote(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "g.db"
    centers, edges = _graph()
    db = SQLiteRegionGraph(path, "w") if writer == "ours" else _funlib(path, "w")
    write_nodes(db, centers)
    by_u = {}
    for (u, v), value in edges.items():  # written the way agglomeration does: per block, with the centres of every u
        by_u.setdefault(u, {})[(u, v)] = value
    for u, part in by_u.items():
        write_edges(db, {u: centers[u]}, part)
    db.close()
    if writer == "ours":  # the metadata file is funlib.persistence's, to the byte of its content
        reference = tmp_path / "ref.db"
        _funlib(reference, "w").close()
        assert (tmp_path / "g-meta.json").read_text() == (tmp_path / "ref-meta.json").read_text()
    readers = {"ours": SQLiteRegionGraph(path, "r"), "funlib": _funlib(path, "r")}
    expected_edges = sorted((u, v, None if s is None else float(np.float32(s)), a) for (u, v), (s, a) in edges.items())
    for name, reader in readers.items():
        assert read_nodes(reader) == centers, name
        inside = {i: c for i, c in centers.items() if ROI.contains(c)}
        assert read_nodes(reader, ROI) == inside and 0 < len(inside) < len(centers), name
        assert read_edges(reader) == expected_edges, name
        reader.close()


def test_writes_keep_what_exists_and_read_only_refuses(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    db = open_graph(str(path), "w")
    assert isinstance(db, SQLiteRegionGraph)
    write_nodes(db, {5: (1, 2, 3)})
    write_nodes(db, {5: (9, 9, 9), 6: (4, 5, 6)})  # 5 is kept as it was (a re-run block writes the same values)
    write_edges(db, {5: (1, 2, 3)}, {(6, 5): (0.25, True)})  # stored as u < v
    write_edges(db, {5: (1, 2, 3)}, {(5, 6): (0.75, False)})
    assert read_nodes(db) == {5: (1, 2, 3), 6: (4, 5, 6)}
    assert read_edges(db) == [(5, 6, 0.25, True)]
    drop_edges(db)
    assert read_edges(db) == [] and read_nodes(db) == {5: (1, 2, 3), 6: (4, 5, 6)}
    db.close()
    reader = open_graph(str(path), "r")
    with pytest.raises(RuntimeError, match="read-only"):
        write_nodes(reader, {7: (0, 0, 0)})
    reader.close()
    again = open_graph(str(path), "w")  # w starts over
    assert read_nodes(again) == {} and read_edges(again) == []
    again.close()


def test_a_sqlite_graph_is_used_without_importing_funlib_persistence(tmp_path: Path) -> None:
    """Every step and worker that opens the graph would pay ~1 s for funlib.persistence's dask."""
    code = (
        "import sys\n"
        "from lsd_nm.graph import open_graph, read_nodes, write_nodes\n"
        f"db = open_graph({str(tmp_path / 'g.db')!r}, 'w'); write_nodes(db, {{1: (0, 0, 0)}})\n"
        "assert read_nodes(db) == {1: (0, 0, 0)}\n"
        "print(sorted(m for m in sys.modules if m.startswith(('funlib.persistence', 'dask'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_graph_as_arrays_is_what_the_records_are(tmp_path: Path, backend: str, request, monkeypatch) -> None:
    """read_graph_arrays (chunked, no object per edge) against read_nodes/read_edges, over several chunks."""
    from lsd_nm import graph
    from lsd_nm.graph import GraphOwner, create_graph, read_graph_arrays

    if backend == "postgresql":
        location = request.getfixturevalue("postgres_url").replace("lsd_test", "lsd_arrays")
    else:
        location = str(tmp_path / "g.db")
    create_graph(location, GraphOwner("x.zarr", "id"))
    centers, edges = _graph(seed=3)
    db = open_graph(location, "r+")
    write_nodes(db, centers)
    write_edges(db, centers, {(v, u) if i % 3 == 0 else (u, v): e for i, ((u, v), e) in enumerate(edges.items())})
    records, nodes_read = read_edges(db), read_nodes(db)
    db.close()
    monkeypatch.setattr(graph, "ROWS_PER_CHUNK", 7)  # 150 edges in 22 chunks
    nodes, pairs, scores = read_graph_arrays(location)
    assert nodes.dtype == pairs.dtype == np.uint64 and nodes.tolist() == sorted(nodes_read)
    assert [(int(u), int(v)) for u, v in pairs] == [(u, v) for u, v, _, _ in records]
    assert len(records) == len(edges) and all(u < v for u, v, _, _ in records)
    expected = np.array([np.nan if s is None else s for _, _, s, _ in records])
    np.testing.assert_array_equal(scores, expected)  # NaN where never merged, float32 values elsewhere
    assert np.isnan(scores).sum() == sum(s is None for s, _ in edges.values()) > 0
