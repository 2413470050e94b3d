"""A user's own volumes → a dataset that trains, segments and evaluates with the tutorial's commands.

``new_dataset`` reads raw and labels from zarr (v2 or v3; an OME-Zarr multiscale image gives its full-resolution
level and its scale) or HDF5 containers, checks everything first (one line each, nothing written), then writes:

- the registry entry, in ``<data dir>/user_datasets.json`` (apart from the paper's ``01_data/datasets.json``),
- each volume converted to the layout training reads: ``<data dir>/funke/<name>/{training,testing}/<volume>.zarr``
  with ``volumes/raw`` (uint8), ``volumes/labels/neuron_ids`` (uint64), ``volumes/labels/labels_mask`` and the
  ``resolution``/``offset`` attrs,
- ``02_train/<name>/config.json`` and the seven network folders (the scripts copied byte for byte),
- ``03_predict/configs/<name>.json`` (mtlsd on the test volume, evaluated against its labels).

Design rules (printed with the values chosen):

- anisotropic (zebrafinch's U-Net, downsampling (1,3,3),(1,3,3),(3,3,3)) when z is at least 2× coarser than the
  finest of y and x, else isotropic (fib25's, (2,2,2),(2,2,2),(3,3,3));
- LSD sigma = 10 × the geometric mean of the voxel size, rounded to 10 nm (20×9×9 nm → 120 nm, 8 nm → 80 nm: the
  paper's values);
- input shapes: the design's when they fit into the smallest volume, else the largest valid input that fits;
- long-range offsets (:func:`long_range_neighborhood`): channels 0-2 the nearest neighbours; every other channel
  reaches as far in nm as the paper's zebrafinch channel (at 20×9×9 nm), on the same axis, rounded to the nearest
  voxel (halves up) and at least one voxel further than the channel before it on that axis; the long_range labels
  padding is the baseline's plus the longest offset minus one voxel, per axis (zebrafinch's rule).

Volumes are converted block by block (chunk-aligned blocks of at most ``max_voxels`` voxels), so memory stays
bounded whatever their size; the checks that read voxels (raw's range, labels all 0) run over all volumes first.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import REPO_ROOT
from .config import ConfigError
from .data import COMPRESSOR, LABELS_MASK, NEURON_IDS, RAW, atomic_path
from .datasets import DATA_DIR, DATASETS_FILE, USER_DATASETS_NAME, load_datasets, volume_path
from .experiment import NetworkConfig, UNetConfig
from .masks import BLOCK_VOXELS, blocks, create_mask
from .networks import unet_output_shape

NETWORKS = ("baseline", "lsd", "mtlsd", "aclsd", "acrlsd", "long_range", "malis")
"""The seven network folders of a dataset."""
SHIMS = ("mknet.py", "train.py", "predict.py", "predict_scan.py", "view_batch.py")
"""The scripts every network folder holds, identical in all of them."""
ANISOTROPY = 2.0
"""z at least this much coarser than the finest of y, x: the anisotropic design."""
HDF5_SUFFIXES = (".h5", ".hdf", ".hdf5")
"""File names read with h5py."""
CHUNK_SHAPE = (16, 128, 128)
"""Chunk shape (voxels) of the converted volumes; conversion blocks are aligned to it."""
REFERENCE_VOXEL_SIZE = (20, 9, 9)
"""The voxel size (nm) of the paper's only published long-range neighbourhood (zebrafinch)."""
REFERENCE_LONG_RANGE = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (-3, 0, 0), (0, -3, 0), (0, 0, -3),
                        (-5, 0, 0), (0, -9, 0), (0, 0, -9), (-15, 0, 0), (0, -27, 0), (0, 0, -27))  # fmt: skip
"""Zebrafinch's long_range neighbourhood (voxels at :data:`REFERENCE_VOXEL_SIZE`), whose reach in nm is kept."""


@dataclass
class Source:
    """One dataset of a user's container, before conversion."""

    path: Path
    dataset: str
    shape: tuple[int, ...]
    dtype: np.dtype
    voxel_size: tuple[int, int, int] | None
    """From the container's attrs (None: none there)."""
    offset: tuple[int, int, int]
    """In nm (0 when the container says nothing)."""
    where: str = ""
    """Which attr gave the voxel size."""

    @contextmanager
    def open(self) -> Iterator:
        """The array (h5py dataset or zarr array), read block by block with ``array[slices]``."""
        if self.path.suffix.lower() in HDF5_SUFFIXES:
            import h5py

            with h5py.File(self.path, "r") as f:
                yield f[self.dataset]
            return
        import zarr

        yield zarr.open_array(self.path / self.dataset, mode="r")

    def blocks(self, max_voxels: int) -> Iterator[np.ndarray]:
        """The array's values in chunk-aligned blocks of at most ``max_voxels`` voxels (see :func:`masks.blocks`)."""
        with self.open() as array:
            for block in blocks(self.shape, CHUNK_SHAPE, max_voxels):
                yield array[block]


