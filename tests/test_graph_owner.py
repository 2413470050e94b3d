"""A region graph knows whose it is: two runs given one ``db`` (a config copied with only ``out_file`` changed)
never replace or mix each other's graph, in SQLite and in a real PostgreSQL server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from predict_volumes import config, graph, make_out_file
from test_agglomerate import postgres_url  # noqa: F401 - the PostgreSQL server fixture

from lsd_nm.agglomerate import agglomerate
from lsd_nm.config import ConfigError
from lsd_nm.data import fragments_id
from lsd_nm.fragments import extract_fragments
from lsd_nm.graph import GraphOwner, check_owner, create_graph, open_graph, read_owner
from lsd_nm.segment import check_run
from lsd_nm.segments import find_segments


def _two_runs(tmp_path: Path, db: str | None = None):
    first, second = tmp_path / "first.zarr", tmp_path / "second.zarr"
    make_out_file(first)
    shutil.copytree(first, second)  # the same affinities: only out_file differs
    db = db or str(tmp_path / "shared.rag.db")
    return config(first, db=db, setup=None), config(second, db=db, setup=None)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_run_on_a_shared_db_is_refused_and_the_first_graph_stays(tmp_path, backend, request):
    db = request.getfixturevalue("postgres_url").replace("lsd_test", "lsd_owner") if backend == "postgresql" else None
    first, second = _two_runs(tmp_path, db)
    extract_fragments(first, progress=False)
    agglomerate(first, progress=False)
    before = graph(first)
    assert len(before[0]) > 100 and len(before[1]) > 300
    owner = read_owner(first.db_location)
    assert owner == GraphOwner(str(first.out_path.resolve()), fragments_id(first.out_path))

    expected = "holds the region graph of another run (fragments in '" + str(first.out_path.resolve())
    for overwrite in (False, True):  # --overwrite replaces this run's own results, never another run's
        with pytest.raises(ConfigError, match=r"holds the region graph of another run") as e:
            check_run(second, 2, overwrite=overwrite)
        assert expected in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(ConfigError, match=r"holds the region graph of another run"):
            extract_fragments(second, overwrite=overwrite, progress=False)
    assert not (second.out_path / "volumes/fragments").exists()
    assert graph(first) == before

    # the first run still resumes: everything is done, nothing changes
    assert extract_fragments(first, progress=False).processed == 0
    assert agglomerate(first, progress=False).processed == 0
    assert graph(first) == before


def test_a_run_whose_graph_was_replaced_by_another_refuses_every_graph_step(tmp_path):
    """The first run's graph replaced by another run's (e.g. by an older version): steps 2-4 of the first refuse,
    --overwrite included, instead of scoring the other run's graph against their own fragments."""
    first, second = _two_runs(tmp_path)
    extract_fragments(first, progress=False)
    agglomerate(first, progress=False)
    create_graph(second.db_location, GraphOwner(str(second.out_path.resolve()), "an-id-of-the-second-run"))
    for start in (2, 3, 4):
        with pytest.raises(ConfigError, match=f"holds the region graph of another run .*{second.out_path.name}"):
            check_run(first, start)
    with pytest.raises(ConfigError, match="holds the region graph of another run"):
        extract_fragments(first, overwrite=True, progress=False)
    with pytest.raises(ConfigError, match="holds the region graph of another run"):
        agglomerate(first, progress=False)
    with pytest.raises(ConfigError, match="holds the region graph of another run"):
        find_segments(first, progress=False)


def test_a_graph_of_earlier_fragments_of_the_same_run_needs_overwrite(tmp_path):
    first, _ = _two_runs(tmp_path)
    extract_fragments(first, progress=False)
    stale = GraphOwner(str(first.out_path.resolve()), "an-earlier-id")
    create_graph(first.db_location, stale)
    with pytest.raises(ConfigError, match="earlier fragments of .*first.zarr.*--overwrite"):
        agglomerate(first, progress=False)
    with pytest.raises(ConfigError, match="earlier fragments of .*first.zarr.*--overwrite"):
        extract_fragments(first, progress=False)
    # step 2 with --overwrite makes new fragments and their graph
    extract_fragments(first, overwrite=True, progress=False)
    assert read_owner(first.db_location) == GraphOwner(str(first.out_path.resolve()), fragments_id(first.out_path))
    agglomerate(first, progress=False)


def test_a_moved_run_keeps_its_graph_and_an_ownerless_graph_is_accepted(tmp_path):
    first, _ = _two_runs(tmp_path)
    extract_fragments(first, progress=False)
    agglomerate(first, progress=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(first.out_path, moved / "first.zarr")
    shutil.move(first.db_location, moved / "first.rag.db")
    shutil.move(tmp_path / "shared.rag-meta.json", moved / "first.rag-meta.json")
    again = config(moved / "first.zarr", db=str(moved / "first.rag.db"), setup=None)
    assert agglomerate(again, progress=False).processed == 0  # the fragments' id finds their graph
    # a graph written before owners were recorded (or by another tool) names no owner: it is not refused
    db = open_graph(again.db_location, "r+")
    db.con.execute("DROP TABLE lsd_nm_owner")
    db.con.commit()
    db.close()
    assert read_owner(again.db_location) is None
    check_owner(again.db_location, tmp_path / "elsewhere.zarr", None)


def test_a_corrupt_sqlite_db_is_one_line_and_steps_2_3_are_not_reported_done(tmp_path):
    first, _ = _two_runs(tmp_path)
    extract_fragments(first, progress=False)
    agglomerate(first, progress=False)
    Path(first.db_location).write_bytes(b"not a database, but garbage of a full disk " * 100)
    for start in (2, 3, 4):  # (step 5 reads the LUTs, not the graph)
        with pytest.raises(ConfigError, match=r"^0[2-4]_\w+: db '.*shared.rag.db': cannot (read|open) the SQLite file") as e:
            check_run(first, start)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot read the SQLite file"):
        extract_fragments(first, progress=False)
    with pytest.raises(ConfigError, match="cannot read the SQLite file"):
        agglomerate(first, progress=False)
