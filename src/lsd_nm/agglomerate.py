"""Step 3 of ``03_predict``: agglomeration — waterz over the fragments of each block, edges into the region graph
(paper §6.4.3).

Per block (read = write ROI ± ``context``, the geometry of the fragments step): fragments (relabelled
consecutively, since waterz allocates by the largest id) and affinities (uint8 ×255 → [0, 1]) go to
``waterz.agglomerate(…, thresholds=[0, 1], scoring_function=<merge_function>, discretize_queue=256,
return_merge_history=True, return_region_graph=True)``. The first yield's region graph lists every pair of
face-adjacent fragments; the merge history of the second gives each pair's ``merge_score``: the score of the merge
that first put both into one segment (None if that never happened below 1.0). An edge ``u < v`` is written by the
block whose write ROI holds ``u``'s centre — that block sees all of ``u``'s contacts (a fragment lies within one
write block and the context is ≥ 1 voxel), so every edge is written once, with all its contacts.

Run: ``python 03_predict/03_agglomerate.py CONFIG.json [--overwrite]``
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blockwise import BlockwiseResult, Geometry, block_geometry, run_job
from .config import ConfigError
from .data import AFFS, FRAGMENTS, FRAGMENTS_SETTINGS, Volume, open_dataset, read_padded, write_text
from .graph import check_graph_of, check_reachable, drop_edges, graph_exists, open_graph, read_nodes, write_edges
from .run_config import RunConfig


def scoring_function(merge_function: str) -> str:
    """The waterz scoring function of a merge function name (``hist_quant_Q[_initmax]`` or ``mean``)."""
    if merge_function == "mean":
        return "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>"
    parts = merge_function.split("_")
    if len(parts) in (3, 4) and parts[:2] == ["hist", "quant"] and parts[2].isdigit():
        initmax = "true" if len(parts) == 4 and parts[3] == "initmax" else "false"
        if len(parts) == 3 or initmax == "true":
            return f"OneMinus<HistogramQuantileAffinity<RegionGraphType, {int(parts[2])}, ScoreValue, 256, {initmax}>>"
    raise ConfigError(f"merge_function '{merge_function}': expected mean or hist_quant_Q[_initmax]")


def merge_scores(
    pairs: Iterable[tuple[int, int]], history: Iterable[dict[str, Any]]
) -> dict[tuple[int, int], float | None]:
    """For each pair, the score of the merge that first put both into one segment (None if none did).

    Args:
        pairs: ``(u, v)`` region-graph edges.
        history: waterz's merge history, in order: ``{a, b, c, score}`` (a and b merged into c).
    """
    parent: dict[int, int] = {}
    rank: dict[int, int] = {}
    attached: dict[int, tuple[int, float]] = {}  # node → (merge time, score) when it was hung under its parent

    def root(x: int) -> int:
        while x in parent:
            x = parent[x]
        return x

    for time, merge in enumerate(history):
        a, b = root(int(merge["a"])), root(int(merge["b"]))
        if a == b:
            continue
        if rank.get(a, 0) < rank.get(b, 0):
            a, b = b, a
        parent[b] = a
        attached[b] = (time, float(merge["score"]))
        if rank.get(a, 0) == rank.get(b, 0):
            rank[a] = rank.get(a, 0) + 1

    def path(x: int) -> list[int]:
        nodes = [x]
        while x in parent:
            x = parent[x]
            nodes.append(x)
        return nodes

    scores: dict[tuple[int, int], float | None] = {}
    for u, v in pairs:
        pu, pv = path(u), path(v)
        if pu[-1] != pv[-1]:
            scores[(u, v)] = None
            continue
        on_u = set(pu)
        lca_index_v = next(i for i, x in enumerate(pv) if x in on_u)
        lca = pv[lca_index_v]
        below = pu[: pu.index(lca)] + pv[:lca_index_v]
        # union by rank without path compression: the last attachment below the common ancestor joined u and v
        scores[(u, v)] = max((attached[x] for x in below), default=(0, 0.0))[1]
    return scores


@dataclass(frozen=True)
class AgglomerateJob:
    """Everything a worker needs (picklable)."""

    affs: Volume
    fragments: Volume
    geometry: Geometry
    db_location: str
    scoring_function: str


def _setup_worker(job: AgglomerateJob) -> dict[str, Any]:
    return {"affs": job.affs.open("r"), "fragments": job.fragments.open("r"), "db": open_graph(job.db_location, "r+")}


def agglomerate_in_block(
    affs: np.ndarray, fragments: np.ndarray, scoring: str
) -> dict[tuple[int, int], float | None]:
    """Region-graph edges ``(u, v)`` (u < v, original ids) of the fragments of one read ROI and their merge scores.

    Args:
        affs: (channels, z, y, x) affinities as stored (uint8 ×255, or float in [0, 1]); the first 3 are used.
        fragments: (z, y, x) fragment ids (0: none).
        scoring: the waterz scoring function.
    """
    import fastremap  # np.unique's result, ~8 times faster on a block
    import waterz

    ids, local = fastremap.unique(fragments, return_inverse=True)
    local = local.reshape(fragments.shape).astype(np.uint64)
    if ids[0] != 0:  # local ids 1…n for the fragments, 0 for no fragment
        ids = np.concatenate([[0], ids]).astype(fragments.dtype)
        local += np.uint64(1)
    if len(ids) < 3:
        return {}
    affs = np.ascontiguousarray(affs[:3], dtype=np.float32) / (255.0 if affs.dtype == np.uint8 else 1.0)
    generator = waterz.agglomerate(
        affs, [0.0, 1.0], fragments=np.ascontiguousarray(local), scoring_function=scoring, discretize_queue=256,
        return_merge_history=True, return_region_graph=True,
    )  # fmt: skip
    # waterz reuses its buffers between yields: copy what each one gives before asking for the next
    _, _, region_graph = next(generator)
    pairs = sorted({(min(int(e["u"]), int(e["v"])), max(int(e["u"]), int(e["v"]))) for e in region_graph})
    _, history, _ = next(generator)
    history = [dict(m) for m in history]
    generator.close()
    scores = merge_scores(pairs, history)
    return {(int(ids[u]), int(ids[v])): score for (u, v), score in scores.items()}


def process_block(job: AgglomerateJob, block, resources: dict[str, Any]) -> None:
    """Edges of the fragments whose centres lie in this block's write ROI → the region graph."""
    fragments = read_padded(resources["fragments"], job.fragments, block.read_roi)
    affs = read_padded(resources["affs"], job.affs, block.read_roi)
    owned = read_nodes(resources["db"], block.write_roi)
    if not owned:
        return
    edges = agglomerate_in_block(affs, fragments, job.scoring_function)
    mine = {(u, v): (score, True) for (u, v), score in edges.items() if u in owned}
    write_edges(resources["db"], owned, mine)


