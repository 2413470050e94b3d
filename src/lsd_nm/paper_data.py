"""The paper's test data and the authors' published results, fetched anonymously from where the authors put them.

* :func:`fetch_test_skeletons`: the consolidated zebrafinch validation (12) and test (50) skeletons, a ``mongodump``
  in ``s3://open-neurodata/funke/zebrafinch/testing/ground_truth/{validation,testing}/consolidated/…`` →
  ``<split>/zebrafinch_<split>.skeletons.npz`` with every per-ROI mask and component array.
* :func:`fetch_published`: one network's region graph (``…/segmentations/data.zarr/rags/<NETWORK>/<run>/``
  ``nodes.bson`` + ``edges_<merge_function>.bson``) → our region graph (SQLite), and its supervoxels
  (``…/segmentations/data.zarr/volumes/…``) — only the chunks under skeleton nodes when skeletons are given.
* :func:`fetch_test_raw`: the zebrafinch test raw of a ROI from the precomputed volume ``rawdata_realigned`` on
  Google Cloud Storage → a zarr ``volumes/raw`` (z, y, x) with ``resolution`` and ``offset``.

No key below a dataset's ``testing/`` folder is written into the code: the bucket is listed and files are picked
by name (the bucket's own map, ``funke/structure.md``, is fetched first and kept beside the data for the user).
Transfers go through :mod:`lsd_nm.s3` (resumable, size/MD5-checked, one-line errors); nothing is converted before
every listing succeeded, and converted files are written atomically.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bson_dump import (
    RegionGraphArrays,
    SkeletonDumpSummary,
    read_region_graph,
    read_skeleton_dump,
)
from .config import ConfigError
from .data import COMPRESSOR
from .datasets import DATA_DIR, get_dataset
from .graph import graph_exists, open_graph, write_edges, write_nodes
from .precomputed import PrecomputedVolume, copy_to_zarr
from .rois import get_roi, load_rois, rois_path
from .s3 import (
    BUCKET,
    DEFAULT_JOBS,
    RemoteObject,
    S3Error,
    TransferSummary,
    _local_path,
    download,
    list_objects,
    list_prefixes,
    make_client,
    s3_error,
    unless_missing,
)
from .skeletons import read_skeletons, write_skeletons

if TYPE_CHECKING:
    from botocore.client import BaseClient

STRUCTURE_KEY = "funke/structure.md"
"""The bucket's own description of its layout."""
J0126_RAW_URL = (
    "https://storage.googleapis.com/j0126-nature-methods-data/GgwKmcKgrcoNxJccKuGIzRnQqfit9hnfK1ctZzNbnuU/rawdata_realigned"
)
"""The zebrafinch (j0126) test raw: a public neuroglancer precomputed volume (x, y, z voxels)."""
SPLITS = ("validation", "testing")
"""The zebrafinch skeleton sets: 12 validation skeletons (threshold choice) and 50 test skeletons (scores)."""
SKELETON_DATASETS = ("zebrafinch",)
"""Datasets whose ground truth is skeletons (hemi and FIB-25 have dense labels)."""


def _data_dir(out: Path | None) -> Path:

    return Path(out) if out is not None else DATA_DIR


def _add(total: TransferSummary, part: TransferSummary) -> None:
    for name in ("fetched", "fetched_bytes", "resumed", "skipped", "skipped_bytes", "seconds"):
        setattr(total, name, getattr(total, name) + getattr(part, name))


# ---- listing ------------------------------------------------------------------------------------------------------


def list_folder(client: BaseClient, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """The sub-folder names and object names directly under ``prefix`` (which ends with ``/``), sorted."""
    from botocore.exceptions import BotoCoreError, ClientError

    folders, files = [], []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            folders += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
            files += [o["Key"][len(prefix) :] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    except (BotoCoreError, ClientError) as e:
        raise s3_error(e, client, bucket, prefix) from None
    return sorted(folders), sorted(files)


def _names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit]) or "nothing"
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def match_name(wanted: str, names: Sequence[str], what: str, where: str) -> str:
    """The one of ``names`` that is ``wanted``, ignoring case, ``_`` and ``-`` (``long_range`` finds ``LONG-RANGE``).

    Raises:
        ConfigError: none or several match (one line listing ``names``).
    """
    key = lambda s: re.sub(r"[_\-]", "", s).lower()
    if wanted in names:
        return wanted
    found = [n for n in names if key(n) == key(wanted)]
    if len(found) != 1:
        raise ConfigError(f"no single {what} '{wanted}' under {where} (found: {_names(list(names))})")
    return found[0]


def fetch_structure(client: BaseClient, bucket: str, out: Path) -> tuple[Path, TransferSummary]:
    """Download ``funke/structure.md`` (the bucket's map) to ``<out>/funke/structure.md``; returns its path."""
    found = [o for o in list_objects(client, bucket, STRUCTURE_KEY, out) if o.key == STRUCTURE_KEY]
    if not found:
        raise S3Error(f"s3://{bucket}/{STRUCTURE_KEY}: not found at {client.meta.endpoint_url} (the bucket's map of its layout)")
    return found[0].path, download(client, bucket, found, jobs=1, desc="structure.md")


