"""Labels masks: ``volumes/labels/labels_mask`` (uint8) beside the neuron ids of every fetched or synthetic volume.

The mask is 1 where a voxel's label may be trusted and 0 elsewhere: ones everywhere, except for datasets whose
``datasets.json`` entry names an ``unlabelled_id`` (hemi: 2^64 − 3), where voxels with that label are 0. It has the
shape, chunks and attrs (``resolution``, ``offset``) of the neuron ids. It is computed block by block, so a large
volume never has to fit in memory, into ``labels_mask.partial`` renamed when complete: a mask that exists is whole.

Run: python 01_data/create_masks.py [--dataset hemi ...] [--data-dir DIR] [--force]          (or: make masks)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data import COMPRESSOR, LABELS_MASK, NEURON_IDS, atomic_path
from .datasets import DATA_DIR, DATASETS_FILE, Dataset, get_dataset, load_datasets, volume_path

BLOCK_VOXELS = 1 << 25
"""Voxels read per block (256 MiB of uint64 labels)."""


@dataclass(frozen=True)
class MaskResult:
    """What :func:`create_mask` did for one container."""

    container: Path
    written: bool
    """False: the mask existed and was kept."""
    voxels: int
    masked_out: int
    """Voxels set to 0 (unknown when the existing mask was kept: -1)."""

    def line(self) -> str:
        """What ``make masks`` prints for this container."""
        if self.written:
            return f"{self.container / LABELS_MASK}: {self.masked_out} of {self.voxels} voxels masked out"
        return f"{self.container / LABELS_MASK}: exists, kept (--force rewrites it)"


def blocks(shape: Sequence[int], chunks: Sequence[int], max_voxels: int = BLOCK_VOXELS) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned blocks that tile ``shape``, each of at most ``max_voxels`` voxels (at least one chunk).

    The block grows from one chunk along x, then y, then z while it stays within ``max_voxels``.

    Args:
        shape: the array's shape.
        chunks: the array's chunk shape.
        max_voxels: the largest block.
    """
    block = [min(c, s) for c, s in zip(chunks, shape)]
    for axis in reversed(range(len(shape))):
        while block[axis] < shape[axis]:
            grown = min(block[axis] + chunks[axis], shape[axis])
            if int(np.prod(block)) // block[axis] * grown > max_voxels:
                break
            block[axis] = grown
    starts = [range(0, s, b) for s, b in zip(shape, block)]
    for start in itertools.product(*starts):
        yield tuple(slice(a, min(a + b, s)) for a, b, s in zip(start, block, shape))


def _open_labels(container: Path, dataset: str | None = None, synthetic: bool = False):
    """The labels array of a container; missing or unreadable: one line with the advice that fits its dataset."""
    import zarr

    try:
        return zarr.open_array(container / NEURON_IDS, mode="r")
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError):
        if synthetic:
            advice = f"an interrupted generation? run `make synthetic DATASET={dataset} ARGS=--force` to draw it again"
        else:
            advice = f"an interrupted download? run `make fetch-data{f' DATASET={dataset}' if dataset else ''}` again"
        raise ConfigError(f"{container}: no readable {NEURON_IDS} ({advice})") from None


def create_mask(container: Path, unlabelled_id: int | None = None, force: bool = False, max_voxels: int = BLOCK_VOXELS) -> MaskResult:
    """Write ``volumes/labels/labels_mask`` into one container.

    Args:
        container: a zarr container with ``volumes/labels/neuron_ids``.
        unlabelled_id: the label that means 'not labelled' (its voxels get 0); None: the mask is all ones.
        force: rewrite an existing mask (default: keep it).
        max_voxels: the largest block read at once.
    """
    import zarr

    container = Path(container)
    labels = _open_labels(container)
    final = container / LABELS_MASK
    if final.exists() and not force:
        return MaskResult(container, False, int(labels.size), -1)
    masked_out = 0
    with atomic_path(final) as tmp:  # --force: the old mask goes only once the new one is complete
        mask = zarr.create_array(
            store=str(tmp),
            shape=labels.shape,
            chunks=labels.chunks,
            dtype=np.uint8,
            fill_value=0,
            compressors=COMPRESSOR if labels.metadata.zarr_format == 2 else "auto",
            zarr_format=labels.metadata.zarr_format,
            attributes=labels.attrs.asdict(),
        )
        for block in blocks(labels.shape, labels.chunks, max_voxels):
            values = np.ones(tuple(s.stop - s.start for s in block), np.uint8)
            if unlabelled_id is not None:
                unlabelled = labels[block] == np.uint64(unlabelled_id)
                values[unlabelled] = 0
                masked_out += int(unlabelled.sum())
            mask[block] = values
    return MaskResult(container, True, int(labels.size), masked_out)


def find_volumes(data_dir: Path, datasets: Sequence[str] = (), datasets_file: Path | None = None) -> list[tuple[Path, str, Dataset]]:
    """Every container of ``datasets.json`` that exists under ``data_dir``, with its dataset's name and entry.

    Args:
        data_dir: the data folder (``01_data/``).
        datasets: only these datasets (default: all).
        datasets_file: the registry (default ``01_data/datasets.json``).
    """

    datasets_file = datasets_file or DATASETS_FILE
    registry = {name: get_dataset(name, datasets_file) for name in datasets} if datasets else load_datasets(datasets_file)
    found = []
    for name, ds in registry.items():
        for volume, test in [(v, False) for v in ds.volumes] + [(v, True) for v in ds.test_volumes]:
            path = volume_path(name, volume, test, data_dir)
            if path.exists():
                found.append((path, name, ds))
    return found


def create_masks(
    data_dir: Path | None = None,
    datasets: Sequence[str] = (),
    force: bool = False,
    datasets_file: Path | None = None,
    max_voxels: int = BLOCK_VOXELS,
) -> list[MaskResult]:
    """Write the labels mask of every fetched or generated volume (all are checked before any is written).

    Args:
        data_dir: the data folder (default ``01_data/``).
        datasets: only these datasets (default: all of ``datasets.json``).
        force: rewrite existing masks.
        datasets_file: the registry (default ``01_data/datasets.json``).
        max_voxels: the largest block read at once.
    """

    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    volumes = find_volumes(data_dir, datasets, datasets_file)
    if not volumes:
        raise ConfigError(f"no volumes under {data_dir / 'funke'} (run `make synthetic` or `make fetch-data` first)")
    for container, name, ds in volumes:
        _open_labels(container, name, ds.synthetic is not None)
    return [create_mask(container, ds.unlabelled_id, force, max_voxels) for container, _, ds in volumes]
