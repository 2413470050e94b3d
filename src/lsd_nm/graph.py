"""The region graph of a run: fragments (nodes with centres) and their edges (merge scores), in SQLite or PostgreSQL.

PostgreSQL goes through funlib.persistence 0.7 (``PgSQLGraphDatabase``). SQLite goes through
:class:`SQLiteRegionGraph`, which reads and writes exactly funlib.persistence's ``SQLiteGraphDataBase`` layout (tables,
columns, index, ``<stem>-meta.json``), so either opens what the other wrote (the tests keep funlib's class as the
reference): importing funlib.persistence imports dask, ~1 s that every step and every worker process opening the graph
paid for four plain SQL statements. The backends do not read back the same Python values (lists vs tuples, float32 vs
float64, bool vs 0/1), so every read here goes through :func:`node_record` / :func:`edge_record`, which give
identical values for all.

* nodes: ``id`` (uint64 fragment id), ``center`` (z, y, x in nm, int);
* edges: ``u < v``, ``merge_score`` (float32-exact float; None if waterz never merged them below 1.0),
  ``agglomerated`` (bool: the edge came from agglomeration);
* its owner (table ``lsd_nm_owner``, :class:`GraphOwner`): the fragments it is the graph of — their container and
  the id stamped into them when step 2 created them — so that two runs given one ``db`` never mix or replace each
  other's graph (:func:`check_owner`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from funlib.geometry import Roi

from .config import ConfigError

EDGE_ATTRS: dict[str, Any] = {"merge_score": float, "agglomerated": bool}


def _node_attrs() -> dict[str, Any]:
    from funlib.persistence.types import Vec

    return {"center": Vec(int, 3)}


META = {
    "position_attribute": "center", "directed": False,
    "total_roi_offset": [None, None, None], "total_roi_shape": [None, None, None],
    "nodes_table_name": "nodes", "edges_table_name": "edges", "endpoint_names": ["u", "v"],
    "node_attrs": {"center": "Vec(int, 3)"}, "edge_attrs": {"merge_score": "float", "agglomerated": "bool"}, "ndims": 3,
}  # fmt: skip
"""The ``<stem>-meta.json`` of a region graph in SQLite (funlib.persistence's metadata of our node and edge attrs)."""


OWNER_TABLE = "lsd_nm_owner"
"""The table of a region graph (SQLite and PostgreSQL alike) that names its owner: rows ``(key, value)``."""


@dataclass(frozen=True)
class GraphOwner:
    """Whose region graph it is: the fragments its nodes are (step 2 writes both)."""

    fragments: str
    """The container of the fragments (resolved path), for messages and to tell another run's graph from our own."""
    fragments_id: str
    """The id stamped into those fragments when they were created (attr ``lsd_nm_fragments_id``)."""


class SQLiteRegionGraph:
    """A region graph in a SQLite file, in funlib.persistence 0.7's ``SQLiteGraphDataBase`` layout: tables
    ``nodes(id INTEGER PRIMARY KEY, center_0, center_1, center_2)`` (index ``pos_index`` on the centre) and
    ``edges(u, v, merge_score, agglomerated, PRIMARY KEY (u, v))``, metadata in ``<stem>-meta.json``. Offers the
    calls of that class this module uses (``read_nodes``, ``read_edges``, ``write_nodes``, ``write_edges``,
    ``close``), with the same values; writes insert or ignore (an existing node or edge is kept) and commit.

    Args:
        path: the SQLite file.
        mode: ``r`` (writes raise), ``r+``, or ``w`` (drops the tables and creates them empty).
        owner: with ``w``, the owner recorded in the new graph.
    """

    def __init__(self, path: Path, mode: str = "r+", owner: GraphOwner | None = None) -> None:
        self.path, self.mode = Path(path), mode
        self.meta = self.path.parent / f"{self.path.stem}-meta.json"
        if mode != "w":
            stored = json.loads(self.meta.read_text())
            if stored.get("node_attrs") != META["node_attrs"] or stored.get("nodes_table_name") != "nodes":
                raise ConfigError(f"db '{self.path}': not a region graph (its {self.meta.name} lists other attributes)")
        self.con = sqlite3.connect(self.path, timeout=60)
        if mode == "w":
            for table in ("nodes", "edges", "edge_index", OWNER_TABLE):
                self.con.execute(f"DROP TABLE IF EXISTS {table}")
            self.meta.unlink(missing_ok=True)
            self._create_tables()
            if owner is not None:  # committed with the empty tables: a new graph is never without its owner
                self.con.execute(f"CREATE TABLE {OWNER_TABLE}(key TEXT PRIMARY KEY, value TEXT)")
                rows = [("fragments", owner.fragments), ("fragments_id", owner.fragments_id)]
                self.con.executemany(f"INSERT INTO {OWNER_TABLE} (key, value) VALUES (?, ?)", rows)
            self.con.commit()
            self.meta.write_text(json.dumps(META))

    def _create_tables(self) -> None:
        self.con.execute("CREATE TABLE IF NOT EXISTS nodes(id INTEGER not null PRIMARY KEY, center_0, center_1, center_2)")
        self.con.execute("CREATE INDEX IF NOT EXISTS pos_index ON nodes(center_0,center_1,center_2)")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS edges(u INTEGER not null, v INTEGER not null, merge_score, agglomerated, "
            "PRIMARY KEY (u, v))"
        )

    def _writable(self) -> None:
        if self.mode == "r":
            raise RuntimeError("Trying to write to read-only DB")

    def read_nodes(self, roi: Roi | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT id, center_0, center_1, center_2 FROM nodes", []
        if roi is not None:
            bounds = [f"center_{d}>=? AND center_{d}<?" for d in range(3)]
            query += " WHERE " + " AND ".join(bounds)
            args = [x for b, e in zip(roi.begin, roi.end) for x in (int(b), int(e))]
        return [{"id": row[0], "center": tuple(row[1:])} for row in self.con.execute(query, args)]

    def read_edges(self) -> list[dict[str, Any]]:
        rows = self.con.execute("SELECT u, v, merge_score, agglomerated FROM edges")
        return [{"u": u, "v": v, "merge_score": s, "agglomerated": a} for u, v, s, a in rows]

    def write_nodes(self, nodes: dict[int, dict[str, Any]]) -> None:
        self._writable()
        rows = [(int(i), *(int(c) for c in data["center"])) for i, data in nodes.items()]
        self.con.executemany("INSERT OR IGNORE INTO nodes (id, center_0, center_1, center_2) VALUES (?, ?, ?, ?)", rows)
        self.con.commit()

    def write_edges(self, nodes: dict[int, Any], edges: dict[tuple[int, int], dict[str, Any]]) -> None:
        self._writable()
        rows = [
            (min(int(u), int(v)), max(int(u), int(v)), data.get("merge_score"), data.get("agglomerated"))
            for (u, v), data in edges.items()
        ]
        self.con.executemany("INSERT OR IGNORE INTO edges (u, v, merge_score, agglomerated) VALUES (?, ?, ?, ?)", rows)
        self.con.commit()

    def drop_edges(self) -> None:
        """Delete every edge (the table is dropped and created again, as funlib.persistence does it)."""
        self._writable()
        self.con.execute("DROP TABLE IF EXISTS edges")
        self._create_tables()
        self.con.commit()

    def close(self) -> None:
        self.con.close()


def _sqlite_owner(path: Path) -> GraphOwner | None:
    with closing(sqlite3.connect(path, timeout=60)) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if OWNER_TABLE not in tables:
            return None
        values = dict(con.execute(f"SELECT key, value FROM {OWNER_TABLE}"))
    return GraphOwner(values["fragments"], values["fragments_id"]) if "fragments_id" in values else None


def _postgres_connection(location: str):
    import psycopg2

    args = _postgres_args(location)
    return psycopg2.connect(host=args["db_host"], port=args["db_port"], user=args["db_user"],
                            password=args["db_password"], database=args["db_name"], connect_timeout=5)  # fmt: skip


def read_owner(location: str) -> GraphOwner | None:
    """The owner recorded in the region graph at ``location``; None when there is no graph, or one written before
    owners were recorded (or by another tool).

    Raises:
        ConfigError: the SQLite file cannot be read, or the PostgreSQL server does not answer.
    """
    if not graph_exists(location):
        return None
    if not is_postgres(location):
        try:
            return _sqlite_owner(Path(location))
        except sqlite3.Error as e:
            raise ConfigError(f"db '{location}': cannot read the SQLite file ({type(e).__name__}: {e})") from None
    import psycopg2

    try:
        with closing(_postgres_connection(location)) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (OWNER_TABLE,))
            if cur.fetchone()[0] is None:
                return None
            cur.execute(f"SELECT key, value FROM {OWNER_TABLE}")
            values = dict(cur.fetchall())
    except psycopg2.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"db '{_safe(location)}': cannot read its owner ({reason})") from None
    return GraphOwner(values["fragments"], values["fragments_id"]) if "fragments_id" in values else None


