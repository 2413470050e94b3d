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

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .config import ConfigError
from .view import LayerSource, _spatial_attrs, fit_scale, serve

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
    """Grey values are multiplied by this (gradients: 1 / their largest magnitude)."""


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


def _role(path: str, dtype: np.dtype, ndim: int) -> int:
    """Sort key: raw, ids, autocontext input, LSDs, affinities, gradients, masks, anything else."""
    name = path.lower()
    if name.endswith("raw"):
        return 0
    if "mask" in name:
        return 6
    if ndim == 3 and np.issubdtype(dtype, np.integer) and dtype.itemsize >= 4:
        return 1
    if "gradient" in name:
        return 5
    if "pretrained" in name:
        return 2
    if "lsd" in name or "embedding" in name:
        return 3
    if "aff" in name:
        return 4
    return 7


def _is_lsd(path: str) -> bool:
    return "lsd" in path.lower() or "embedding" in path.lower()


def _as_float(data: np.ndarray) -> np.ndarray:
    """Image data as float32 in [0, 1]: floats as stored, {0, 1} integers (masks, affinities) as they are, other
    integers (uint8 LSDs or raw) divided by their type's maximum."""
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    data = data.astype(np.float32) / (np.iinfo(data.dtype).max if data.size and data.max() > 1 else 1)
    return data


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
        order = sorted(datasets, key=lambda name: (_role(name, datasets[name].dtype, datasets[name].ndim), name))
        layers, data, names = [], {}, set()
        for name in order:
            dataset = datasets[name]
            voxel_size, offset = _spatial_attrs(dict(dataset.attrs), default_voxel_size, f"{path}:{name}")
            role = _role(name, dataset.dtype, dataset.ndim)
            array = dataset[:]
            layer_name = name.removeprefix("volumes/").rsplit("/", 1)[-1]
            layer_name = name if layer_name in names else layer_name
            names.add(layer_name)
            n_channels = array.shape[0] if array.ndim == 4 else 0
            channels: tuple[int, ...] = ()
            value_scale = 1.0
            if role == 1:
                display: Display = "segmentation"
                array = array.astype(np.uint64, copy=False)
            else:
                array = _as_float(array)
                if role == 0 or (array.ndim == 3 and role not in (5, 6)):
                    display = "raw"
                elif role in (5, 6) or n_channels < 3:
                    display = "grayscale"
                    channels = tuple(range(n_channels))
                    if role == 5:  # gradients: magnitude over the channels, the largest one white
                        magnitude = np.sqrt((array**2).sum(axis=0)) if array.ndim == 4 else np.abs(array)
                        largest = float(magnitude.max()) if magnitude.size else 0.0
                        value_scale = 1.0 / largest if largest > 0 else 1.0
                else:
                    display = "rgb"
                    channels = (0, 1, 2)
                    if _is_lsd(name):
                        if max(lsd_channels) >= n_channels:
                            raise ConfigError(
                                f"--lsd-channels {','.join(map(str, lsd_channels))}: {path}:{name} has {n_channels} "
                                f"channels (expected channels 0–{n_channels - 1})"
                            )
                        channels = tuple(lsd_channels)
            if array.ndim == 4:
                kind = "mask" if role == 6 else "channels"
            else:
                kind = {1: "segmentation", 6: "mask"}.get(role, "image")
            layers.append(
                BatchLayer(layer_name, name, kind, tuple(array.shape), voxel_size, offset, display, channels, value_scale)
            )
            data[layer_name] = array
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
    if layer.display == "rgb":
        r, g, b = (f"toNormalized(getDataValue({c}))" for c in layer.channels)
        return f"void main() {{\n  // channels {', '.join(map(str, layer.channels))} as red, green, blue\n  emitRGB(vec3({r}, {g}, {b}));\n}}"
    if not layer.channels:
        terms = "abs(toNormalized(getDataValue()))"
    elif layer.kind == "mask":  # the fraction of channels masked in
        terms = " + ".join(f"toNormalized(getDataValue({c}))" for c in layer.channels) + f") / {float(len(layer.channels))}"
        terms = "(" + terms
    else:  # the magnitude over the channels
        terms = "sqrt(" + " + ".join(f"pow(toNormalized(getDataValue({c})), 2.0)" for c in layer.channels) + ")"
    return f"void main() {{\n  emitGrayscale({terms} * {layer.value_scale:.9g});\n}}"


