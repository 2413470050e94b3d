"""lsd_nm.agglomerate (03_predict/03_agglomerate.py): blockwise waterz into region-graph edges; SQLite and a real
PostgreSQL server give the same graph."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from predict_volumes import VOXEL_SIZE, config, graph, make_out_file, read_fragments

from lsd_nm.agglomerate import agglomerate, scoring_function
from lsd_nm.config import ConfigError
from lsd_nm.fragments import extract_fragments


def _adjacent_pairs(fragments: np.ndarray) -> set[tuple[int, int]]:
    """Every pair of different non-zero ids that touch through a face."""
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(fragments, axis, 0)[1:].ravel()
        b = np.moveaxis(fragments, axis, 0)[:-1].ravel()
        keep = (a != b) & (a != 0) & (b != 0)
        lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        pairs |= set(zip(lo.tolist(), hi.tolist()))
    return pairs


def test_scoring_functions_of_the_merge_functions() -> None:
    assert scoring_function("hist_quant_75") == (
        "OneMinus<HistogramQuantileAffinity<RegionGraphType, 75, ScoreValue, 256, false>>"
    )
    assert scoring_function("hist_quant_50_initmax").endswith(", 50, ScoreValue, 256, true>>")
    assert scoring_function("mean") == "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>"
    with pytest.raises(ConfigError, match="merge_function 'median'"):
        scoring_function("median")


def test_edges_are_the_region_graph_once_each_and_a_rerun_skips_all(tmp_path: Path) -> None:
    """The region graph written blockwise is exactly the set of face-adjacent fragment pairs, each once: the block
    owning u's centre sees all of u's contacts (u lies in its write ROI, the context is ≥ 1 voxel)."""
    out = tmp_path / "out.zarr"
    make_out_file(out)
    cfg = config(out)
    extract_fragments(cfg, progress=False)
    result = agglomerate(cfg, progress=False)
    assert (result.processed, result.skipped) == (8, 0)
    nodes, edges = graph(cfg)
    pairs = [(u, v) for u, v, _, _ in edges]
    assert len(pairs) == len(set(pairs)) and set(pairs) == _adjacent_pairs(read_fragments(out))
    assert all(agglomerated is True for *_, agglomerated in edges)
    assert all(score is None or 0.0 <= score <= 1.0 for _, _, score, _ in edges)
    assert {0.001953125, 0.998046875} <= {score for _, _, score, _ in edges}  # 1 − quantile over 256 bins

    again = agglomerate(cfg, progress=False)
    assert (again.processed, again.skipped) == (0, 8) and graph(cfg) == (nodes, edges)


def _waterz_scores(affs, fragments, pairs, merge_function):
    """The merge score waterz gives each pair on the whole volume (thresholds 0 and 1)."""
    import waterz

    ids, local = np.unique(fragments, return_inverse=True)
    assert ids[0] != 0
    local = (local.reshape(fragments.shape) + 1).astype(np.uint64)
    generator = waterz.agglomerate(
        (affs / 255.0).astype(np.float32), [0.0, 1.0], fragments=local,
        scoring_function=scoring_function(merge_function), discretize_queue=256, return_merge_history=True, return_region_graph=True,
    )  # fmt: skip
    next(generator)
    history = [dict(m) for m in next(generator)[1]]
    generator.close()
    return merge_scores(history, pairs, {int(i): n for n, i in enumerate(ids, 1)})


def test_blockwise_merge_scores_are_waterz_on_the_whole_volume(tmp_path: Path) -> None:
    """The whole graph is merged once: one block's scores are waterz's on the volume; in 2 × 2 × 2 blocks (a context
    covering the volume: every block's watershed is the whole volume's), they are waterz's on the blocks' fragments
    with the affinity 1 where a face cut one fragment of the watershed in two."""
    shape = (8, 48, 48)
    whole = tuple(s * v for s, v in zip(shape, VOXEL_SIZE))
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    _, affs = make_out_file(one, shape=shape)
    make_out_file(many, shape=shape)
    for out, block in ((one, whole), (many, (80, 216, 216))):
        cfg = config(out, block_size=block, context=whole)
        extract_fragments(cfg, progress=False)
        agglomerate(cfg, progress=False)
    _, edges = graph(config(one))
    pairs = [(u, v) for u, v, _, _ in edges]
    single = _waterz_scores(affs, read_fragments(one), pairs, "hist_quant_75")
    assert len(edges) > 30 and {(u, v): s for u, v, s, _ in edges} == single

    _, edges = graph(config(many))
    uncut, fragments = read_fragments(one), read_fragments(many)
    patched = affs.copy()
    for axis, face in ((0, 4), (1, 24), (2, 24)):
        here = [slice(None)] * 3
        before = list(here)
        here[axis], before[axis] = face, face - 1
        patched[axis][tuple(here)][uncut[tuple(here)] == uncut[tuple(before)]] = 255
    pairs = [(u, v) for u, v, _, _ in edges]
    assert {(u, v): s for u, v, s, _ in edges} == _waterz_scores(patched, fragments, pairs, "hist_quant_75")


@pytest.mark.parametrize("merge_function", ["hist_quant_75", "hist_quant_50_initmax", "mean"])
@pytest.mark.parametrize("spare", [1.0, 0.0])
def test_the_sparse_merge_of_a_graph_scores_as_waterz(merge_function: str, spare: float) -> None:
    """merge_region_graph on one volume's contacts (noisy affinities, many combined edges) gives every edge the score
    waterz's merge history gives it; with no spare room the sparse histograms' pool grows and is compacted. ``mean``:
    within 1e-6 (waterz sums the affinities in float32, here in float64), the histogram quantiles to the bit."""
    from test_segments import _noisy_affinities

    from lsd_nm.contacts import contacts_in_block
    from lsd_nm.fragments import watershed_from_affinities
    from lsd_nm.region_merging import merge_region_graph
    from lsd_nm.synthetic import generate_volume

    _, labels = generate_volume((8, 48, 48), VOXEL_SIZE, 3)
    affs = _noisy_affinities(labels, 3)
    fragments = watershed_from_affinities(affs.astype(np.float32) / 255, min_seed_distance=4)
    contacts = contacts_in_block(affs, fragments)
    assert len(contacts.edges) > 150 and np.diff(contacts.starts).max() > 20  # sparse bins: several per edge
    scores = merge_region_graph(np.unique(fragments), contacts, scoring_function(merge_function), spare=spare)
    pairs = [tuple(e) for e in contacts.edges.tolist()]
    ours = {pair: None if np.isnan(s) else float(s) for pair, s in zip(pairs, scores.tolist())}
    theirs = _waterz_scores(affs, fragments, pairs, merge_function)
    assert sum(s is not None for s in theirs.values()) > 100
    if merge_function == "mean":
        assert ours.keys() == theirs.keys() and all((ours[k] is None) == (theirs[k] is None) for k in ours)
        assert all(ours[k] == pytest.approx(theirs[k], abs=1e-6) for k in ours if ours[k] is not None)
    else:
        assert ours == theirs


def merge_scores(history, pairs, local):
    """waterz's merge history → the score of the merge that first joined each pair (None: never), by replaying
    it on a union-find and checking every pair after every merge."""
    root = {}

    def find(x):
        while root.get(x, x) != x:
            x = root[x]
        return x

    out = dict.fromkeys(pairs)
    for merge in history:
        root[find(int(merge["b"]))] = find(int(merge["a"]))
        for u, v in pairs:
            if out[(u, v)] is None and find(local[u]) == find(local[v]):
                out[(u, v)] = float(np.float32(merge["score"]))
    return out


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (environment.md §10); missing binaries fail the test."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if initdb[-1] is None:
        ci = " (CI=true: a missing server is a failure, not a skip)" if os.environ.get("CI") == "true" else ""
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql{ci}")
    bindir = Path(initdb[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="pg.", dir="/tmp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def as_postgres(command: str) -> None:
        if os.geteuid() == 0:  # initdb refuses to run as root
            subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True)
        else:
            subprocess.run(["sh", "-c", command], check=True, capture_output=True)

    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    as_postgres(f"{bindir}/initdb -D {folder}/data -U postgres -A trust --no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(f"{bindir}/pg_ctl -D {folder}/data -l {folder}/log -w -o '{options}' start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/lsd_test"
    finally:
        as_postgres(f"{bindir}/pg_ctl -D {folder}/data -m fast -w stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_sqlite_and_postgresql_give_identical_graphs(tmp_path: Path, postgres_url: str) -> None:
    lite, pg = tmp_path / "lite.zarr", tmp_path / "pg.zarr"
    make_out_file(lite)
    make_out_file(pg)
    for cfg in (config(lite), config(pg, db=postgres_url)):
        extract_fragments(cfg, progress=False)
        agglomerate(cfg, progress=False)
    nodes, edges = graph(config(lite))
    assert (nodes, edges) == graph(config(pg, db=postgres_url))
    assert len(nodes) > 100 and len(edges) > 300
    # the same Python types from both: tuples of ints, float or None, bool
    u, v, score, agglomerated = edges[0]
    assert type(score) is float and agglomerated is True and type(next(iter(nodes.values()))) is tuple


def test_other_merge_function_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    make_out_file(out)
    extract_fragments(config(out), progress=False)
    agglomerate(config(out), progress=False)
    before = graph(config(out))
    with pytest.raises(ConfigError, match=r"merge_function 'hist_quant_75'.*pass --overwrite"):
        agglomerate(config(out, merge_function="mean"), progress=False)
    assert graph(config(out)) == before
    result = agglomerate(config(out, merge_function="mean"), overwrite=True, progress=False)
    assert (result.processed, result.skipped) == (8, 0)
    after = graph(config(out))
    assert [e[:2] for e in after[1]] == [e[:2] for e in before[1]] and after != before


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    make_out_file(out)
    with pytest.raises(ConfigError, match=r"^fragments \(run 02_extract_fragments first\) '.*volumes/fragments' does"):
        agglomerate(config(out), progress=False)
    assert not (out / ".blocks").exists() and not Path(config(out).db_location).exists()

    extract_fragments(config(out), progress=False)
    url = "postgresql://postgres@127.0.0.1:1/lsd_test"
    with pytest.raises(ConfigError) as error:
        agglomerate(config(out, db=url), progress=False)
    assert str(error.value).startswith(f"db '{url}': cannot connect to PostgreSQL") and "\n" not in str(error.value)
    assert not (out / ".blocks" / "agglomerate").exists() and graph(config(out))[1] == []