def create_graph(location: str, owner: GraphOwner) -> None:
    """Create an empty region graph at ``location`` (replacing what is there) that belongs to ``owner``."""
    if not is_postgres(location):
        open_graph(location, "w", owner).close()
        return
    open_graph(location, "w").close()
    rows = [("fragments", owner.fragments), ("fragments_id", owner.fragments_id)]
    with closing(_postgres_connection(location)) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {OWNER_TABLE}(key TEXT PRIMARY KEY, value TEXT)")
        cur.execute(f"DELETE FROM {OWNER_TABLE}")
        cur.executemany(f"INSERT INTO {OWNER_TABLE} (key, value) VALUES (%s, %s)", rows)
        conn.commit()


def check_owner(location: str, fragments: Path, fragments_id: str | None, replacing: bool = False) -> None:
    """Refuse a region graph that is not the graph of these fragments, before anything is written.

    Args:
        location: ``RunConfig.db_location``.
        fragments: the container of this run's fragments (``RunConfig.fragments_path``).
        fragments_id: the id stamped into them (None: there are none yet, or they predate ids).
        replacing: this run (step 2) is about to create its fragments and the graph anew; a stale graph of the same
            container is then no problem, another run's still is.

    Raises:
        ConfigError: the graph belongs to the fragments of another container (two runs share one ``db``), or, unless
            ``replacing``, to earlier fragments of this container.
    """
    owner = read_owner(location)
    if owner is None or (fragments_id is not None and owner.fragments_id == fragments_id):
        return
    where = _safe(location) if is_postgres(location) else location
    if owner.fragments != str(Path(fragments).resolve()):
        raise ConfigError(
            f"db '{where}' holds the region graph of another run (fragments in '{owner.fragments}'): two runs cannot "
            "share one db; set this run's own db in its config (or delete that graph if its run is gone)"
        )
    if not replacing:
        raise ConfigError(
            f"db '{where}' holds the region graph of earlier fragments of '{Path(fragments).resolve()}', not of its current ones; "
            "run 02_extract_fragments again with --overwrite"
        )