@dataclass
class Plan:
    """What :func:`new_dataset` chose, and why (one line each)."""

    name: str
    voxel_size: tuple[int, int, int]
    design: str
    sigma: float
    input_shape: tuple[int, int, int]
    predict_input_shape: tuple[int, int, int]
    reasons: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    next_commands: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What ``make new-dataset`` prints: the reasons of its choices, the files written, the commands to run next."""
        return [
            f"dataset '{self.name}':", *(f"  {reason}" for reason in self.reasons),
            "wrote:", *(f"  {path}" for path in self.written),
            "next:", *(f"  {command}" for command in self.next_commands),
        ]  # fmt: skip


def _triple(value, what: str) -> tuple[int, int, int]:
    values = list(value)[-3:]
    if len(values) != 3 or not all(float(v).is_integer() and float(v) > 0 for v in values):
        raise ConfigError(f"{what} is {list(value)}; expected 3 positive whole numbers of nm (z y x)")
    return tuple(int(v) for v in values)


def _ome_level(attrs: dict) -> tuple[str, list | None, list | None] | None:
    """An OME-NGFF multiscale's full-resolution level: (path, scale, translation)."""
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    level = multiscales[0]["datasets"][0]
    scale = translation = None
    for transform in level.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform["scale"]
        elif transform.get("type") == "translation":
            translation = transform["translation"]
    return level["path"], scale, translation