def panels(layers: Sequence[BatchLayer]) -> list[list[str]]:
    """Which layers each panel shows: raw with the ids (and any other segmentation) first, then one per other layer."""
    first = [layer.name for layer in layers if layer.display == "raw" and layer.path.endswith("raw")]
    first += [layer.name for layer in layers if layer.display == "segmentation"]
    rest = [[layer.name] for layer in layers if layer.name not in first]
    return ([first] if first else []) + rest


def grid(n: int, size: tuple[int, int]) -> tuple[int, int]:
    """Columns and rows for ``n`` square-ish panels in a ``size`` (width, height) picture."""
    columns = max(1, min(n, math.ceil(math.sqrt(n * size[0] / size[1]))))
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
    if len(viewers) < columns * rows:  # an empty panel fills the last row, so that all panels have the same size
        viewers.append(neuroglancer.LayerGroupViewer(layers=[], layout="xy", flex=columns * rows - len(viewers)))
    state.layout = neuroglancer.column_layout(
        [neuroglancer.row_layout(viewers[r * columns : (r + 1) * columns]) for r in range(rows)]
    )
    focus = focus_layer(layers)
    # the focus layer's middle voxel (its centre, +0.5: neuroglancer's voxel centres), in global voxels
    centre_nm = [o + (s // 2 + 0.5) * v for o, s, v in zip(focus.offset, focus.shape[-3:], focus.voxel_size)]
    state.position = [c / v for c, v in zip(centre_nm, global_voxel_size)]
    state.display_dimensions = ["x", "y", "z"]  # a y-x section in each panel (z, y, x would show z sideways)
    state.cross_section_scale = fit_scale(focus, (size[0] // columns, size[1] // rows)) * (
        min(focus.voxel_size[1:]) / min(global_voxel_size[1:])
    )
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
    width, height = image.size[0] / columns, image.size[1] / rows
    for i, names in enumerate(groups):
        x, y = (i % columns) * width + 4, (i // columns) * height + 3
        draw.text((x, y), " + ".join(names), font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def view_batch(
    folder: Path,
    iteration: int | None = None,
    file: Path | None = None,
    lsd_channels: Sequence[int] = DEFAULT_LSD_CHANNELS,
    bind_address: str = "127.0.0.1",
    port: int = 0,
    screenshot_path: Path | None = None,
    size: tuple[int, int] = (800, 600),
    chromium: str | None = None,
    timeout: float = 120.0,
) -> None:
    """Serve a viewer of a snapshot and print its URL; with ``screenshot_path``, write a PNG and return.

    Args:
        folder: the network folder whose ``snapshots/`` hold the snapshot.
        iteration: the snapshot's iteration (None: the newest); not with ``file``.
        file: a snapshot file to show instead of one of the folder's.
        lsd_channels: the three LSD channels drawn as red, green and blue.
        bind_address: the address the viewer's server listens on (``0.0.0.0``: every interface).
        port: the server's port (0: a free one).
        screenshot_path: render the view in headless Chromium, write it here as PNG (panels labelled) and stop.
        size: the screenshot's width and height in pixels.
        chromium: the Chromium executable for the screenshot (default: found on PATH).
        timeout: seconds to wait for the screenshot.
    """
    if file is not None and iteration is not None:
        raise ConfigError(f"give a snapshot ITERATION or --file, not both (got {iteration} and {file})")
    path = Path(file) if file is not None else find_snapshot(Path(folder), iteration)
    layers, data, info = read_snapshot(path, lsd_channels)
    groups = panels(layers)

    def fill(state, for_screenshot: bool) -> None:
        build_batch_state(state, layers, data, size)

    described = ", ".join(f"{layer.name} ({layer.display})" for layer in layers)
    loss = f", loss {info['loss']:.4g}" if "loss" in info else ""
    summary = f"{path} (iteration {info.get('iteration', '?')}{loss}): {described}"
    finish = lambda png: label_panels(png, groups, size)  # noqa: E731
    serve(fill, summary, bind_address, port, screenshot_path, size, chromium, timeout, finish=finish)
