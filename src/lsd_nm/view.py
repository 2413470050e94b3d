"""A neuroglancer viewer of one volume: raw, neuron ids, labels mask, and every prediction found in the container.

Each array is shown with its voxel size (attr ``resolution``, nm) and its offset (attr ``offset``, nm), which is
converted to voxels for neuroglancer — the original passed the nm value as a voxel offset, only right for offset 0.
The web client is served by the installed neuroglancer package: viewing needs no internet. ``--screenshot`` renders
the view in headless Chromium and writes a PNG, for machines without a display.

Run: python 01_data/view_data.py 01_data/funke/synthetic/training/train_0.zarr [--bind-address 0.0.0.0] [--port N]
     [--screenshot out.png [--size 800 600]]          (or: make view DATA=…)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import REPO_ROOT
from .config import ConfigError
from .data import LABELS_MASK, NEURON_IDS, RAW, atomic_path

LayerKind = Literal["image", "segmentation", "mask", "channels"]
IN_MEMORY_BYTES = 1 << 30
"""Arrays up to this size are read into memory (fast, and segment meshes work); larger ones are read lazily."""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    # the page is the local viewer only; Chromium's sandbox cannot start as root or in many containers
    "--no-sandbox",
    "--disable-gpu",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    # keeps headless Chromium running on the page (without it, it exits before neuroglancer has rendered)
    "--remote-debugging-port=0",
)
MASK_SHADER = """void main() {
  // masked-out voxels (0) in translucent magenta, the rest transparent
  emitRGBA(vec4(1.0, 0.0, 1.0, toNormalized(getDataValue()) > 0.0 ? 0.0 : 0.5));
}"""
CHANNELS_SHADER = """void main() {
  emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)), toNormalized(getDataValue(2))));
}"""
GREY_SHADER = """void main() {
  emitGrayscale(toNormalized(getDataValue(0)));
}"""


@dataclass(frozen=True)
class LayerSource:
    """One array of a container and how it is shown."""

    name: str
    """Layer name: the dataset path without its leading ``volumes/``."""
    path: str
    """Dataset path inside the container."""
    kind: LayerKind
    shape: tuple[int, ...]
    """Shape, channels first for ``channels`` layers."""
    voxel_size: tuple[int, int, int]
    """nm (z, y, x)."""
    offset: tuple[int, int, int]
    """nm (z, y, x), as stored."""

    @property
    def voxel_offset(self) -> tuple[int, int, int]:
        """The offset in voxels: what neuroglancer expects."""
        return tuple(o // v for o, v in zip(self.offset, self.voxel_size))


def is_container(path: Path) -> bool:
    """Whether ``path`` is a zarr group (format 2 or 3)."""
    return (path / ".zgroup").is_file() or (path / "zarr.json").is_file()


def resolve_container(path: Path) -> Path:
    """The container to show: ``path`` itself, or the first ``*.zarr`` container in a folder such as ``training/``.

    A relative path that does not exist from the working directory is tried from the repository's root.
    """
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.exists():
        raise ConfigError(f"{path}: no such container (run `make synthetic` or `make fetch-data` first)")
    if is_container(path):
        return path
    inside = sorted(p for p in path.glob("*.zarr") if is_container(p)) if path.is_dir() else []
    if inside:
        return inside[0]
    raise ConfigError(f"{path}: not a zarr container (expected e.g. 01_data/funke/synthetic/training/train_0.zarr)")


def _spatial_attrs(attrs: dict, default_voxel_size: tuple[int, int, int] | None, where: str) -> tuple[tuple, tuple]:
    voxel_size = attrs.get("resolution", default_voxel_size)
    if voxel_size is None:
        raise ConfigError(f"{where}: no 'resolution' attr (expected the voxel size in nm, z y x)")
    offset = attrs.get("offset", (0, 0, 0))
    voxel_size = tuple(int(v) for v in voxel_size)
    offset = tuple(int(v) for v in offset)
    if len(voxel_size) != 3 or len(offset) != 3:
        raise ConfigError(f"{where}: 'resolution' and 'offset' must have 3 values (z y x), got {list(voxel_size)} and {list(offset)}")
    if any(o % v for o, v in zip(offset, voxel_size)):
        raise ConfigError(f"{where}: offset {list(offset)} nm is not a multiple of the voxel size {list(voxel_size)} nm")
    return voxel_size, offset


def array_paths(container: Path) -> list[str]:
    """Paths of every array in a container, found on disk (so arrays under groups without metadata count too).

    Unfinished outputs (``*.partial``, ``*.old``) are left out.
    """
    container = Path(container)
    found = []
    for folder, subfolders, files in os.walk(container):
        here = Path(folder)
        is_array = ".zarray" in files
        if not is_array and "zarr.json" in files:
            try:
                is_array = json.loads((here / "zarr.json").read_text()).get("node_type") == "array"
            except (OSError, ValueError):
                is_array = False
        if is_array:
            found.append(here.relative_to(container).as_posix())
            subfolders.clear()  # chunks, not arrays
        else:
            subfolders[:] = [d for d in subfolders if not d.endswith((".partial", ".old"))]
    return sorted(found)


def find_layers(container: Path) -> list[LayerSource]:
    """Every array of the container as a layer: raw, neuron ids and mask first, then the rest in path order.

    Integer 3D arrays other than raw and the mask are segmentations (neuron ids, fragments, segments); 4D arrays are
    channels-first predictions (affinities, LSDs), shown as RGB of their first three channels.

    Args:
        container: a zarr container with attrs ``resolution`` and ``offset`` (nm) on its arrays.
    """
    import zarr

    container = Path(container)
    arrays = {}
    for path in array_paths(container):
        try:
            arrays[path] = zarr.open_array(container / path, mode="r")
        except (OSError, ValueError, zarr.errors.BaseZarrError) as e:
            raise ConfigError(f"{container}/{path}: cannot open the array ({type(e).__name__}: {e})") from None
    if not arrays:
        raise ConfigError(f"{container}: no arrays in the container (an interrupted fetch? run it again)")
    default_voxel_size = None
    if RAW in arrays:
        default_voxel_size = tuple(arrays[RAW].attrs.asdict().get("resolution", ())) or None
    known = [RAW, NEURON_IDS, LABELS_MASK]
    order = [p for p in known if p in arrays] + [p for p in arrays if p not in known]
    layers = []
    names: set[str] = set()
    for path in order:
        array = arrays[path]
        if array.ndim not in (3, 4):
            continue
        voxel_size, offset = _spatial_attrs(array.attrs.asdict(), default_voxel_size, f"{container}/{path}")
        if path == LABELS_MASK:
            kind: LayerKind = "mask"
        elif array.ndim == 4:
            kind = "channels"
        elif path != RAW and np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize >= 4:
            kind = "segmentation"
        else:
            kind = "image"
        name = path.removeprefix("volumes/").rsplit("/", 1)[-1]
        if name in names:
            name = path
        names.add(name)
        layers.append(LayerSource(name, path, kind, tuple(array.shape), voxel_size, offset))
    return layers


def _data(container: Path, layer: LayerSource):
    import zarr

    array = zarr.open_array(container / layer.path, mode="r")
    return array[:] if array.nbytes <= IN_MEMORY_BYTES else array


def build_state(state, container: Path, layers: Sequence[LayerSource], layout: str = "4panel") -> None:
    """Fill a ``neuroglancer.ViewerState`` with the layers, centred on the first one.

    Args:
        state: the state to fill (inside ``viewer.txn()``, or a bare ``neuroglancer.ViewerState()``).
        container: the container the layers come from.
        layers: from :func:`find_layers`.
        layout: neuroglancer's layout: ``xy`` for a single section, ``4panel`` for sections and 3D.
    """
    import neuroglancer

    first = layers[0]
    state.dimensions = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(first.voxel_size))
    for layer in layers:
        spatial = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(layer.voxel_size))
        if layer.kind == "channels":
            dimensions = neuroglancer.CoordinateSpace(
                names=["c^", "z", "y", "x"], units=["", "nm", "nm", "nm"], scales=[1, *layer.voxel_size]
            )
            source = neuroglancer.LocalVolume(_data(container, layer), dimensions=dimensions, voxel_offset=(0, *layer.voxel_offset))
            shader = CHANNELS_SHADER if layer.shape[0] >= 3 else GREY_SHADER
            state.layers[layer.name] = neuroglancer.ImageLayer(source=source, shader=shader)
            continue
        source = neuroglancer.LocalVolume(
            _data(container, layer),
            dimensions=spatial,
            voxel_offset=layer.voxel_offset,
            volume_type="segmentation" if layer.kind == "segmentation" else "image",
        )
        if layer.kind == "segmentation":
            state.layers[layer.name] = neuroglancer.SegmentationLayer(source=source, selected_alpha=0.35)
        elif layer.kind == "mask":
            state.layers[layer.name] = neuroglancer.ImageLayer(source=source, shader=MASK_SHADER)
        else:
            state.layers[layer.name] = neuroglancer.ImageLayer(source=source)
    spatial_shape = first.shape[-3:]
    # the centre voxel of the first layer, in the global (first layer's) voxel coordinates
    state.position = [o + s / 2 for o, s in zip(first.voxel_offset, spatial_shape)]
    state.display_dimensions = ["x", "y", "z"]  # a true y-x section in the xy panel (z, y, x would show z sideways)
    state.layout = layout
    state.show_axis_lines = False


def fit_scale(layer: LayerSource, size: tuple[int, int]) -> float:
    """The cross-section scale (global voxels per screen pixel) that fits the layer's y-x extent into ``size``."""
    extent_y, extent_x = (s * v for s, v in zip(layer.shape[-2:], layer.voxel_size[1:]))
    nm_per_pixel = max(extent_x / size[0], extent_y / size[1]) * 1.1
    return nm_per_pixel / min(layer.voxel_size[1:])