# ---- skeletons ----------------------------------------------------------------------------------------------------


def ground_truth_prefix(dataset: str, split: str) -> str:
    """Where the consolidated skeletons of a split are: ``funke/<dataset>/testing/ground_truth/<split>/consolidated/``."""
    return f"funke/{dataset}/testing/ground_truth/{split}/consolidated/"


def skeletons_file(dataset: str, split: str, out: Path | None = None) -> Path:
    """Our converted skeletons: ``<out>/funke/<dataset>/testing/ground_truth/<split>/<dataset>_<split>.skeletons.npz``."""
    return _data_dir(out) / "funke" / dataset / "testing" / "ground_truth" / split / f"{dataset}_{split}.skeletons.npz"


def _skeleton_objects(client, bucket, dataset, split, out, folder_name, structure) -> list[RemoteObject]:
    """The objects of the one dump folder (holding ``*.nodes.bson``) under a split's ``consolidated/``."""
    prefix = ground_truth_prefix(dataset, split)
    objects = list_objects(client, bucket, prefix, out)
    folders: dict[str, list[RemoteObject]] = {}
    for obj in objects:
        folders.setdefault(obj.key.rsplit("/", 1)[0], []).append(obj)
    dumps = sorted(f for f, objs in folders.items() if any(o.key.endswith(".nodes.bson") for o in objs))
    if folder_name is not None:
        dumps = [f for f in dumps if f.rsplit("/", 1)[-1] == folder_name]
    if len(dumps) != 1:
        names = [f.removeprefix(prefix) or "." for f in sorted(folders)]
        which = f"named '{folder_name}' " if folder_name else ""
        raise ConfigError(
            f"expected one dump folder {which}with a <name>.nodes.bson under s3://{bucket}/{prefix}, found "
            f"{len(dumps)} (folders: {_names(names)}; the bucket's layout: {structure})"
        )
    return folders[dumps[0]]


