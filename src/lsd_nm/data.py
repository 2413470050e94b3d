"""Volumes on disk: zarr containers in the public bucket's layout, and the one way we write files atomically.

The bucket's training zarrs are zarr format 2 groups holding ``volumes/raw`` (uint8) and
``volumes/labels/neuron_ids`` (uint64, 0 = no label), each with the attrs ``resolution`` (voxel size, nm, zyx) and
``offset`` (nm, zyx). gunpowder's ``ZarrSource`` reads exactly these attrs; funlib.persistence reads them through
``[tool.funlib_persistence] voxel_size_attr = "resolution"`` (see :func:`open_volume`). A run's ``out_file`` of
``03_predict`` uses the same attrs for ``volumes/affs``, ``volumes/lsds``, ``volumes/fragments`` and the
segmentations (:class:`Volume` describes one such dataset by its ROI in nm).

Every output that must never look complete before it is goes through :func:`atomic_path`: written under a
``.partial`` name, then renamed.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi
from numcodecs import Blosc

from .config import ConfigError

RAW = "volumes/raw"
NEURON_IDS = "volumes/labels/neuron_ids"
LABELS_MASK = "volumes/labels/labels_mask"
AFFS = "volumes/affs"
LSDS = "volumes/lsds"
FRAGMENTS = "volumes/fragments"
PREDICTION_SETTINGS = "lsd_nm_prediction"
"""Attr of ``volumes/affs`` and ``volumes/lsds``: the network, iteration, weights, raw, ROI and voxel size they were
predicted with."""
FRAGMENTS_SETTINGS = "lsd_nm_fragments"
"""Attr of ``volumes/fragments``: the settings it was made with (block geometry, watershed options, mask, ROI)."""
FRAGMENTS_ID = "lsd_nm_fragments_id"
"""Attr of ``volumes/fragments``: a random id given when step 2 creates them; their region graph records it as its
owner (:class:`lsd_nm.graph.GraphOwner`)."""
SEGMENTATION_SETTINGS = "lsd_nm_segmentation"
"""Attr of ``volumes/segmentation_<t>``: the LUT and block size it was made with."""

COMPRESSOR = Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)
"""Chunk compressor of the containers we write (deterministic: gzip would stamp the time into every chunk)."""

LABELS_COMPRESSOR = Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)
"""Chunk compressor of the post-processing's label volumes (fragments, segmentations): a uint64 block of
16 × 128 × 128 voxels encodes in 3 ms at level 1 against 12 ms at level 5 (:data:`COMPRESSOR`), for chunks ~25 %
larger (still ~50 times smaller than the raw ids); segment extraction writes one per block and threshold."""

PREDICTION_COMPRESSOR = Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)
"""Chunk compressor of the predictions. Network outputs are noisy uint8: zstd level 5 (:data:`COMPRESSOR`) makes
them only 2-4 % smaller than level 1, for ~9 times the CPU time per block — the largest cost of a block after the
network itself (benchmarks/blockwise.py)."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """Write ``path`` (a file or a folder) under a temporary name beside it; it replaces ``path`` only when complete.

    Yields the temporary path (``<name><suffix>``; ``.partial.npz`` for numpy's savez, which adds ``.npz`` to any other
    name) to write into. When the block finishes, the temporary replaces ``path``: a file in one ``os.replace``; a folder
    by moving the old one aside (``<name>.old``) first, so that ``path`` is never missing and never half-written. If
    the block raises, the temporary is removed and ``path`` stays as it was.

    Args:
        path: the file or folder to write.
        suffix: appended to the name of the temporary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + suffix)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and path.exists():
        old = path.with_name(path.name + ".old")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_container(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    voxel_size,
    offset,
    chunk_shape=(16, 128, 128),
    attrs: Mapping[str, object] | None = None,
) -> None:
    """Write arrays into a new zarr v2 container, atomically (a ``.partial`` folder renamed when complete).

    Args:
        path: the container to create (``*.zarr``); an existing one is replaced only once the new one is complete.
        arrays: dataset path inside the container → array (z, y, x).
        voxel_size: voxel size in nm, stored as the attr ``resolution``.
        offset: offset in nm, stored as the attr ``offset``.
        chunk_shape: chunk shape in voxels.
        attrs: further attrs of every array (after ``resolution`` and ``offset``).
    """
    with atomic_path(path) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        for name, data in arrays.items():
            group = root
            *parents, leaf = name.split("/")
            for parent in parents:
                group = group.require_group(parent)
            # channels (leading axes) are not chunked
            chunks = data.shape[:-3] + tuple(min(c, s) for c, s in zip(chunk_shape, data.shape[-3:]))
            array = group.create_array(leaf, data=data, chunks=chunks, compressors=COMPRESSOR)
            array.attrs.update({"resolution": [int(v) for v in voxel_size], "offset": [int(v) for v in offset], **(attrs or {})})


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