def check_graph_of(config) -> None:
    """:func:`check_owner` for a run's existing region graph: it must be the graph of the run's fragments
    (``fragments_file``/``fragments_dataset``, else out_file's own).

    Args:
        config: the run config (:class:`~lsd_nm.run_config.RunConfig`).
    """
    from .data import fragments_id

    check_owner(config.db_location, config.fragments_path, fragments_id(config.fragments_path, config.fragments_dataset))


def is_postgres(location: str) -> bool:
    """Whether a ``db_location`` is a PostgreSQL URL (else a SQLite file)."""
    return location.startswith("postgresql://")


def _postgres_args(url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if not name or not name.replace("_", "").isalnum() or name.lower() != name:
        raise ConfigError(f"db '{_safe(url)}': the database name must be plain lower-case letters, digits and _")
    return {
        "db_name": name,
        "db_host": parsed.hostname or "localhost",
        "db_port": parsed.port,
        "db_user": unquote(parsed.username) if parsed.username else None,
        "db_password": unquote(parsed.password) if parsed.password else None,
    }


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@")


def graph_exists(location: str) -> bool:
    """Whether a region graph was created at ``location`` (for PostgreSQL: whether the server answers and has one)."""
    if not is_postgres(location):
        path = Path(location)
        return path.exists() and (path.parent / f"{path.stem}-meta.json").exists()
    try:
        open_graph(location, "r").close()
    except ConfigError:
        return False
    return True


def open_graph(location: str, mode: str = "r+", owner: GraphOwner | None = None):
    """Open (``r``, ``r+``) or create (``w``: drops existing tables) the region graph.

    Args:
        location: ``RunConfig.db_location``: a SQLite file or a ``postgresql://user@host:port/name`` URL.
        mode: ``r``, ``r+`` or ``w``.
        owner: with ``w`` on SQLite, the owner recorded with the new tables (:func:`create_graph` for both backends).

    Raises:
        ConfigError: one line naming the location when the server does not answer or the graph does not exist.
    """
    if is_postgres(location):
        import psycopg2
        from funlib.persistence.graphs import PgSQLGraphDatabase

        common = {"position_attribute": "center", "mode": mode, "directed": False}
        if mode == "w":
            common.update(node_attrs=_node_attrs(), edge_attrs=dict(EDGE_ATTRS))

        try:
            return PgSQLGraphDatabase(**_postgres_args(location), **common)
        except psycopg2.OperationalError as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"db '{_safe(location)}': cannot connect to PostgreSQL ({reason})") from None
        except RuntimeError:
            raise ConfigError(f"db '{_safe(location)}': no region graph there (run 02_extract_fragments)") from None
    path = Path(location)
    if mode != "w" and not graph_exists(location):
        raise ConfigError(f"db '{path}': no region graph there (run 02_extract_fragments)")
    if mode == "w":
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return SQLiteRegionGraph(path, mode, owner)
    except (sqlite3.Error, OSError, ValueError) as e:
        raise ConfigError(f"db '{path}': cannot open the SQLite file ({type(e).__name__}: {e})") from None