def fetch_test_skeletons(
    dataset: str = "zebrafinch",
    splits: Sequence[str] = SPLITS,
    folder_name: str | None = None,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> tuple[list[Path], TransferSummary, list[SkeletonDumpSummary]]:
    """Download the consolidated skeletons of each split and convert them to ``.skeletons.npz``.

    Args:
        dataset: zebrafinch (the only dataset with skeleton ground truth).
        splits: ``validation`` and/or ``testing``.
        folder_name: the dump folder to take when a split's ``consolidated/`` holds several.
        bucket: the bucket.
        endpoint_url: an S3-compatible endpoint (None: the standard variables, else AWS).
        out: the data folder (default ``01_data/``); keys are kept as paths below it.
        jobs: objects transferred in parallel.

    Returns:
        The ``.skeletons.npz`` files (see :func:`skeletons_file`), the transfer summary and one conversion summary
        per split.
    """

    if dataset not in SKELETON_DATASETS:
        raise ConfigError(f"dataset '{dataset}' has no skeleton ground truth (skeletons exist for: {', '.join(SKELETON_DATASETS)})")
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}' (expected one of: {', '.join(SPLITS)})")
    splits = list(dict.fromkeys(splits)) or list(SPLITS)
    roi_names = list(load_rois(dataset).rois) if rois_path(dataset).exists() else []
    out = _data_dir(out)
    client = make_client(endpoint_url, jobs)
    structure, summary = fetch_structure(client, bucket, out)
    plan = {split: _skeleton_objects(client, bucket, dataset, split, out, folder_name, structure) for split in splits}
    _add(summary, download(client, bucket, [o for objs in plan.values() for o in objs], jobs, desc=f"{dataset} skeletons"))
    paths, conversions = [], []
    for split, objs in plan.items():
        arrays, conversion = read_skeleton_dump(objs[0].path.parent, roi_names)
        path = skeletons_file(dataset, split, out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_skeletons(path, arrays)
        paths.append(path)
        conversions.append(conversion)
    return paths, summary, conversions


# ---- the authors' region graphs and supervoxels --------------------------------------------------------------------


def segmentations_prefix(dataset: str) -> str:
    """The authors' results for a dataset: ``funke/<dataset>/testing/segmentations/data.zarr/``."""
    return f"funke/{dataset}/testing/segmentations/data.zarr/"


@dataclass
class PublishedResult:
    """What :func:`fetch_published` made."""

    network: str
    """The network's folder name in the bucket."""
    run: str
    """The run's folder name."""
    db: str
    """Our region graph (SQLite file)."""
    nodes: int
    edges: int
    supervoxels: Path | None
    """The local supervoxel array (a zarr v2 array folder), None if not fetched."""
    supervoxel_chunks: int = 0
    """Chunks fetched."""
    absent_chunks: int = 0
    """Chunks under skeleton nodes that the bucket does not hold (zarr reads them as the fill value)."""
    transfer: TransferSummary = field(default_factory=TransferSummary)
    dangling_edges: int = 0
    """Edges of the dump with an endpoint that is no node: skipped, as the original's union-find skips them."""
    null_scores: int = 0
    """Edges without a merge score (united at every threshold, as the original)."""

    def line(self) -> str:
        sv = f"supervoxels {self.supervoxels} ({self.supervoxel_chunks} chunks, {self.absent_chunks} absent)" if self.supervoxels else "no supervoxels"
        edges = f"{self.edges} edges, {self.null_scores} without a score, {self.dangling_edges} dangling skipped"
        graph = f"region graph {self.db} ({self.nodes} nodes, {edges})"
        return f"{self.network}/{self.run}: {graph}; {sv}; {self.transfer.line()}"


def _run_folder(client, bucket, dataset, network, run, structure) -> tuple[str, str, str]:
    """``(network folder, run folder, prefix of the run)`` of a region graph in the bucket."""
    rags = segmentations_prefix(dataset) + "rags/"
    networks, _ = list_folder(client, bucket, rags)
    net = match_name(network, networks, "network", f"s3://{bucket}/{rags} (layout: {structure})")
    runs, files = list_folder(client, bucket, f"{rags}{net}/")
    if "nodes.bson" in files and not runs:
        return net, "", f"{rags}{net}/"
    if run is not None:
        chosen = match_name(run, runs, "run", f"s3://{bucket}/{rags}{net}/")
    elif len(runs) == 1:
        chosen = runs[0]
    else:
        raise ConfigError(f"network '{net}' has {len(runs)} runs under s3://{bucket}/{rags}{net}/; choose one with --run (runs: {_names(runs)})")
    return net, chosen, f"{rags}{net}/{chosen}/"


def _find_array(client, bucket, dataset, net, run, supervoxels_dataset) -> str:
    """The prefix (ending with ``/``) of the supervoxel array of a network's run, found by listing."""
    base = segmentations_prefix(dataset)
    if supervoxels_dataset is not None:
        prefix = base + supervoxels_dataset.strip("/") + "/"
        _, files = list_folder(client, bucket, prefix)
        if ".zarray" not in files:
            raise ConfigError(f"s3://{bucket}/{prefix}: not a zarr array (no .zarray)")
        return prefix
    prefix = base + "volumes/"
    folders, _ = list_folder(client, bucket, prefix)
    prefix += match_name(net, folders, "supervoxel folder for network", f"s3://{bucket}/{prefix}") + "/"
    for _ in range(4):
        folders, files = list_folder(client, bucket, prefix)
        if ".zarray" in files:
            return prefix
        named = [f for f in folders if run and re.search(rf"(^|_){re.escape(f)}(_|$)", run)]
        if run and run in folders:
            prefix += run + "/"
        elif len(named) == 1:  # hemi: the run hemi_vanilla_400k_roi_1 has its fragments in roi_1/
            prefix += named[0] + "/"
        elif len(folders) == 1:
            prefix += folders[0] + "/"
        else:
            break
    raise ConfigError(
        f"cannot tell the supervoxel array under s3://{bucket}/{prefix} (folders: {_names(folders)}); "
        f"name it with --supervoxels-dataset (a path below data.zarr/)"
    )


def _get_json(client, bucket: str, key: str) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as e:
        raise s3_error(e, client, bucket, key) from None
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise S3Error(f"s3://{bucket}/{key}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise S3Error(f"s3://{bucket}/{key}: expected a JSON object")
    return data


def chunk_keys_under(positions: np.ndarray, zarray: dict, zattrs: dict) -> list[str]:
    """The chunk keys of a 3-D zarr v2 array that hold the voxels under ``positions`` (N × 3, z, y, x in nm).

    Positions outside the array are left out. The array's ``offset`` and ``resolution`` attrs (nm, z, y, x) place
    it in the world; the key separator is the array's ``dimension_separator`` (default ``.``).
    """
    shape = np.asarray(zarray["shape"], np.int64)
    chunks = np.asarray(zarray["chunks"], np.int64)
    if len(shape) != 3:
        raise ConfigError(f"expected a 3-D supervoxel array, got shape {list(shape)}")
    resolution = np.asarray(zattrs.get("resolution", (1, 1, 1)), np.float64)
    offset = np.asarray(zattrs.get("offset", (0, 0, 0)), np.float64)
    voxels = np.floor((np.asarray(positions, np.float64).reshape(-1, 3) - offset) / resolution).astype(np.int64)
    inside = ((voxels >= 0) & (voxels < shape)).all(axis=1)
    indices = np.unique(voxels[inside] // chunks, axis=0)
    separator = zarray.get("dimension_separator") or "."
    return [separator.join(str(int(i)) for i in index) for index in indices]


def _head_objects(client, bucket: str, keys: Sequence[str], out: Path, jobs: int) -> tuple[list[RemoteObject], int]:
    """RemoteObjects of the keys that exist (HEAD each, ``jobs`` at a time) and the number that do not."""
    def head(key: str) -> RemoteObject | None:
        meta = unless_missing(lambda: client.head_object(Bucket=bucket, Key=key), client, bucket, key)
        if meta is None:
            return None
        return RemoteObject(key, int(meta["ContentLength"]), meta.get("ETag", "").strip('"'), _local_path(out, key, key))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        found = list(pool.map(head, keys))
    return [o for o in found if o is not None], sum(o is None for o in found)


def write_region_graph(graph: RegionGraphArrays, location: Path, batch: int = 100_000) -> int:
    """Write a region graph into a new SQLite region graph of ours (``nodes``: ``center`` rounded to whole nm;
    ``edges``: ``merge_score`` None where NaN), atomically: built under a temporary name, renamed when complete.
    An edge with an endpoint that is no node is skipped (the original's ``connected_components`` skips it too) and
    counted.

    Args:
        graph: from :func:`~lsd_nm.bson_dump.read_region_graph`.
        location: the SQLite file (its ``<stem>-meta.json`` goes beside it); an existing one is an error.
        batch: nodes or edges per insert.

    Returns:
        The number of dangling edges skipped.
    """

    location = Path(location)
    if graph_exists(str(location)) or location.exists():
        raise ConfigError(f"db '{location}': a region graph exists there already; remove it to convert again")
    tmp = location.with_name(location.stem + ".partial" + location.suffix)
    tmp_meta = tmp.with_name(f"{tmp.stem}-meta.json")
    tmp.unlink(missing_ok=True)
    tmp_meta.unlink(missing_ok=True)
    location.parent.mkdir(parents=True, exist_ok=True)
    node_ids = graph.node_ids.astype(np.uint64)
    centers = np.rint(graph.centers).astype(np.int64)
    order = np.argsort(node_ids)
    sorted_ids = node_ids[order]
    db = open_graph(str(tmp), "w")
    dangling = 0
    try:
        for s in range(0, len(node_ids), batch):
            write_nodes(db, {int(i): c for i, c in zip(node_ids[s : s + batch], centers[s : s + batch])})
        for s in range(0, len(graph.edges), batch):
            pairs = np.sort(graph.edges[s : s + batch].astype(np.uint64), axis=1)
            where = np.minimum(np.searchsorted(sorted_ids, pairs), max(len(sorted_ids) - 1, 0))
            known = (sorted_ids[where] == pairs).all(axis=1) if len(sorted_ids) else np.zeros(len(pairs), bool)
            dangling += int((~known).sum())
            scores = graph.merge_scores[s : s + batch][known]
            agglomerated = graph.agglomerated[s : s + batch][known]
            pairs, where = pairs[known], where[known]
            part = {
                (int(u), int(v)): (None if np.isnan(score) else float(score), bool(flag))
                for (u, v), score, flag in zip(pairs, scores, agglomerated)
            }
            u_centers = {int(u): centers[order[w]] for u, w in zip(pairs[:, 0], where[:, 0])}
            write_edges(db, u_centers, part)
    finally:
        db.close()
    os.replace(tmp, location)
    os.replace(tmp_meta, location.with_name(f"{location.stem}-meta.json"))  # last: graph_exists() looks for it
    return dangling


def fetch_published(
    dataset: str,
    network: str,
    run: str | None = None,
    merge_function: str = "hist_quant_75",
    skeletons: Path | Sequence[Path] | None = None,
    supervoxels: bool = True,
    supervoxels_dataset: str | None = None,
    db: Path | None = None,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> PublishedResult:
    """Download a network's published region graph (and supervoxels) and convert the graph to our SQLite graph.

    Args:
        dataset: zebrafinch, hemi or fib25.
        network: the network's folder under ``rags/`` (matched ignoring case, ``_`` and ``-``), e.g. ``acrlsd``.
        run: the run folder below it (needed when there are several).
        merge_function: the edges file is ``edges_<merge_function>.bson``.
        skeletons: one or more ``.skeletons.npz``; given, only the supervoxel chunks under their nodes are fetched
            (the whole Benchmark ROI is 4.78·10¹¹ voxels), and the array is marked sparse (``<array>.sparse.json``).
        supervoxels: also fetch the supervoxels.
        supervoxels_dataset: the supervoxel array's path below ``data.zarr/`` (default: found by listing).
        db: our region graph file (default: ``<run folder>/<merge_function>.rag.db`` beside the downloaded dump).
        bucket: the bucket.
        endpoint_url: an S3-compatible endpoint (None: the standard variables, else AWS).
        out: the data folder (default ``01_data/``); keys are kept as paths below it.
        jobs: objects transferred in parallel.
    """

    out = _data_dir(out)
    if isinstance(skeletons, str | Path):
        skeletons = [skeletons]
    skeletons = [Path(p) for p in skeletons] if skeletons else None
    for path in skeletons or []:
        if not path.is_file():
            raise ConfigError(f"{path}: file not found (expected a .skeletons.npz, e.g. from fetch_test_skeletons)")
    client = make_client(endpoint_url, jobs)
    structure, transfer = fetch_structure(client, bucket, out)
    net, run_name, run_prefix = _run_folder(client, bucket, dataset, network, run, structure)
    _, files = list_folder(client, bucket, run_prefix)
    edges_name = f"edges_{merge_function}.bson"
    for name in ("nodes.bson", edges_name):
        if name not in files:
            raise ConfigError(f"s3://{bucket}/{run_prefix}{name}: not found (the folder holds: {_names(files)})")
    wanted = {run_prefix + "nodes.bson", run_prefix + edges_name}
    rag_objects = [o for o in list_objects(client, bucket, run_prefix, out) if o.key in wanted]
    location = Path(db) if db is not None else rag_objects[0].path.parent / f"{merge_function}.rag.db"
    if location.exists():
        raise ConfigError(f"db '{location}': a region graph exists there already; remove it to convert again")

    sv_objects: list[RemoteObject] = []
    absent = 0
    array_path = None
    sparse_note = None
    if supervoxels:
        array_prefix = _find_array(client, bucket, dataset, net, run_name, supervoxels_dataset)
        array_path = _local_path(out, array_prefix.rstrip("/"), array_prefix)
        if skeletons is None:
            sv_objects = list_objects(client, bucket, array_prefix, out)
        else:
            zarray = _get_json(client, bucket, array_prefix + ".zarray")
            _, meta_files = list_folder(client, bucket, array_prefix)
            zattrs = _get_json(client, bucket, array_prefix + ".zattrs") if ".zattrs" in meta_files else {}
            positions = np.concatenate([read_skeletons(path)["positions"] for path in skeletons])
            keys = [array_prefix + k for k in chunk_keys_under(positions, zarray, zattrs)]
            meta = [array_prefix + m for m in (".zarray", ".zattrs") if m in meta_files]
            sv_objects, absent = _head_objects(client, bucket, meta + keys, out, jobs)
            sparse_note = {
                "sparse": True,
                "skeletons": [str(path) for path in skeletons],
                "chunks_under_nodes": len(keys),
                "chunks_absent": absent,
                "note": "only the chunks under the skeletons' nodes were fetched: read supervoxels at those nodes only",
            }

    _add(transfer, download(client, bucket, rag_objects + sv_objects, jobs, desc=f"{dataset} {net}"))
    by_name = {o.key.rsplit("/", 1)[-1]: o.path for o in rag_objects}
    graph = read_region_graph(by_name["nodes.bson"], by_name[edges_name])
    dangling = write_region_graph(graph, location)
    if sparse_note is not None and array_path is not None:
        tmp = array_path.with_name(array_path.name + ".sparse.json.partial")
        tmp.write_text(json.dumps(sparse_note, indent=2) + "\n")
        tmp.replace(array_path.with_name(array_path.name + ".sparse.json"))
    return PublishedResult(
        network=net,
        run=run_name,
        db=str(location),
        nodes=len(graph.node_ids),
        edges=len(graph.edges) - dangling,
        supervoxels=array_path,
        supervoxel_chunks=sum(1 for o in sv_objects if not o.key.endswith((".zarray", ".zattrs"))),
        absent_chunks=absent,
        transfer=transfer,
        dangling_edges=dangling,
        null_scores=int(np.isnan(graph.merge_scores).sum()),
    )


# ---- the test raw -------------------------------------------------------------------------------------------------


def raw_path(roi_name: str, out: Path | None = None) -> Path:
    """Where the test raw of a ROI goes: ``<out>/funke/zebrafinch/testing/rawdata_realigned_<roi>.zarr``."""
    return _data_dir(out) / "funke" / "zebrafinch" / "testing" / f"rawdata_realigned_{roi_name}.zarr"


def fetch_test_raw(
    roi: str | None = None,
    roi_offset: Sequence[int] | None = None,
    roi_shape: Sequence[int] | None = None,
    context: Sequence[int] = (0, 0, 0),
    url: str = J0126_RAW_URL,
    dataset: str = "zebrafinch",
    out: Path | None = None,
    container: Path | None = None,
    jobs: int = DEFAULT_JOBS,
    fill_missing: bool = False,
    retries: int = 3,
    rois: Path | None = None,
):
    """Copy the test raw of a ROI (grown by ``context``) from the precomputed volume into a zarr.

    Args:
        roi: a ROI name of ``03_predict/configs/rois/<dataset>.json``; or give ``roi_offset`` and ``roi_shape``.
        roi_offset: offset (nm, z, y, x).
        roi_shape: shape (nm, z, y, x).
        context: nm added on every side (z, y, x), e.g. the network's context ((input − output) / 2 · voxel size).
        url: the precomputed volume (default: the zebrafinch test raw).
        dataset: the dataset whose voxel size picks the volume's scale.
        out: the data folder (default ``01_data/``).
        container: the zarr to write (default: :func:`raw_path` of the ROI's name, or of ``<offset>_<shape>``).
        jobs: chunks fetched in parallel.
        fill_missing: read chunks the volume does not have as zeros instead of failing.
        retries: HTTP retries per request.
        rois: a ROI registry instead of ``03_predict/configs/rois/<dataset>.json``.

    Returns:
        The zarr path and a :class:`~lsd_nm.precomputed.CopySummary`.
    """

    if (roi is None) == (roi_offset is None or roi_shape is None):
        raise ConfigError("give either a ROI name or both roi_offset and roi_shape")
    if roi is not None:
        entry = get_roi(roi, dataset, rois)
        roi_offset, roi_shape, name = entry.roi_offset, entry.roi_shape, roi
    else:
        name = "_".join(map(str, roi_offset)) + "_" + "_".join(map(str, roi_shape))
    if len(context) != 3 or any(int(c) < 0 for c in context):
        raise ConfigError(f"context must be 3 non-negative nm values (z, y, x), got {list(context)}")
    offset = [int(o) - int(c) for o, c in zip(roi_offset, context)]
    shape = [int(s) + 2 * int(c) for s, c in zip(roi_shape, context)]
    voxel_size = get_dataset(dataset).voxel_size
    volume = PrecomputedVolume(url, retries=retries, fill_missing=fill_missing)
    scale = volume.scale(voxel_size)
    path = Path(container) if container is not None else raw_path(name, out)
    return path, copy_to_zarr(volume, scale, path, offset, shape, jobs=jobs)


# ---- every run of a network, and where they are -----------------------------------------------------------------


def published_manifest(dataset: str, network: str, out: Path | None = None) -> Path:
    """What :func:`fetch_published_runs` fetched for a network:
    ``<out>/funke/<dataset>/testing/segmentations/published_<network>.json``."""
    return _data_dir(out) / "funke" / dataset / "testing" / "segmentations" / f"published_{network}.json"


def fetch_published_runs(
    dataset: str,
    network: str,
    run: str | None = None,
    merge_function: str = "hist_quant_75",
    skeletons: Sequence[Path] | None = None,
    all_supervoxels: bool = False,
    supervoxels_dataset: str | None = None,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> tuple[list[PublishedResult], Path]:
    """:func:`fetch_published` for every run of a network (hemi has one per ROI) or the one named, and a manifest of
    them (:func:`published_manifest`) for ``make reproduce``.

    Zebrafinch skeletons are evaluated on the Benchmark ROI's supervoxels (4.78·10¹¹ voxels), so only the chunks
    under the skeleton nodes are fetched: by default under the nodes of the fetched validation and test skeletons
    (:func:`skeletons_file`); ``all_supervoxels`` fetches every chunk. hemi and FIB-25 are evaluated on dense labels:
    every chunk of their ROIs is fetched.

    Raises:
        ConfigError: zebrafinch without fetched skeletons (and without ``all_supervoxels``), an existing region
            graph, anything :func:`fetch_published` refuses — before that run's download.
    """
    out = _data_dir(out)
    if dataset in SKELETON_DATASETS and not all_supervoxels and not skeletons:
        skeletons = [skeletons_file(dataset, split, out) for split in SPLITS]
        missing = [p for p in skeletons if not p.is_file()]
        if missing:
            raise ConfigError(
                f"{missing[0]}: file not found; fetch the skeletons first (make fetch-test-data DATASET={dataset}): only "
                "the supervoxel chunks under their nodes are fetched (or pass --all-supervoxels for the whole ROI)"
            )
    if all_supervoxels:
        skeletons = None
    if run is None:
        client = make_client(endpoint_url, jobs)
        structure = fetch_structure(client, bucket, out)[0]
        rags = segmentations_prefix(dataset) + "rags/"
        networks, _ = list_folder(client, bucket, rags)
        net = match_name(network, networks, "network", f"s3://{bucket}/{rags} (layout: {structure})")
        runs, _ = list_folder(client, bucket, f"{rags}{net}/")
    else:
        runs = [run]
    results = []
    for name in runs or [None]:
        results.append(
            fetch_published(
                dataset, network, run=name, merge_function=merge_function, skeletons=skeletons,
                supervoxels_dataset=supervoxels_dataset, bucket=bucket, endpoint_url=endpoint_url, out=out, jobs=jobs,
            )
        )  # fmt: skip
    manifest = published_manifest(dataset, network, out)
    entries = []
    for r in results:
        container = next(p for p in [r.supervoxels, *r.supervoxels.parents] if p.suffix in (".zarr", ".n5"))
        entries.append({
            "run": r.run, "db": r.db, "merge_function": merge_function, "fragments_file": str(container),
            "fragments_dataset": r.supervoxels.relative_to(container).as_posix(),
            "sparse": r.supervoxels.with_name(r.supervoxels.name + ".sparse.json").exists(),
            "dangling_edges": r.dangling_edges, "null_scores": r.null_scores,
        })  # fmt: skip
    text = json.dumps({"dataset": dataset, "network": results[0].network, "runs": entries}, indent=2) + "\n"
    tmp = manifest.with_name(manifest.name + ".partial")
    tmp.write_text(text)
    tmp.replace(manifest)
    return results, manifest


# ---- the test volumes: ground-truth labels, masks (and raw) ----------------------------------------------------


def ground_truth_container(client, bucket: str, dataset: str, structure: Path | str) -> str:
    """The prefix (ending with ``/``) of the one ``*.zarr`` or ``*.n5`` container under
    ``funke/<dataset>/testing/ground_truth/``, found by listing."""
    prefix = f"funke/{dataset}/testing/ground_truth/"
    folders, _ = list_folder(client, bucket, prefix)
    containers = [f for f in folders if f.endswith((".zarr", ".n5"))]
    if len(containers) != 1:
        raise ConfigError(
            f"expected one .zarr or .n5 container under s3://{bucket}/{prefix}, found {len(containers)} "
            f"(folders: {_names(folders)}; the bucket's layout: {structure})"
        )
    return prefix + containers[0] + "/"


def _wanted_datasets(dataset: str, names: Sequence[str], roi: str | None, where: str) -> list[str]:
    """The datasets below ``volumes/`` to fetch: zebrafinch its masks (the neuropil mask); hemi the mask and, per ROI
    folder, its raw and consolidated labels; FIB-25 the mask, raw, the labels of the whole test region and the
    relabelled ids of its sub-ROIs. ``roi`` keeps one ROI (hemi ``roi_1``…, FIB-25 ``full``, ``roi_1``, ``roi_2``)."""
    masks = [n for n in names if "mask" in n]
    if dataset == "zebrafinch":
        return masks
    if dataset == "hemi":
        rois = [n for n in names if re.fullmatch(r"roi_\d+", n)]
        if roi is not None:
            if roi not in rois:
                raise ConfigError(f"unknown ROI '{roi}' of dataset 'hemi' under {where} (expected one of: {', '.join(rois)})")
            rois = [roi]
        return masks + [f"{r}/{d}" for r in rois for d in ("raw", "consolidated_ids")]
    sub_rois = sorted({m[1] for n in names if (m := re.fullmatch(r"(roi_\d+)_relabelled_ids", n))})
    choices = ["full", *sub_rois]
    if roi is not None and roi not in choices:
        raise ConfigError(f"unknown ROI '{roi}' of dataset '{dataset}' under {where} (expected one of: {', '.join(choices)})")
    labels = [n for n in names if n == "neuron_ids" and roi in (None, "full")]
    labels += [f"{r}_relabelled_ids" for r in sub_rois if roi in (None, r)]
    return masks + [n for n in names if n == "raw"] + labels


def n5_to_zarr(n5: Path, dataset: str, container: Path, jobs: int = DEFAULT_JOBS) -> Path:
    """Convert one N5 dataset (as funlib writes them: axes and the ``resolution``/``offset`` attributes in x, y, z
    order) into a zarr v2 dataset (z, y, x, attrs in nm) of ``container``, block by block with TensorStore; written
    as ``<dataset>.partial`` and renamed when complete. An existing complete output is kept."""
    import tensorstore as ts
    import zarr

    target = Path(container) / dataset
    if (target / ".zarray").exists():
        return target
    source_path = Path(n5) / dataset
    try:
        source = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(source_path)}}, read=True).result()
        attrs = json.loads((source_path / "attributes.json").read_text())
    except (ValueError, OSError) as e:
        raise ConfigError(f"{source_path}: not an N5 dataset ({str(e).splitlines()[0][:200]})") from None
    if source.rank != 3:
        raise ConfigError(f"{source_path}: expected a 3-D dataset, got {source.rank} dimensions")
    shape = tuple(int(n) for n in source.shape[::-1])
    chunks = tuple(int(c) for c in source.chunk_layout.read_chunk.shape[::-1])
    resolution = [int(v) for v in attrs.get("resolution", (1, 1, 1))][::-1]
    offset = [int(v) for v in attrs.get("offset", (0, 0, 0))][::-1]
    root = zarr.open_group(container, mode="a", zarr_format=2)
    parent, _, leaf = dataset.rpartition("/")
    group = root.require_group(parent) if parent else root
    partial = leaf + ".partial"
    if partial in group:
        del group[partial]
    array = group.create_array(partial, shape=shape, chunks=chunks, dtype=np.dtype(source.dtype.numpy_dtype), fill_value=0, compressors=COMPRESSOR)

    def copy(begin: tuple[int, int, int]) -> None:
        end = [min(b + c, n) for b, c, n in zip(begin, chunks, shape)]
        box = source[tuple(slice(b, e) for b, e in zip(begin[::-1], end[::-1]))].read().result()
        array[tuple(slice(b, e) for b, e in zip(begin, end))] = np.asarray(box).transpose(2, 1, 0)

    starts = [(z, y, x) for z in range(0, shape[0], chunks[0]) for y in range(0, shape[1], chunks[1]) for x in range(0, shape[2], chunks[2])]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(copy, starts))
    array.attrs.update({"resolution": resolution, "offset": offset, "source": str(source_path)})
    os.replace(Path(container) / (f"{parent}/" if parent else "") / partial, target)
    return target


def test_volumes_container(dataset: str, out: Path | None = None) -> Path:
    """Where the ground-truth datasets of a dataset's test data are, as zarr: the bucket's ``data.zarr`` itself, or
    the conversion of its ``data.n5`` (FIB-25): ``<out>/funke/<dataset>/testing/ground_truth/data.zarr``."""
    return _data_dir(out) / "funke" / dataset / "testing" / "ground_truth" / "data.zarr"


def fetch_test_volumes(
    dataset: str,
    roi: str | None = None,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> tuple[Path, list[str], TransferSummary]:
    """Download the ground-truth volumes of a dataset's test data (see :func:`_wanted_datasets`): zebrafinch the
    neuropil mask; hemi the mask, raw and consolidated labels of its ROIs; FIB-25 its mask, raw and labels, converted
    from N5 to zarr (:func:`n5_to_zarr`).

    Returns:
        The zarr container (:func:`test_volumes_container`), the datasets in it, and the transfer summary.
    """
    get_dataset(dataset)
    out = _data_dir(out)
    client = make_client(endpoint_url, jobs)
    # everything is listed and checked before anything is downloaded
    container = ground_truth_container(client, bucket, dataset, f"s3://{bucket}/{STRUCTURE_KEY}")
    volumes, _ = list_folder(client, bucket, container + "volumes/")
    wanted = _wanted_datasets(dataset, volumes, roi, f"s3://{bucket}/{container}volumes/")
    objects = list_prefixes(client, bucket, [f"{container}volumes/{name}/" for name in wanted], out)
    _, summary = fetch_structure(client, bucket, out)
    # the groups' metadata on the way down (HEAD each: listing the container would list every chunk)
    groups = {"", "volumes/"} | {f"volumes/{name.rsplit('/', 1)[0]}/" for name in wanted if "/" in name}
    keys = [container + g + m for g in sorted(groups) for m in (".zgroup", ".zattrs", "attributes.json")]
    meta = _head_objects(client, bucket, keys, out, jobs)[0]
    _add(summary, download(client, bucket, meta + objects, jobs, desc=f"{dataset} test volumes"))
    local = _local_path(out, container.rstrip("/"), container)
    target = test_volumes_container(dataset, out)
    if container.rstrip("/").endswith(".n5"):
        for name in wanted:
            n5_to_zarr(local, f"volumes/{name}", target, jobs)
    return target, [f"volumes/{name}" for name in wanted], summary


# ---- the network's context ------------------------------------------------------------------------------------------


def network_context(dataset: str, network: str) -> tuple[int, int, int]:
    """The raw context (nm, z, y, x, per side) a network folder ``02_train/<dataset>/<network>`` reads around what it
    predicts: (input − output) / 2 at its prediction shape, plus the lsd net's for the autocontext networks."""
    from . import REPO_ROOT
    from .experiment import load_network_folder
    from .networks import network_io

    folder = load_network_folder(REPO_ROOT / "02_train" / dataset / network)
    voxel_size = np.asarray(get_dataset(dataset).voxel_size, np.int64)
    total = np.zeros(3, np.int64)
    for config in [folder.config] + ([folder.lsd.config] if folder.lsd is not None else []):
        io = network_io(config, "predict")
        shape = np.asarray(config.predict_input_shape, np.int64)
        total += (shape - np.asarray(next(iter(io.outputs.values())).shape, np.int64)) * voxel_size // 2
    return tuple(int(v) for v in total)  # type: ignore[return-value]


def fetch_test_data(
    dataset: str,
    roi: str | None = None,
    network: str = "mtlsd",
    context: Sequence[int] | None = None,
    raw_url: str | None = None,
    fill_missing: bool = False,
    rois: Path | None = None,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> Iterator[str]:
    """``make fetch-test-data``: a dataset's test data, yielding the lines to print as each transfer ends.

    Zebrafinch (:data:`SKELETON_DATASETS`): the skeletons (:func:`fetch_test_skeletons`), the neuropil mask
    (:func:`fetch_test_volumes`) and, with ``roi``, that ROI's test raw with ``context`` nm around it (default: the
    ``network``'s, :func:`network_context`) from ``raw_url`` (:func:`fetch_test_raw`); a bad ROI name fails before
    anything is fetched. hemi and FIB-25: the labels and masks of every test ROI, or of ``roi`` only.
    """
    skeletons = dataset in SKELETON_DATASETS
    if skeletons and roi is not None:
        get_roi(roi, dataset, rois)  # a bad name fails before anything is fetched
        context = tuple(context) if context else network_context(dataset, network)
    transfer = dict(bucket=bucket, endpoint_url=endpoint_url, out=out, jobs=jobs)
    if skeletons:
        paths, summary, conversions = fetch_test_skeletons(dataset, **transfer)
        for path, conversion in zip(paths, conversions):
            yield f"{path}: {conversion.line()}"
        yield summary.line()
    container, datasets, summary = fetch_test_volumes(dataset, None if skeletons else roi, **transfer)
    for name in datasets:
        yield str(container / name)
    yield summary.line()
    if skeletons and roi is not None:
        path, copied = fetch_test_raw(
            roi, context=context, url=raw_url or J0126_RAW_URL, dataset=dataset, out=out, jobs=jobs,
            fill_missing=fill_missing, rois=rois,
        )  # fmt: skip
        yield f"{path}: {copied.line()}"


def published_lines(results: Sequence[PublishedResult], manifest: Path) -> list[str]:
    """What ``make fetch-published`` prints of :func:`fetch_published_runs`: a line per run, then the manifest."""
    return [result.line() for result in results] + [f"wrote {manifest}"]