def agglomerate(config: RunConfig, overwrite: bool = False, progress: bool = True) -> BlockwiseResult:
    """Write the region graph's edges (``merge_score``, ``agglomerated``) for ``volumes/fragments``, blockwise.

    Re-running with the same settings resumes; edges from another ``merge_function`` (or older fragments) are not
    replaced unless ``overwrite``.

    Args:
        config: the run config (``out_file``, ``block_size``, ``context``, ``num_workers``, ``worker_command``,
            ``db``, ``merge_function``).
        overwrite: drop existing edges and start over.
        progress: show daisy's progress bar.

    Raises:
        ConfigError: missing fragments/affinities/region graph, unreachable database, edges from other settings —
            before anything is written.
    """
    import zarr

    config.check_own_fragments("03_agglomerate")
    out_file = config.out_path
    scoring = scoring_function(config.merge_function)
    affs = open_dataset(out_file, AFFS, "affinities")
    fragments = open_dataset(out_file, FRAGMENTS, "fragments (run 02_extract_fragments first)")
    if fragments.voxel_size != affs.voxel_size or fragments.roi != affs.roi:
        raise ConfigError(f"fragments {fragments.roi} and affinities {affs.roi} do not cover the same voxels")
    geometry = block_geometry(config, fragments)
    made_with = zarr.open_array(fragments.path, mode="r").attrs.asdict().get(FRAGMENTS_SETTINGS, {})
    if made_with.get("block_size") != list(config.block_size) or made_with.get("context") != list(config.context):
        raise ConfigError(
            f"'{fragments.path}' was made with block_size {made_with.get('block_size')} and context "
            f"{made_with.get('context')}; agglomerate with the same (or extract the fragments again)"
        )
    check_reachable(config.db_location)
    if not graph_exists(config.db_location):
        raise ConfigError(f"db '{config.db_location}': no region graph there (run 02_extract_fragments first)")
    check_graph_of(config)

    wanted = {"merge_function": config.merge_function, "fragments": made_with}
    tracking = config.blocks_dir / "agglomerate"
    settings = config.blocks_dir / "agglomerate.json"
    existing = json.loads(settings.read_text()) if settings.exists() else None
    if existing is not None and existing != wanted and not overwrite:
        made = (
            f"merge_function '{existing.get('merge_function')}'"
            if existing.get("merge_function") != config.merge_function
            else "fragments made with other settings"
        )
        raise ConfigError(f"the region graph holds edges from {made}; pass --overwrite to replace them")
    if existing != wanted or overwrite:
        db = open_graph(config.db_location, "r+")
        drop_edges(db)
        db.close()
        shutil.rmtree(tracking, ignore_errors=True)
        write_text(settings, json.dumps(wanted))
    job = AgglomerateJob(affs, fragments, geometry, config.db_location, scoring)
    return run_job(
        "agglomerate", geometry.total_roi, geometry.read_roi, geometry.write_roi,
        job, process_block, _setup_worker, config, tracking, progress, preload=("waterz",),
    )