def check_reachable(location: str) -> None:
    """Raise a one-line :class:`ConfigError` unless the region graph at ``location`` can be written: the PostgreSQL
    server answers and lets this user create the database (or its tables, when it exists); the SQLite file's folder
    exists and is writable, and so is the file when it exists. Writes nothing."""
    if is_postgres(location):
        _check_postgres(location)
        return
    path = Path(location)
    # a folder that does not exist yet is made by the step that creates the graph (or by step 1 with out_file's):
    # what must be writable is the nearest folder that exists
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"db '{location}': {folder} is not a folder")
    for target in (path, path.parent / f"{path.stem}-meta.json"):
        if target.exists() and not os.access(target, os.W_OK):
            raise ConfigError(f"db '{location}': {target} is not writable")
    try:  # what the folder's permissions, a read-only mount or a special file system allow (root included)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ConfigError(f"db '{location}': cannot write in {folder} ({e.strerror})") from None


def _check_postgres(location: str) -> None:
    import psycopg2

    args = _postgres_args(location)
    connect = dict(host=args["db_host"], port=args["db_port"], user=args["db_user"], password=args["db_password"],
                   connect_timeout=5)  # fmt: skip
    try:
        with closing(psycopg2.connect(**connect, database="postgres")) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (args["db_name"],))
            exists = cur.fetchone() is not None
            if not exists:
                cur.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
                if not cur.fetchone()[0]:
                    raise ConfigError(
                        f"db '{_safe(location)}': the database does not exist and this user may not create it (CREATEDB)"
                    )
        if exists:
            with closing(psycopg2.connect(**connect, database=args["db_name"])) as conn, conn.cursor() as cur:
                cur.execute("SELECT has_schema_privilege('public', 'CREATE')")
                if not cur.fetchone()[0]:
                    raise ConfigError(f"db '{_safe(location)}': this user may not create tables in the database")
    except psycopg2.OperationalError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"db '{_safe(location)}': cannot connect to PostgreSQL ({reason})") from None


def drop_edges(db) -> None:
    """Delete every edge of an open graph (agglomeration with ``--overwrite``); nodes stay."""
    if isinstance(db, SQLiteRegionGraph):
        db.drop_edges()
        return
    # funlib.persistence 0.7 has no public call for this: drop the table and create it again (IF NOT EXISTS)
    db._drop_edges()
    db._create_tables()
    db._commit()


def score32(score: float | None) -> float | None:
    """A merge score rounded to float32, as PostgreSQL's REAL stores it (so both backends hold the same value)."""
    return None if score is None else float(np.float32(score))


def node_record(node: dict[str, Any]) -> tuple[int, tuple[int, int, int]]:
    """``(id, center)`` of a node as read back from either backend."""
    return int(node["id"]), tuple(int(c) for c in node["center"])


def edge_record(edge: dict[str, Any]) -> tuple[int, int, float | None, bool]:
    """``(u, v, merge_score, agglomerated)`` of an edge as read back from either backend (u < v)."""
    u, v = sorted((int(edge["u"]), int(edge["v"])))
    return u, v, score32(edge.get("merge_score")), bool(edge.get("agglomerated"))


def read_nodes(db, roi: Roi | None = None) -> dict[int, tuple[int, int, int]]:
    """Fragment id → centre (nm) of the nodes whose centre lies in ``roi`` (all without)."""
    return dict(node_record(n) for n in db.read_nodes(roi))


def read_edges(db) -> list[tuple[int, int, float | None, bool]]:
    """All edges, sorted, as ``(u, v, merge_score, agglomerated)``."""
    return sorted(edge_record(e) for e in db.read_edges())


ROWS_PER_CHUNK = 1_000_000
"""Rows fetched at a time by :func:`read_graph_arrays` (a chunk's Python rows are the only per-edge objects)."""


