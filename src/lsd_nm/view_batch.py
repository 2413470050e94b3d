"""A neuroglancer viewer of one training snapshot (``snapshots/batch_<iteration>.hdf``): what the network saw and said.

Each array is placed with its voxel size (attr ``resolution``, nm) and its offset (attr ``offset``, nm, converted to
voxels), on dimensions named z, y, x (``c^`` first for channels). The original named the zyx data's axes x, y, z and
passed nm where neuroglancer expects voxels. Neuron ids are segmentation layers; affinities and LSDs are RGB over three
channels (``--lsd-channels 3,4,5`` picks the LSD ones; the original asked users to edit the shader); gradients and
masks are grey. Every layer but the ids gets its own panel (a grid of y-x sections sharing position and zoom), so
targets and predictions sit side by side; raw sits under the ids in the first panel.

Run from a network folder: python view_batch.py [ITERATION] [--lsd-channels 3,4,5] [--screenshot out.png [--size 800 600]]
(or: lsd-nm view-batch 02_train/synthetic/mtlsd [ITERATION] [--file snapshots/batch_1.hdf] ...)
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .config import ConfigError
from .view import LayerKind, LayerSource, ViewerOptions, _spatial_attrs, fit_scale, serve

SNAPSHOTS = "snapshots"
"""A network folder's snapshot folder (written by :class:`lsd_nm.nodes.snapshot.Snapshot`)."""
SNAPSHOT_NAME = re.compile(r"batch_(\d+)\.hdf")
LSD_CHANNELS = 10
"""Channels of a 3D LSD: mean offset (z, y, x) 0–2, covariance diagonal 3–5, Pearson off-diagonal 6–8, size 9."""
DEFAULT_LSD_CHANNELS = (0, 1, 2)
Display = Literal["raw", "segmentation", "rgb", "grayscale"]


@dataclass(frozen=True)
class BatchLayer(LayerSource):
    """One dataset of a snapshot and how it is drawn."""

    display: Display = "raw"
    """``raw`` (grey image), ``segmentation``, ``rgb`` (three channels) or ``grayscale`` (channels combined)."""
    channels: tuple[int, ...] = ()
    """The channels drawn (``rgb``: red, green, blue; ``grayscale`` of a 4D array: all of them)."""
    value_scale: float = 1.0
    """Grey values are multiplied by this (gradients: 1 / their 99th-percentile magnitude)."""


def list_snapshots(folder: Path) -> dict[int, Path]:
    """A network folder's snapshots by iteration (unfinished ``*.partial`` files are left out).

    Args:
        folder: a network folder, e.g. ``02_train/synthetic/mtlsd``.
    """
    directory = Path(folder) / SNAPSHOTS
    found = {}
    if directory.is_dir():
        for path in directory.iterdir():
            match = SNAPSHOT_NAME.fullmatch(path.name)
            if match:
                found[int(match[1])] = path
    return dict(sorted(found.items()))


def find_snapshot(folder: Path, iteration: int | None = None) -> Path:
    """The snapshot of ``iteration`` in a network folder, or its newest one.

    Args:
        folder: a network folder.
        iteration: the snapshot's iteration (None: the newest).
    """
    directory = Path(folder) / SNAPSHOTS
    snapshots = list_snapshots(folder)
    if not snapshots:
        raise ConfigError(
            f"{directory}: no snapshots (training writes snapshots/batch_<iteration>.hdf every train.snapshot_every "
            "iterations, the first at iteration 1: run `python train.py N` first)"
        )
    if iteration is None:
        return snapshots[max(snapshots)]
    if iteration not in snapshots:
        available = ", ".join(str(i) for i in snapshots)
        raise ConfigError(f"{directory}: no snapshot of iteration {iteration} (available: {available})")
    return snapshots[iteration]


def parse_lsd_channels(text: str) -> tuple[int, int, int]:
    """``"3,4,5"`` → ``(3, 4, 5)``: the LSD channels drawn as red, green and blue.

    Args:
        text: three comma-separated channel numbers in 0–9.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected three comma-separated LSD channels such as 3,4,5, got '{text}'")
    channels = tuple(int(p) for p in parts)
    if max(channels) >= LSD_CHANNELS:
        raise ValueError(f"expected LSD channels in 0–{LSD_CHANNELS - 1}, got '{text}'")
    return channels


ROLES = ("raw", "ids", "autocontext", "lsds", "affinities", "gradient", "mask", "other")
"""What a snapshot's dataset is, in display order (from its name: ``lsd_nm.pipelines.SNAPSHOT_DATASETS``; the
original's ``embedding`` means LSDs)."""