def open_source(path: Path, dataset: str | None, what: str) -> Source:
    """``path``/``dataset`` as a :class:`Source`; a missing file or dataset is one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} container '{path}' does not exist")
    if path.suffix.lower() == ".n5" or (path / "attributes.json").exists():
        raise ConfigError(f"{what} container '{path}' is N5, which this zarr cannot read; convert it to zarr first")
    if path.suffix.lower() in HDF5_SUFFIXES:
        import h5py

        with h5py.File(path, "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise ConfigError(f"{what} dataset '{dataset}' is not in '{path}' (its datasets: {_h5_datasets(f)})")
            d = f[dataset]
            attrs = dict(d.attrs)
            return _source(path, dataset, d.shape, d.dtype, attrs, what)
    import zarr

    try:
        node = zarr.open(path / dataset if dataset else path, mode="r")
    except Exception:
        raise ConfigError(f"{what} dataset '{dataset}' is not in '{path}'") from None
    attrs = node.attrs.asdict()
    ome = _ome_level(attrs)
    if ome is not None:
        level, scale, translation = ome
        array = zarr.open_array(Path(node.store.root) / node.path / level, mode="r")
        source = _source(path, f"{dataset}/{level}" if dataset else level, array.shape, array.dtype, {}, what)
        if scale is not None:
            source.voxel_size, source.where = _triple(scale, f"{what} OME-NGFF scale"), "OME-NGFF scale"
        if translation is not None:
            source.offset = tuple(int(v) for v in list(translation)[-3:])
        return source
    if not isinstance(node, zarr.Array):
        raise ConfigError(f"{what} dataset '{dataset}' in '{path}' is a group, not an array")
    return _source(path, dataset, node.shape, node.dtype, attrs, what)


def _h5_datasets(f) -> str:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return ", ".join(names) or "none"


def _source(path: Path, dataset: str, shape, dtype, attrs: dict, what: str) -> Source:
    voxel_size, where = None, ""
    for key in ("resolution", "voxel_size"):
        if key in attrs:
            voxel_size, where = _triple(np.asarray(attrs[key]).tolist(), f"{what} attr '{key}'"), f"attr '{key}'"
            break
    offset = tuple(int(v) for v in np.asarray(attrs.get("offset", (0, 0, 0))).tolist()[-3:])
    return Source(path, dataset, tuple(shape), np.dtype(dtype), voxel_size, offset, where)


def choose_voxel_size(sources: Sequence[Source], given: Sequence[int] | None) -> tuple[tuple[int, int, int], str]:
    """One voxel size for all volumes, from their attrs or ``given``; disagreement or none anywhere is one line."""
    given_t = _triple(given, "VOXEL_SIZE") if given else None
    found = {s.voxel_size for s in sources if s.voxel_size is not None}
    if len(found) > 1:
        detail = ", ".join(f"{s.path.name}/{s.dataset}: {list(s.voxel_size)}" for s in sources if s.voxel_size)
        raise ConfigError(f"the volumes' voxel sizes differ ({detail})")
    if given_t and found and given_t not in found:
        source = next(s for s in sources if s.voxel_size)
        raise ConfigError(f"VOXEL_SIZE {list(given_t)} disagrees with {source.path.name}'s {source.where} "
                          f"{list(source.voxel_size)}")  # fmt: skip
    if given_t:
        return given_t, "given as VOXEL_SIZE"
    if not found:
        raise ConfigError("no voxel size: the volumes have no 'resolution', 'voxel_size' or OME-NGFF scale; "
                          'give VOXEL_SIZE="z y x" (nm)')  # fmt: skip
    source = next(s for s in sources if s.voxel_size)
    return source.voxel_size, f"from {source.path.name}'s {source.where}"


def lsd_sigma(voxel_size: Sequence[int]) -> float:
    """10 × the geometric mean of the voxel size, rounded to 10 nm (20×9×9 → 120, 8×8×8 → 80)."""
    return float(10 * round(math.prod(voxel_size) ** (1 / 3)))


def is_anisotropic(voxel_size: Sequence[int]) -> bool:
    """z at least :data:`ANISOTROPY` × coarser than the finest of y and x."""
    return voxel_size[0] >= ANISOTROPY * min(voxel_size[1:])


def fitting_input(unet: UNetConfig, wanted: Sequence[int], room: Sequence[int]) -> tuple[int, int, int] | None:
    """``wanted`` (a valid input) if it fits into ``room`` (voxels), else the largest valid input inside it.

    Valid-U-Net shape rules act on each axis alone: each axis is searched downwards with the others at ``wanted``.
    None: no valid input fits.
    """
    shape = list(wanted)
    for axis in range(3):
        size = min(wanted[axis], room[axis])
        while size > 0:
            try:
                unet_output_shape(unet, tuple(size if a == axis else wanted[a] for a in range(3)))
                break
            except ConfigError:
                size -= 1
        if size <= 0:
            return None
        shape[axis] = size
    return tuple(shape)


def _check_values(raw: Source, labels: Source, rescale: bool, max_voxels: int) -> tuple[float, float] | None:
    """Raw 8-bit unless rescaled (then its range), labels non-negative integers and not all 0; reads block by block."""
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"labels '{labels.path}/{labels.dataset}' are {labels.dtype}; expected non-negative integers")
    if raw.dtype != np.uint8 and not rescale:
        raise ConfigError(f"raw '{raw.path}/{raw.dataset}' is {raw.dtype}, not uint8; pass --rescale (RESCALE=1) "
                          "to map its range to 0-255")  # fmt: skip
    any_object, lowest = False, 0
    for ids in labels.blocks(max_voxels):
        any_object = any_object or bool(np.any(ids))
        lowest = min(lowest, int(ids.min())) if ids.size else lowest
    if lowest < 0:
        raise ConfigError(f"labels '{labels.path}/{labels.dataset}' are {labels.dtype} with negative ids; expected "
                          "non-negative integers")  # fmt: skip
    if not any_object:
        raise ConfigError(f"labels '{labels.path}/{labels.dataset}' are all 0 (no objects to learn from)")
    if raw.dtype == np.uint8:
        return None
    low, high = math.inf, -math.inf
    for data in raw.blocks(max_voxels):
        if data.size:
            low, high = min(low, float(np.min(data))), max(high, float(np.max(data)))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"raw '{raw.path}/{raw.dataset}' has values that are not finite (range [{low}, {high}])")
    return low, high


def rescale_to_uint8(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """``data`` mapped linearly from [low, high] to [0, 255], rounded (a constant volume: all 0)."""
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.round((data.astype(np.float64) - low) * scale), 0, 255).astype(np.uint8)


def convert_volume(target: Path, raw: Source, labels: Source, mask: Source | None, value_range, voxel_size, offset,
                   max_voxels: int = BLOCK_VOXELS) -> None:  # fmt: skip
    """Write one volume in the training layout, block by block, atomically (a ``.partial`` folder renamed at the end).

    ``volumes/raw`` (uint8; rescaled from ``value_range`` when given), ``volumes/labels/neuron_ids`` (uint64) and,
    when ``mask`` is given, ``volumes/labels/labels_mask`` (uint8: mask > 0), each with ``resolution`` and ``offset``.
    """
    import zarr

    items = [(RAW, raw, np.uint8, (lambda d: rescale_to_uint8(d, *value_range)) if value_range else None),
             (NEURON_IDS, labels, np.uint64, None)]  # fmt: skip
    if mask is not None:
        items.append((LABELS_MASK, mask, np.uint8, lambda d: (d > 0).astype(np.uint8)))
    attrs = {"resolution": [int(v) for v in voxel_size], "offset": [int(v) for v in offset]}
    with atomic_path(target) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        for name, source, dtype, transform in items:
            *parents, leaf = name.split("/")
            group = root
            for parent in parents:
                group = group.require_group(parent)
            chunks = tuple(min(c, s) for c, s in zip(CHUNK_SHAPE, source.shape))
            out = group.create_array(leaf, shape=source.shape, dtype=dtype, chunks=chunks, compressors=COMPRESSOR,
                                     fill_value=0)  # fmt: skip
            out.attrs.update(attrs)
            with source.open() as array:
                for block in blocks(source.shape, CHUNK_SHAPE, max_voxels):
                    data = array[block]
                    out[block] = transform(data) if transform else data.astype(dtype)


def long_range_neighborhood(voxel_size: Sequence[int]) -> list[tuple[int, int, int]]:
    """Zebrafinch's 12 long-range offsets carried to ``voxel_size`` by their reach in nm (see the module's rules).

    20×9×9 nm gives zebrafinch's own offsets; 8 nm isotropic gives fib25's and hemi's (02_train/README.md).
    """
    offsets: list[tuple[int, int, int]] = []
    previous = [0, 0, 0]
    for offset in REFERENCE_LONG_RANGE:
        axis = next(a for a in range(3) if offset[a])
        if len(offsets) < 3:
            steps = 1
        else:
            reach = abs(offset[axis]) * REFERENCE_VOXEL_SIZE[axis]
            steps = max(math.floor(reach / voxel_size[axis] + 0.5), previous[axis] + 1)
        previous[axis] = steps
        offsets.append(tuple(-steps if a == axis else 0 for a in range(3)))
    return offsets


def long_range_padding(baseline_padding: Sequence[int], neighborhood, voxel_size: Sequence[int]) -> list[int]:
    """The baseline's labels padding (nm) plus the longest offset minus one voxel, per axis (zebrafinch's rule)."""
    longest = np.abs(np.array(neighborhood)).max(axis=0)
    return [int(p + (n - 1) * v) for p, n, v in zip(baseline_padding, longest, voxel_size)]


def new_dataset(
    name: str,
    train: Sequence[Path],
    test: Path | None = None,
    raw_dataset: str = RAW,
    labels_dataset: str = NEURON_IDS,
    mask_dataset: str | None = None,
    voxel_size: Sequence[int] | None = None,
    force: bool = False,
    rescale: bool = False,
    root: Path | None = REPO_ROOT,
    data_dir: Path | None = DATA_DIR,
    max_voxels: int = BLOCK_VOXELS,
) -> Plan:
    """Check, then write the dataset ``name`` (see the module's docstring); returns what was chosen and written.
    ``root`` (the repository holding ``02_train/`` and ``03_predict/``) and ``data_dir`` None: the defaults."""
    root, data_dir = Path(root or REPO_ROOT), Path(data_dir or DATA_DIR)
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"NAME '{name}' is not a name (letters, digits, _ and -)")
    if not train:
        raise ConfigError('no TRAIN volumes (TRAIN="a.h5 b.zarr")')
    user_file = data_dir / USER_DATASETS_NAME
    registry = load_datasets(DATASETS_FILE, user_file)
    paper = load_datasets(DATASETS_FILE, None)
    if name in paper:
        raise ConfigError(f"NAME '{name}' is one of the paper's datasets; choose another")
    train_dir = root / "02_train" / name
    if (name in registry or train_dir.exists()) and not force:
        raise ConfigError(f"dataset '{name}' exists ({train_dir if train_dir.exists() else user_file}); "
                          "pass --force (FORCE=1) to replace it")  # fmt: skip
    volumes = [(Path(p), False) for p in train] + ([(Path(test), True)] if test else [])
    pairs = []
    for path, is_test in volumes:
        raw = open_source(path, raw_dataset, "raw")
        labels = open_source(path, labels_dataset, "labels")
        mask = open_source(path, mask_dataset, "mask") if mask_dataset else None
        for other in [labels] + ([mask] if mask else []):
            if other.shape[-3:] != raw.shape[-3:]:
                raise ConfigError(f"{path.name}: raw is {list(raw.shape)} voxels but {other.dataset} is "
                                  f"{list(other.shape)}")  # fmt: skip
            if other.voxel_size and raw.voxel_size and other.voxel_size != raw.voxel_size:
                raise ConfigError(f"{path.name}: raw has voxel size {list(raw.voxel_size)} nm but {other.dataset} "
                                  f"{list(other.voxel_size)}")  # fmt: skip
        if len(raw.shape) != 3:
            raise ConfigError(f"{path.name}: raw has shape {list(raw.shape)}; expected 3 axes (z y x)")
        pairs.append((path, is_test, raw, labels, mask))
    sources = [s for _, _, raw, labels, mask in pairs for s in (raw, labels, mask) if s]
    voxels, voxel_reason = choose_voxel_size(sources, voxel_size)
    names = [p.stem + ".zarr" for p, *_ in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two volumes have the same name: {names}")

    # the design, and shapes that fit
    anisotropic = is_anisotropic(voxels)
    template = "zebrafinch" if anisotropic else "fib25"
    base = json.loads((root / "02_train" / template / "config.json").read_text()) if not anisotropic else {}
    defaults = NetworkConfig(network="baseline", **base)
    room = tuple(min(raw.shape[a] for _, is_test, raw, _, _ in pairs if not is_test) for a in range(3))
    input_shape = fitting_input(defaults.unet, defaults.input_shape, room)
    if input_shape is None:
        raise ConfigError(f"the training volumes (smallest: {list(room)} voxels) are too small for the {template} "
                          "U-Net's smallest input")  # fmt: skip
    test_room = pairs[-1][2].shape
    predict_shape = fitting_input(defaults.unet, defaults.predict_input_shape, test_room) or input_shape
    sigma = lsd_sigma(voxels)

    neighborhood = long_range_neighborhood(voxels)

    # the checks that read voxels, over every volume before anything is written
    ranges, notes = [], []
    for path, is_test, raw, labels, mask in pairs:
        value_range = _check_values(raw, labels, rescale, max_voxels)
        if value_range:
            notes.append(f"raw {path.name} ({raw.dtype}) rescaled from [{value_range[0]:g}, {value_range[1]:g}] "
                         "(its minimum and maximum) to [0, 255]")  # fmt: skip
        ranges.append(value_range)

    plan = Plan(name, voxels, template, sigma, input_shape, predict_shape)
    plan.reasons += [
        f"voxel size {list(voxels)} nm ({voxel_reason})",
        f"design: {'anisotropic' if anisotropic else 'isotropic'} ({template}'s U-Net): z {voxels[0]} nm is "
        f"{'at least' if anisotropic else 'less than'} {ANISOTROPY:g}× the finest of y, x ({min(voxels[1:])} nm)",
        f"LSD sigma {sigma:g} nm = 10 × the geometric mean of the voxel size, rounded to 10 nm "
        "(the paper: 120 at 20×9×9, 80 at 8×8×8)",
        f"input shape {list(input_shape)} (the {template} design's {list(defaults.input_shape)}, shrunk to a valid "
        f"shape inside the smallest training volume {list(room)})" if input_shape != defaults.input_shape
        else f"input shape {list(input_shape)} (the {template} design's)",
        f"predict input shape {list(predict_shape)}",
        f"long-range offsets {[list(o) for o in neighborhood]} voxels: channels 0-2 the nearest neighbours, the "
        f"others reaching as far in nm as zebrafinch's at {list(REFERENCE_VOXEL_SIZE)} nm, rounded to whole voxels "
        "(halves up), each further than the one before on its axis",
        *notes,
    ]
    if force:
        shutil.rmtree(train_dir, ignore_errors=True)
        shutil.rmtree(data_dir / "funke" / name, ignore_errors=True)
    for (path, is_test, raw, labels, mask), value_range in zip(pairs, ranges):
        target = volume_path(name, path.stem + ".zarr", test=is_test, data_dir=data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        offset = tuple(o - o % v for o, v in zip(raw.offset, voxels))
        convert_volume(target, raw, labels, mask, value_range, voxels, offset, max_voxels)
        if mask is None:
            create_mask(target, max_voxels=max_voxels)
        plan.written.append(target)

    entries = json.loads(user_file.read_text()) if user_file.exists() else {}
    train_names = [p.stem + ".zarr" for p, is_test, *_ in pairs if not is_test]
    entries[name] = {"voxel_size": list(voxels), "volumes": train_names}
    if test:
        entries[name]["test_volumes"] = [Path(test).stem + ".zarr"]
    user_file.parent.mkdir(parents=True, exist_ok=True)
    user_file.write_text(json.dumps(entries, indent=2) + "\n")
    plan.written.append(user_file)

    plan.written += _write_train(root, name, template, input_shape, predict_shape, sigma, voxels, neighborhood)
    run_config = _write_run_config(root, data_dir, name, pairs[-1], voxels, defaults, predict_shape)
    plan.written.append(run_config)
    rel = run_config.relative_to(root) if run_config.is_relative_to(root) else run_config
    plan.next_commands = [
        f"make mknet DATASET={name} NETWORK=mtlsd",
        f"make train DATASET={name} NETWORK=mtlsd ITERATION=100000",
        f"make view-batch DATASET={name} NETWORK=mtlsd",
        f"make predict-scan DATASET={name} NETWORK=mtlsd ITERATION=latest",
        f"make segment CONFIG={rel}",
    ]
    return plan


def _write_train(root: Path, name: str, template: str, input_shape, predict_shape, sigma: float, voxels,
                 neighborhood) -> list[Path]:  # fmt: skip
    """``02_train/<name>/``: the design's dataset config with the chosen shapes, and the seven network folders."""
    source = root / "02_train" / template
    target = root / "02_train" / name
    config = json.loads((source / "config.json").read_text()) if (source / "config.json").exists() else {}
    config.update({"input_shape": list(input_shape), "predict_input_shape": list(predict_shape)})
    config["lsds"] = {**config.get("lsds", {}), "sigma": sigma}
    target.mkdir(parents=True, exist_ok=True)
    written = [target / "config.json"]
    written[0].write_text(json.dumps(config, indent=2) + "\n")
    unet = NetworkConfig(network="baseline", **config).unet
    for network in NETWORKS:
        folder = target / network
        folder.mkdir(exist_ok=True)
        for shim in SHIMS:
            shutil.copyfile(source / network / shim, folder / shim)
        delta = json.loads((source / network / "config.json").read_text())
        if network in ("aclsd", "acrlsd"):
            # the frozen lsd net must cover this net's input: its smallest valid input with that output
            from .networks import smallest_input_for

            delta["autocontext"] = {**delta.get("autocontext", {}),
                                    "auto_input_shape": list(smallest_input_for(unet, input_shape, input_shape))}
            delta.pop("predict_input_shape", None)
        if network == "long_range":
            baseline = NetworkConfig(network="baseline", **config).train.labels_padding
            delta["neighborhood"] = [list(o) for o in neighborhood]
            delta["train"] = {**delta.get("train", {}),
                              "labels_padding": long_range_padding(baseline, neighborhood, voxels)}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(delta, indent=2) + "\n")
        written.append(folder)
    return written