@dataclass(frozen=True)
class Volume:
    """A zarr dataset with its ROI (nm, spatial axes) and voxel size."""

    path: Path
    roi: Roi
    voxel_size: Coordinate

    def open(self, mode: str = "r"):
        return zarr.open_array(self.path, mode=mode)


def open_dataset(container: Path, dataset: str, what: str) -> Volume:
    """Describe ``container/dataset`` (attrs ``resolution``/``offset`` in nm); missing → one-line ConfigError."""
    path = Path(container) / dataset
    try:
        array = zarr.open_array(path, mode="r")
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError, ValueError, KeyError):
        raise ConfigError(f"{what} '{path}' does not exist") from None
    except Exception as e:  # zarr raises several kinds for a path that is no array
        if "not found" in str(e).lower() or "nothing found" in str(e).lower():
            raise ConfigError(f"{what} '{path}' does not exist") from None
        raise
    attrs = array.attrs.asdict()
    spatial = array.shape[-3:]
    if "resolution" not in attrs:  # no voxel size is no reason to assume 1 nm
        raise ConfigError(f"{what} '{path}' has no attr 'resolution' (its voxel size in nm, z y x)")
    values = {"resolution": attrs["resolution"], "offset": attrs.get("offset", (0, 0, 0))}
    for name, value in values.items():
        if (
            not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in value)
        ):  # fmt: skip
            raise ConfigError(f"{what} '{path}': attr '{name}' is {value!r}; expected 3 whole numbers of nm (z y x)")
    voxel_size = Coordinate(int(v) for v in values["resolution"])
    offset = Coordinate(int(v) for v in values["offset"])
    if any(v <= 0 for v in voxel_size):
        raise ConfigError(f"{what} '{path}': attr 'resolution' is {list(voxel_size)}; voxel sizes are positive")
    return Volume(path, Roi(offset, voxel_size * Coordinate(spatial)), voxel_size)


def fragments_id(container: Path, dataset: str = FRAGMENTS) -> str | None:
    """The :data:`FRAGMENTS_ID` of a fragments dataset (None: it does not exist, or was made without one)."""
    path = Path(container) / dataset
    if not path.exists():
        return None
    try:
        return zarr.open_array(path, mode="r").attrs.asdict().get(FRAGMENTS_ID)
    except (OSError, ValueError, KeyError, zarr.errors.BaseZarrError):
        return None