def find_chromium(chromium: str | None = None) -> str:
    """The Chromium executable: ``chromium`` if given, else the first of :data:`CHROMIUM_NAMES` on ``PATH``."""
    if chromium:
        if shutil.which(chromium) is None:
            raise ConfigError(f"--chromium {chromium}: not an executable")
        return chromium
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "--screenshot needs Chromium, and none is on PATH (install Debian's `chromium` package, or pass --chromium PATH)"
    )


def screenshot(viewer, size: tuple[int, int], chromium: str, timeout: float = 120.0) -> bytes:
    """Render the viewer's current view in headless Chromium; returns PNG bytes.

    Args:
        viewer: a running ``neuroglancer.Viewer``.
        size: width and height of the picture in pixels.
        chromium: the Chromium executable.
        timeout: seconds to wait for the rendered picture.
    """
    with tempfile.TemporaryDirectory(prefix="lsd_nm_chromium_") as profile:
        log_path = Path(profile) / "chromium.log"
        with open(log_path, "wb") as log:
            browser = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/user-data", viewer.get_viewer_url()],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its own process group: its helpers are stopped with it
            )
        try:
            return _wait_for_screenshot(viewer, size, browser, log_path, timeout)
        finally:
            _stop(browser)


def _wait_for_screenshot(viewer, size, browser: subprocess.Popen, log_path: Path, timeout: float) -> bytes:
    with viewer.config_state.txn() as s:
        s.show_ui_controls = False
        s.show_panel_borders = False
        s.viewer_size = list(size)
    deadline = time.monotonic() + timeout
    while True:
        done = threading.Event()
        result = []
        viewer.async_screenshot(lambda s: (result.append(s), done.set()))
        while not done.wait(0.2):
            if browser.poll() is not None:
                lines = log_path.read_text(errors="replace").strip().splitlines()
                detail = f": {lines[-1]}" if lines else ""
                raise ConfigError(f"Chromium exited with code {browser.returncode} before rendering{detail}")
            if time.monotonic() > deadline:
                raise ConfigError(f"no picture from headless Chromium within {timeout:.0f} s")
        shot = result[0].screenshot
        if (shot.width, shot.height) == tuple(size):  # the first picture may still have the window's size
            return shot.image


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and its children."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def write_png(path: Path, data: bytes) -> Path:
    """Write PNG bytes atomically (a ``.partial`` file renamed when complete)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ConfigError("the screenshot is not a PNG")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


@dataclass(frozen=True)
class ViewerOptions:
    """How a viewer is served, or rendered to a PNG (the same options for volumes and training snapshots)."""

    bind_address: str = "127.0.0.1"
    """The address the viewer's server listens on (``0.0.0.0``: every interface)."""
    port: int = 0
    """The server's port (0: a free one)."""
    screenshot_path: Path | None = None
    """Render the view in headless Chromium, write it here as PNG and stop (None: serve until Ctrl-C)."""
    size: tuple[int, int] = (800, 600)
    """The screenshot's width and height in pixels."""
    chromium: str | None = None
    """The Chromium executable for the screenshot (default: found on PATH)."""
    timeout: float = 120.0
    """Seconds to wait for the screenshot."""


