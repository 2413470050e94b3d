"""Step 3 of ``03_predict``: agglomeration — the region graph's edges and their merge scores (paper §6.4.3).

Per block (read = write ROI ± ``context``, the geometry of the fragments step), the edges of the fragments whose
centre lies in the block's write ROI (an edge ``u < v`` belongs to ``u``'s block, which sees all of ``u``'s contacts:
a fragment lies within one write block and the context is ≥ 1 voxel) and their contact statistics — a 256-bin
histogram and the sum of the affinities (uint8 ×255 → [0, 1]) of every face-adjacent voxel pair between the two
fragments (:func:`lsd_nm.contacts.contacts_in_block`) — go into ``<out_file>/.blocks/agglomerate_contacts/``.
Once every block is done, the whole graph is merged at once with waterz's algorithm and ``merge_function``
(:func:`lsd_nm.region_merging.merge_region_graph`): an edge's ``merge_score`` is the score of the merge that first
put both fragments into one segment (None if that never happened below 1.0), and every edge is written to the
region graph. The original ran waterz per block (``agglomerate_in_block``) and kept the scores of that block's
merge history: an edge at a block face got the score of a merge with its other fragment cropped to the context,
which cut neurons at the faces (README, "Blocks without seams"); merged once, the scores are those of one block,
however many blocks and workers.

Run: ``python 03_predict/03_agglomerate.py CONFIG.json [--overwrite]``
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from funlib.geometry import Coordinate

from .blockwise import BlockwiseResult, Geometry, block_geometry, block_index, run_job
from .config import ConfigError
from .data import AFFS, FRAGMENTS, FRAGMENTS_SETTINGS, Volume, atomic_path, open_dataset, read_padded, write_text
from .graph import check_graph_of, check_reachable, drop_edges, graph_exists, open_graph, read_nodes, write_edges
from .contacts import FACES, Contacts, contacts_in_block, load_faces, within_fragments
from .run_config import RunConfig
from .steps import AGGLOMERATE

CONTACTS = "agglomerate_contacts"
"""The folder (in the run's ``.blocks``) of the blocks' contact statistics."""
MERGED = "agglomerate.merged"
"""The file (in the run's ``.blocks``) that says the merge of the whole graph wrote its edges."""


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


@dataclass(frozen=True)
class AgglomerateJob:
    """Everything a worker needs (picklable)."""

    affs: Volume
    fragments: Volume
    geometry: Geometry
    db_location: str
    scoring_function: str
    contacts: Path
    """The folder of the blocks' contact statistics (one ``<block index>.npz`` each)."""
    faces: Path
    """The folder of the fragments blocks' views beyond their faces (:func:`lsd_nm.contacts.face_views`)."""


def _setup_worker(job: AgglomerateJob) -> dict[str, Any]:
    return {"affs": job.affs.open("r"), "fragments": job.fragments.open("r"), "db": open_graph(job.db_location, "r")}


def contacts_path(folder: Path, index: int) -> Path:
    """The contact statistics of the block of grid index ``index``."""
    return folder / f"{index}.npz"


def process_block(job: AgglomerateJob, block, resources: dict[str, Any]) -> None:
    """The contact statistics of the edges of the fragments whose centres lie in this block's write ROI → one file
    per block (its index), written atomically."""
    owned = read_nodes(resources["db"], block.write_roi)
    if not owned:
        return
    fragments = read_padded(resources["fragments"], job.fragments, block.read_roi)
    affs = read_padded(resources["affs"], job.affs, block.read_roi)
    geometry = job.geometry
    index = block_index(block.write_roi, geometry.write_total, geometry.block_size)
    write_roi = block.write_roi.intersect(geometry.region)  # the fragments step's, whose faces it saw
    vs = geometry.voxel_size
    begin = tuple((w - r) // v for w, r, v in zip(write_roi.begin, block.read_roi.begin, vs))
    size = tuple(s // v for s, v in zip(write_roi.shape, vs))
    own = load_faces(job.faces / f"{index}.npz") or {}
    neighbours = []
    for step in (-1, 1):
        row = []
        for d in range(3):
            shift = [0, 0, 0]
            shift[d] = step * geometry.block_size[d]
            other = block.write_roi.shift(Coordinate(shift))
            inside = geometry.write_total.begin[d] <= other.begin[d] < geometry.write_total.end[d]
            row.append(load_faces(job.faces / f"{block_index(other, geometry.write_total, geometry.block_size)}.npz")
                       if inside else None)  # fmt: skip
        neighbours.append(row)
    within = within_fragments(fragments, begin, size, own, neighbours[0], neighbours[1])
    contacts = contacts_in_block(affs, fragments, np.fromiter(owned, np.uint64, len(owned)), within)
    with atomic_path(contacts_path(job.contacts, index), suffix=".partial.npz") as tmp:
        contacts.save(tmp)


def merge_blocks(job: AgglomerateJob) -> int:
    """Merge the whole region graph once from every block's contacts and write its edges with their merge scores;
    returns the number of edges."""
    from .region_merging import merge_region_graph  # numba: only the driver needs it, once

    db = open_graph(job.db_location, "r+")
    try:
        centers = read_nodes(db)
        parts = [Contacts.load(path) for path in sorted(job.contacts.glob("*.npz"))]
        contacts = Contacts.concatenate(parts)
        nodes = np.union1d(np.fromiter(centers, np.uint64, len(centers)), contacts.edges.ravel())
        scores = merge_region_graph(nodes, contacts, job.scoring_function)
        edges = {
            (int(u), int(v)): (None if np.isnan(score) else float(score), True)
            for (u, v), score in zip(contacts.edges.tolist(), scores.tolist())
        }
        drop_edges(db)  # a merge interrupted while writing leaves no half of it
        write_edges(db, centers, edges)
    finally:
        db.close()
    return len(edges)


def agglomerate(config: RunConfig, overwrite: bool = False, progress: bool = True) -> BlockwiseResult:
    """Write the region graph's edges (``merge_score``, ``agglomerated``) for ``volumes/fragments``: the contact
    statistics blockwise, then one merge of the whole graph.

    Re-running with the same settings resumes (done blocks are skipped; the merge runs again only if a block was
    processed or it did not finish); edges from another ``merge_function`` (or older fragments) are not
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
    faces = config.blocks_dir / FACES
    if not faces.is_dir():
        raise ConfigError(
            f"'{fragments.path}' has no record of its blocks' faces ('{faces}'); extract the fragments again "
            "(02_extract_fragments --overwrite)"
        )

    wanted = {"merge_function": config.merge_function, "fragments": made_with}
    tracking = config.blocks_dir / "agglomerate"
    existing = AGGLOMERATE.read_record(config)
    if existing is not None and existing != wanted and not overwrite:
        made = (
            f"merge_function '{existing.get('merge_function')}'"
            if existing.get("merge_function") != config.merge_function
            else "fragments made with other settings"
        )
        raise ConfigError(f"the region graph holds edges from {made}; pass --overwrite to replace them")
    contacts = config.blocks_dir / CONTACTS
    merged = config.blocks_dir / MERGED
    if existing != wanted or overwrite:
        db = open_graph(config.db_location, "r+")
        drop_edges(db)
        db.close()
        merged.unlink(missing_ok=True)
        shutil.rmtree(tracking, ignore_errors=True)
        shutil.rmtree(contacts, ignore_errors=True)
        AGGLOMERATE.write_record(config, wanted)
    contacts.mkdir(parents=True, exist_ok=True)
    job = AgglomerateJob(affs, fragments, geometry, config.db_location, scoring, contacts, faces)
    result = run_job(
        "agglomerate", geometry.total_roi, geometry.read_roi, geometry.write_roi,
        job, process_block, _setup_worker, config, tracking, progress, preload=("lsd_nm.contacts",),
    )  # fmt: skip
    if result.processed or not merged.is_file():
        merged.unlink(missing_ok=True)
        edges = merge_blocks(job)
        write_text(merged, f"{edges} edges\n")
    return result