def _write_run_config(root: Path, data_dir: Path, name: str, last, voxels, defaults: NetworkConfig,
                      predict_shape) -> Path:  # fmt: skip
    """``03_predict/configs/<name>.json``: mtlsd on the last volume, evaluated against its labels."""
    path, is_test, *_ = last
    volume = volume_path(name, path.stem + ".zarr", test=is_test, data_dir=data_dir)
    out = unet_output_shape(defaults.unet, predict_shape)
    block = [o * v for o, v in zip(out, voxels)]
    context = [(i - o) // 2 * v for i, o, v in zip(predict_shape, out, voxels)]
    # relative paths of a run config resolve against this repository: elsewhere (--root) they are written absolute
    where = Path() if Path(root).resolve() == REPO_ROOT.resolve() else Path(root).resolve()
    config = {
        "setup": str(where / "02_train" / name / "mtlsd"),
        "iteration": "latest",
        "raw_file": str(volume),
        "out_file": str(where / "03_predict" / "out" / f"{name}_mtlsd.zarr"),
        "num_workers": 2,
        "block_size": block,
        "context": context,
        "merge_function": "hist_quant_75",
        "thresholds": [0.0, 1.0, 0.05],
        "extract_thresholds": [0.3, 0.5],
        "gt_file": str(volume),
        "gt_dataset": NEURON_IDS,
    }
    target = root / "03_predict" / "configs" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config, indent=2) + "\n")
    return target