def _rows(location: str, query: str):
    """The rows of ``query`` on the graph at ``location``, in chunks of :data:`ROWS_PER_CHUNK` (PostgreSQL through a
    server-side cursor: the server streams them)."""
    if is_postgres(location):
        with closing(_postgres_connection(location)) as conn, conn.cursor(name="lsd_nm_rows") as cur:
            cur.itersize = ROWS_PER_CHUNK
            cur.execute(query)
            while rows := cur.fetchmany(ROWS_PER_CHUNK):
                yield rows
        return
    with closing(sqlite3.connect(location, timeout=60)) as con:
        cursor = con.execute(query)
        while rows := cursor.fetchmany(ROWS_PER_CHUNK):
            yield rows


def _count(location: str, table: str) -> int:
    """Rows of ``table`` (``nodes`` or ``edges``) in the graph at ``location``."""
    return next(iter(_rows(location, f"SELECT COUNT(*) FROM {table}")))[0][0]


def _fill_edges(location: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The edges' ``(u, v)`` and merge scores (None → NaN) in two arrays of ``count`` rows filled chunk by chunk from
    one query (rows beyond ``count``, written since it was counted, are appended)."""
    pairs, scores = np.empty((count, 2), np.uint64), np.empty(count, np.float64)
    filled, extra = 0, []
    for rows in _rows(location, "SELECT u, v, merge_score FROM edges"):
        chunk_pairs = np.array([row[:2] for row in rows], dtype=np.uint64).reshape(-1, 2)
        chunk_scores = np.array([row[2] for row in rows], dtype=np.float64)
        take = min(len(rows), count - filled)
        pairs[filled : filled + take], scores[filled : filled + take] = chunk_pairs[:take], chunk_scores[:take]
        filled += take
        if take < len(rows):
            extra.append((chunk_pairs[take:], chunk_scores[take:]))
    if extra or filled < count:
        pairs = np.concatenate([pairs[:filled], *(p for p, _ in extra)])
        scores = np.concatenate([scores[:filled], *(v for _, v in extra)])
    return pairs, scores


def read_graph_arrays(location: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole region graph as arrays, read in chunks — no Python object per node or edge at rest (at 10⁸ edges a
    tuple each is tens of GB): ``nodes`` (sorted uint64), ``edges`` ((n, 2) uint64, u < v, sorted by u then v) and
    ``scores`` (float64 holding float32 values as both backends store them; NaN: never merged). The same values as
    :func:`read_nodes` and :func:`read_edges`. The edges are counted, filled and sorted in place: the peak is about
    48 bytes per edge (the 24 of the result, a sort order and one reordered copy), not a copy per stage.

    Raises:
        ConfigError: no region graph at ``location``, or it cannot be read.
    """
    if not graph_exists(location):
        raise ConfigError(f"db '{_safe(location)}': no region graph there (run 02_extract_fragments)")
    try:
        ids = [np.array([row[0] for row in rows], dtype=np.uint64) for rows in _rows(location, "SELECT id FROM nodes")]
        edges, scores = _fill_edges(location, _count(location, "edges"))
    except sqlite3.Error as e:
        raise ConfigError(f"db '{location}': cannot read the SQLite file ({type(e).__name__}: {e})") from None
    nodes = np.sort(np.concatenate(ids)) if ids else np.zeros(0, np.uint64)
    edges.sort(axis=1)
    np.copyto(scores, scores.astype(np.float32))
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    if not np.array_equal(order, np.arange(len(order))):
        edges, scores = edges[order], scores[order]
    del order
    return nodes, edges, scores


def write_nodes(db, centers: dict[int, Iterable[int]]) -> None:
    """Insert nodes (existing ids are kept as they are: re-running a block writes the same values)."""
    if centers:
        db.write_nodes({int(i): {"center": tuple(int(c) for c in center)} for i, center in centers.items()})


def write_edges(db, centers: dict[int, Iterable[int]], edges: dict[tuple[int, int], tuple[float | None, bool]]) -> None:
    """Insert edges ``(u, v) → (merge_score, agglomerated)``; ``centers`` must hold the centre of every ``u``."""
    if not edges:
        return
    nodes = {int(i): {"center": tuple(int(c) for c in center)} for i, center in centers.items()}
    data = {
        (int(u), int(v)): {"merge_score": score32(score), "agglomerated": bool(agglomerated)}
        for (u, v), (score, agglomerated) in edges.items()
    }
    db.write_edges(nodes, data)