def voxel_slices(volume: Volume, roi: Roi) -> tuple[slice, ...]:
    """The voxel slices of ``roi`` (nm, inside the volume) in the volume's array."""
    return tuple(
        slice((b - o) // v, (e - o) // v) for b, e, o, v in zip(roi.begin, roi.end, volume.roi.begin, volume.voxel_size)
    )


def damaged_chunk(array, selection: tuple[slice, ...]) -> tuple[tuple[int, ...], str] | None:
    """The first chunk of ``array[selection]`` (slices, spatial axes last) that cannot be read, with the reason.

    Args:
        array: an open zarr array.
        selection: voxel slices of the trailing axes (leading axes are read whole).

    Returns:
        ``(chunk index, reason)``, or None when every chunk of the selection reads.
    """
    lead = array.ndim - len(selection)
    ranges = [range(array.cdata_shape[a]) for a in range(lead)]
    for axis, s in zip(range(lead, array.ndim), selection):
        start, stop, _ = s.indices(array.shape[axis])
        chunk = array.chunks[axis]
        ranges.append(range(start // chunk, max(start, stop - 1) // chunk + 1))
    for index in itertools.product(*ranges):
        try:
            array.blocks[index]
        except Exception as e:  # noqa: BLE001 - any codec's error: what matters is which chunk
            return index, f"{type(e).__name__}: {e}"
    return None


def damage_hint(path: Path | str) -> str:
    """What to do about a damaged chunk of the dataset at ``path``: make an output of ours again, fetch an input."""
    path = str(path).rstrip("/")
    if path.endswith((AFFS, LSDS)):
        return f"delete {path} and run 01_predict_blockwise again"
    if path.endswith(FRAGMENTS):
        return "run 02_extract_fragments again with --overwrite"
    if "/volumes/segmentation_" in path:
        return "run 05_extract_segmentation again with --overwrite"
    return "the file is damaged: fetch or write it again"


def read_checked(array, selection: tuple, path: Path | str):
    """``array[selection]``, where a chunk that cannot be decoded is a one-line :class:`ConfigError` naming the array
    (``path``) and the chunk, instead of a codec's traceback.

    Args:
        array: an open zarr array.
        selection: a tuple of slices (``Ellipsis`` first for leading axes read whole).
        path: the array's path, for the message.
    """
    try:
        return array[selection]
    except Exception as error:
        spatial = tuple(s for s in selection if isinstance(s, slice))
        found = damaged_chunk(array, spatial)
        if found is None:
            raise
        index, reason = found
        key = array.metadata.encode_chunk_key(index) if hasattr(array.metadata, "encode_chunk_key") else index
        raise ConfigError(
            f"{path}: chunk {key} cannot be decoded ({reason}); {damage_hint(path)}"
        ) from error


def read_padded(array, volume: Volume, roi: Roi) -> np.ndarray:
    """Read ``roi`` (nm, voxel-aligned) of an open zarr array; what lies outside the volume reads as 0; a damaged chunk
    is a one-line :class:`ConfigError` naming the array and the chunk."""
    vs = volume.voxel_size
    shape = tuple(s // v for s, v in zip(roi.shape, vs))
    out = np.zeros(array.shape[:-3] + shape, dtype=array.dtype)
    inside = roi.intersect(volume.roi)
    if inside.empty:
        return out
    src = voxel_slices(volume, inside)
    dst = tuple(slice((b - o) // v, (e - o) // v) for b, e, o, v in zip(inside.begin, inside.end, roi.begin, vs))
    out[(Ellipsis, *dst)] = read_checked(array, (Ellipsis, *src), volume.path)
    return out


def read_at_positions(volume: Volume, positions) -> np.ndarray:
    """The values of a 3-D dataset at world positions: position p (nm, zyx) lies in voxel ⌊(p − offset) / voxel size⌋.

    Only the chunks that hold a position are read (zarr's coordinate selection), so skeleton nodes can be looked up
    in a volume far larger than memory, or in one of which only those chunks were fetched.

    Args:
        volume: the dataset (3-D).
        positions: (N, 3) positions, zyx in nm, offset included.

    Returns:
        (N,) values in the dataset's dtype; 0 for positions outside it.
    """
    array = volume.open("r")
    if array.ndim != 3:
        raise ConfigError(f"'{volume.path}': expected a 3-D dataset, got shape {tuple(array.shape)}")
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    index = np.floor((positions - np.asarray(volume.roi.offset, np.float64)) / np.asarray(volume.voxel_size, np.float64))
    index = index.astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(array.shape)), axis=1)
    out = np.zeros(len(positions), dtype=array.dtype)
    if inside.any():
        out[inside] = array.get_coordinate_selection(tuple(index[inside].T))
    return out


def read_on_grid(volume: Volume, roi: Roi, voxel_size) -> np.ndarray:
    """A dataset resampled onto another voxel grid: for each voxel of ``roi`` (nm) on ``voxel_size``, the value at
    its first corner (nearest-lower voxel of ``volume``); 0 outside the dataset. For masks at another resolution.

    Args:
        volume: the dataset (3-D).
        roi: the region, on the ``voxel_size`` grid.
        voxel_size: the target voxel size (nm, zyx).
    """
    array = volume.open("r")
    if array.ndim != 3:
        raise ConfigError(f"'{volume.path}': expected a 3-D dataset, got shape {tuple(array.shape)}")
    axes = []
    for b, e, v, o, s, n in zip(roi.begin, roi.end, voxel_size, volume.roi.offset, volume.voxel_size, array.shape):
        index = (np.arange(b, e, v, dtype=np.int64) - o) // s
        axes.append((index, (index >= 0) & (index < n)))
    out = np.zeros(tuple(len(i) for i, _ in axes), dtype=array.dtype)
    if not all(ok.any() for _, ok in axes):
        return out
    lo = [int(i[ok].min()) for i, ok in axes]
    hi = [int(i[ok].max()) + 1 for i, ok in axes]
    box = array[tuple(slice(a, b) for a, b in zip(lo, hi))]
    picked = box[np.ix_(*[(i[ok] - a) for (i, ok), a in zip(axes, lo)])]
    out[np.ix_(*[ok for _, ok in axes])] = picked
    return out