def serve(
    fill: Callable[[object, bool], None],
    summary: str,
    options: ViewerOptions = ViewerOptions(),
    finish: Callable[[bytes], bytes] | None = None,
) -> None:
    """Serve a neuroglancer viewer and print its URL until Ctrl-C; with ``options.screenshot_path``, write a PNG and
    return.

    Args:
        fill: ``fill(state, for_screenshot)`` fills the ``neuroglancer.ViewerState`` (inside a transaction).
        summary: a line printed before the URL (what is shown).
        options: where to serve, or the screenshot to take.
        finish: applied to the screenshot's PNG bytes before they are written (e.g. to label panels).
    """
    import neuroglancer

    shot = options.screenshot_path
    browser = find_chromium(options.chromium) if shot is not None else None
    neuroglancer.set_server_bind_address(options.bind_address, options.port)
    viewer = neuroglancer.Viewer()
    with viewer.txn() as s:
        fill(s, shot is not None)
    print(summary)
    print(viewer.get_viewer_url(), flush=True)
    try:
        if shot is not None:
            png = screenshot(viewer, options.size, browser, options.timeout)
            print(write_png(shot, finish(png) if finish is not None else png))
            return
        print("serving the viewer; press Ctrl-C to stop", file=sys.stderr, flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        neuroglancer.stop()


def view(data: Path, options: ViewerOptions = ViewerOptions()) -> None:
    """Serve a viewer of one container and print its URL; with ``options.screenshot_path``, write a PNG and return.

    Args:
        data: a container, or a folder of containers (the first is shown).
        options: where to serve, or the screenshot to take.
    """
    container = resolve_container(Path(data))
    layers = find_layers(container)

    def fill(state, for_screenshot: bool) -> None:
        build_state(state, container, layers, layout="xy" if for_screenshot else "4panel")
        if for_screenshot:
            state.cross_section_scale = fit_scale(layers[0], options.size)

    summary = f"{container}: {', '.join(f'{layer.name} ({layer.kind})' for layer in layers)}"
    serve(fill, summary, options)