def _role(path: str, dtype: np.dtype, ndim: int) -> str:
    name = path.lower()
    if name.endswith("raw"):
        return "raw"
    if "mask" in name:
        return "mask"
    if ndim == 3 and np.issubdtype(dtype, np.integer) and dtype.itemsize >= 4:
        return "ids"
    if "gradient" in name:
        return "gradient"
    if "pretrained" in name:
        return "autocontext"
    if "lsd" in name or "embedding" in name:
        return "lsds"
    if "aff" in name:
        return "affinities"
    return "other"


def _as_float(data: np.ndarray) -> np.ndarray:
    """Image data as float32 in [0, 1]: floats as stored, {0, 1} integers (masks, affinities) as they are, other
    integers (uint8 LSDs or raw) divided by their type's maximum."""
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    return data.astype(np.float32) / (np.iinfo(data.dtype).max if data.size and data.max() > 1 else 1)


def _gradient_scale(gradient: np.ndarray) -> float:
    """The factor that makes a gradient's 99th-percentile magnitude (over its channels) white: a percentile, not the
    maximum, because MALIS gradients are sparse, a few edges carrying most of the loss."""
    magnitude = np.sqrt((gradient**2).sum(axis=0)) if gradient.ndim == 4 else np.abs(gradient)
    for top in (np.percentile(magnitude, 99) if magnitude.size else 0.0, magnitude.max(initial=0.0)):
        if top > 0:
            return float(1.0 / top)
    return 1.0


def _read_layer(
    path: Path, name: str, dataset, default_voxel_size: tuple | None, lsd_channels: Sequence[int]
) -> tuple[BatchLayer, np.ndarray]:
    """One dataset of a snapshot as a layer, and its data (see :func:`read_snapshot`)."""
    voxel_size, offset = _spatial_attrs(dict(dataset.attrs), default_voxel_size, f"{path}:{name}")
    role = _role(name, dataset.dtype, dataset.ndim)
    array = dataset[:]
    n_channels = array.shape[0] if array.ndim == 4 else 0
    channels: tuple[int, ...] = ()
    value_scale = 1.0
    if role == "ids":
        display: Display = "segmentation"
        array = array.astype(np.uint64, copy=False)
    else:
        array = _as_float(array)
        if array.ndim == 3 and role not in ("gradient", "mask"):
            display = "raw"
        elif role in ("gradient", "mask") or n_channels < 3:
            display = "grayscale"
            channels = tuple(range(n_channels))
            if role == "gradient":
                value_scale = _gradient_scale(array)
        else:
            display = "rgb"
            channels = (0, 1, 2)
            if role in ("lsds", "autocontext"):  # the autocontext input is the lsd net's LSDs
                if max(lsd_channels) >= n_channels:
                    raise ConfigError(
                        f"--lsd-channels {','.join(map(str, lsd_channels))}: {path}:{name} has {n_channels} "
                        f"channels (expected channels 0–{n_channels - 1})"
                    )
                channels = tuple(lsd_channels)
    if array.ndim == 4:
        kind: LayerKind = "mask" if role == "mask" else "channels"
    else:
        kind = {"ids": "segmentation", "mask": "mask"}.get(role, "image")
    layer_name = name.removeprefix("volumes/").rsplit("/", 1)[-1]
    layer = BatchLayer(layer_name, name, kind, tuple(array.shape), voxel_size, offset, display, channels, value_scale)
    return layer, array


