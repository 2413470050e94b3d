"""Volumes on disk: zarr containers in the public bucket's layout.

The bucket's training zarrs are zarr format 2 groups holding ``volumes/raw`` (uint8) and
``volumes/labels/neuron_ids`` (uint64, 0 = no label), each with the attrs ``resolution`` (voxel size, nm, zyx) and
``offset`` (nm, zyx). gunpowder's ``ZarrSource`` reads exactly these attrs; funlib.persistence reads them through
``[tool.funlib_persistence] voxel_size_attr = "resolution"`` (see :func:`open_volume`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Blosc

RAW = "volumes/raw"
NEURON_IDS = "volumes/labels/neuron_ids"
LABELS_MASK = "volumes/labels/labels_mask"

COMPRESSOR = Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)
"""Chunk compressor of the containers we write (deterministic: gzip would stamp the time into every chunk)."""


def write_container(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    voxel_size,
    offset,
    chunk_shape=(16, 128, 128),
) -> None:
    """Write arrays into a new zarr v2 container, atomically (a ``.partial`` folder renamed when complete).

    Args:
        path: the container to create (``*.zarr``); an existing one is replaced only once the new one is complete.
        arrays: dataset path inside the container → array (z, y, x).
        voxel_size: voxel size in nm, stored as the attr ``resolution``.
        offset: offset in nm, stored as the attr ``offset``.
        chunk_shape: chunk shape in voxels.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    root = zarr.open_group(tmp, mode="w", zarr_format=2)
    for name, data in arrays.items():
        group = root
        *parents, leaf = name.split("/")
        for parent in parents:
            group = group.require_group(parent)
        # channels (leading axes) are not chunked
        chunks = data.shape[:-3] + tuple(min(c, s) for c, s in zip(chunk_shape, data.shape[-3:]))
        array = group.create_array(leaf, data=data, chunks=chunks, compressors=COMPRESSOR)
        array.attrs.update({"resolution": [int(v) for v in voxel_size], "offset": [int(v) for v in offset]})
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def read_array(path: Path, dataset: str) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Read a whole dataset of a container with its ``resolution`` and ``offset`` attrs (offset 0 if absent)."""
    array = zarr.open_array(Path(path) / dataset, mode="r")
    attrs = array.attrs.asdict()
    voxel_size = tuple(int(v) for v in attrs.get("resolution", (1,) * array.ndim))
    offset = tuple(int(v) for v in attrs.get("offset", (0,) * array.ndim))
    return array[:], voxel_size, offset


def open_volume(path: Path, mode: str = "r"):
    """Open a dataset with funlib.persistence, reading the voxel size from the bucket's ``resolution`` attr.

    (funlib's default attr is ``voxel_size``; with it, the public zarrs would silently get voxel size 1.)
    """
    from funlib.persistence import open_ds
    from funlib.persistence.arrays.metadata import MetaDataFormat

    return open_ds(str(path), mode=mode, metadata_format=MetaDataFormat(voxel_size_attr="resolution"))