def read_snapshot(
    path: Path, lsd_channels: Sequence[int] = DEFAULT_LSD_CHANNELS
) -> tuple[list[BatchLayer], dict[str, np.ndarray], dict]:
    """The layers of a snapshot, in display order, with their data (read into memory: snapshots are one batch).

    Args:
        path: an HDF5 snapshot with attrs ``offset`` and ``resolution`` (nm, z y x) on its datasets.
        lsd_channels: the three LSD channels drawn as red, green and blue.

    Returns:
        The layers; layer name → data (uint64 ids, float32 in [0, 1] for the rest, 4D channels first); the file's
        root attrs (``iteration``, ``loss``).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such snapshot file")
    try:
        file = h5py.File(path, "r")
    except OSError as e:
        raise ConfigError(f"{path}: not an HDF5 snapshot ({e})") from None
    with file:
        datasets = {}

        def collect(name: str, obj) -> None:  # returns None: h5py stops visiting at the first other value
            if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4):
                datasets[name] = obj

        file.visititems(collect)
        if not datasets:
            raise ConfigError(f"{path}: no 3D or 4D datasets in the snapshot")
        raw = next((d for name, d in datasets.items() if name.endswith("raw")), None)
        default_voxel_size = tuple(raw.attrs["resolution"]) if raw is not None and "resolution" in raw.attrs else None
        order = sorted(datasets, key=lambda n: (ROLES.index(_role(n, datasets[n].dtype, datasets[n].ndim)), n))
        layers, data = [], {}
        for name in order:
            layer, array = _read_layer(path, name, datasets[name], default_voxel_size, lsd_channels)
            if layer.name in data:  # two datasets of one name in different groups
                layer = dataclasses.replace(layer, name=name)
            layers.append(layer)
            data[layer.name] = array
        attrs = {key: (value.item() if hasattr(value, "item") else value) for key, value in file.attrs.items()}
    return layers, data, attrs


def shader(layer: BatchLayer) -> str | None:
    """The layer's GLSL shader (None for segmentations). Data are float32, so ``toNormalized`` is the value itself.

    Args:
        layer: from :func:`read_snapshot`.
    """
    if layer.display == "segmentation":
        return None
    if layer.display == "raw":
        return "void main() {\n  emitGrayscale(toNormalized(getDataValue()));\n}"
    values = [f"toNormalized(getDataValue({c}))" for c in layer.channels]
    if layer.display == "rgb":
        channels = ", ".join(map(str, layer.channels))
        return f"void main() {{\n  // channels {channels} as red, green, blue\n  emitRGB(vec3({', '.join(values)}));\n}}"
    if not values:
        return f"void main() {{\n  emitGrayscale(abs(toNormalized(getDataValue())) * {layer.value_scale:.9g});\n}}"
    lines = [f"  float v{c} = {v};" for c, v in zip(layer.channels, values)]
    if layer.kind == "mask":  # the fraction of the channels (affinity edges) masked in
        grey = f"({' + '.join(f'v{c}' for c in layer.channels)}) / {float(len(values))}"
    else:  # the magnitude over the channels (v * v: GLSL's pow is undefined for negative gradients)
        grey = f"sqrt({' + '.join(f'v{c} * v{c}' for c in layer.channels)})"
    body = "\n".join([*lines, f"  emitGrayscale({grey} * {layer.value_scale:.9g});"])
    return f"void main() {{\n{body}\n}}"


def panels(layers: Sequence[BatchLayer]) -> list[list[str]]:
    """Which layers each panel shows: raw with the ids (and any other segmentation) first, then one per other layer."""
    first = [layer.name for layer in layers if layer.display == "raw" and layer.path.endswith("raw")]
    first += [layer.name for layer in layers if layer.display == "segmentation"]
    rest = [[layer.name] for layer in layers if layer.name not in first]
    return ([first] if first else []) + rest


def grid(n: int, size: tuple[int, int]) -> tuple[int, int]:
    """Columns and rows for ``n`` panels of square content in a ``size`` (width, height) view: the most content area,
    then the fewest empty cells (e.g. 3 × 3 for 9 panels in 800 × 600, 4 × 2 for 7)."""

    def score(columns: int) -> tuple[int, int]:
        rows = math.ceil(n / columns)
        return round(n * min(size[0] / columns, size[1] / rows) ** 2), n - columns * rows

    columns = max(range(1, max(n, 1) + 1), key=score)
    return columns, math.ceil(n / columns)


def focus_layer(layers: Sequence[BatchLayer]) -> BatchLayer:
    """The layer the view is centred and zoomed on: the ids (the output region), else the first non-raw layer."""
    for layer in layers:
        if layer.display == "segmentation":
            return layer
    return next((layer for layer in layers if not layer.path.endswith("raw")), layers[0])


def build_batch_state(state, layers: Sequence[BatchLayer], data: dict, size: tuple[int, int] = (800, 600)) -> None:
    """Fill a ``neuroglancer.ViewerState`` with a snapshot's layers: a grid of y-x panels centred on the output region.

    Args:
        state: the state to fill (inside ``viewer.txn()``, or a bare ``neuroglancer.ViewerState()``).
        layers: from :func:`read_snapshot`.
        data: layer name → array, from :func:`read_snapshot`.
        size: the viewer's width and height in pixels (to zoom so that the output region fills a panel).
    """
    import neuroglancer

    global_voxel_size = layers[0].voxel_size
    state.dimensions = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(global_voxel_size))
    for layer in layers:
        if len(layer.shape) == 4:
            dimensions = neuroglancer.CoordinateSpace(
                names=["c^", "z", "y", "x"], units=["", "nm", "nm", "nm"], scales=[1, *layer.voxel_size]
            )
            voxel_offset = (0, *layer.voxel_offset)
        else:
            dimensions = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(layer.voxel_size))
            voxel_offset = layer.voxel_offset
        source = neuroglancer.LocalVolume(
            data[layer.name],
            dimensions=dimensions,
            voxel_offset=voxel_offset,
            volume_type="segmentation" if layer.display == "segmentation" else "image",
        )
        if layer.display == "segmentation":
            state.layers[layer.name] = neuroglancer.SegmentationLayer(source=source, selected_alpha=0.4)
        else:
            state.layers[layer.name] = neuroglancer.ImageLayer(source=source, shader=shader(layer))
    groups = panels(layers)
    columns, rows = grid(len(groups), size)
    viewers = [neuroglancer.LayerGroupViewer(layers=names, layout="xy") for names in groups]
    state.layout = neuroglancer.column_layout(
        [neuroglancer.row_layout(viewers[r * columns : (r + 1) * columns]) for r in range(rows)]
    )
    focus = focus_layer(layers)
    # the focus layer's middle voxel (its centre, +0.5: neuroglancer's voxel centres), in global voxels
    centre_nm = [o + (s // 2 + 0.5) * v for o, s, v in zip(focus.offset, focus.shape[-3:], focus.voxel_size)]
    state.position = [c / v for c, v in zip(centre_nm, global_voxel_size)]
    state.display_dimensions = ["x", "y", "z"]  # a y-x section in each panel (z, y, x would show z sideways)
    # the output region fills a panel; fit_scale counts the focus layer's voxels, neuroglancer the global ones
    panel = (size[0] // columns, size[1] // rows)
    state.cross_section_scale = fit_scale(focus, panel) * min(focus.voxel_size[1:]) / min(global_voxel_size[1:])
    state.show_axis_lines = False
    state.show_default_annotations = False  # the arrays' yellow bounding boxes would frame every panel


def label_panels(png: bytes, groups: Sequence[Sequence[str]], size: tuple[int, int]) -> bytes:
    """Write each panel's layer names into its top-left corner of a screenshot (the UI that names them is hidden).

    Args:
        png: the screenshot.
        groups: the layers of each panel, from :func:`panels`.
        size: the screenshot's width and height.
    """
    from PIL import Image, ImageDraw, ImageFont

    image = Image.open(io.BytesIO(png)).convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, min(16, size[1] // 40)))
    columns, rows = grid(len(groups), size)
    height = image.size[1] / rows
    for i, names in enumerate(groups):
        row, column = divmod(i, columns)
        width = image.size[0] / min(columns, len(groups) - row * columns)  # the last row's panels share its width
        x, y = column * width + 4, row * height + 3
        draw.text((x, y), " + ".join(names), font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def view_batch(
    folder: Path,
    iteration: int | None = None,
    file: Path | None = None,
    lsd_channels: Sequence[int] = DEFAULT_LSD_CHANNELS,
    options: ViewerOptions = ViewerOptions(),
) -> None:
    """Serve a viewer of a snapshot and print its URL; with ``options.screenshot_path``, write a PNG (panels
    labelled) and return.

    Args:
        folder: the network folder whose ``snapshots/`` hold the snapshot.
        iteration: the snapshot's iteration (None: the newest); not with ``file``.
        file: a snapshot file to show instead of one of the folder's.
        lsd_channels: the three LSD channels drawn as red, green and blue.
        options: where to serve, or the screenshot to take.
    """
    if file is not None and iteration is not None:
        raise ConfigError(f"give a snapshot ITERATION or --file, not both (got {iteration} and {file})")
    path = Path(file) if file is not None else find_snapshot(Path(folder), iteration)
    layers, data, info = read_snapshot(path, lsd_channels)
    groups = panels(layers)

    def fill(state, for_screenshot: bool) -> None:
        build_batch_state(state, layers, data, options.size)

    described = ", ".join(f"{layer.name} ({layer.display})" for layer in layers)
    loss = f", loss {info['loss']:.4g}" if "loss" in info else ""
    summary = f"{path} (iteration {info.get('iteration', '?')}{loss}): {described}"
    def finish(png: bytes) -> bytes:
        return label_panels(png, groups, options.size)

    serve(fill, summary, options, finish=finish)
