"""01_data/view_data.py: layers with voxel size and offset in nm, the packaged client, a real headless screenshot."""

import io
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zarr
from s3_server import REPO, run_script, write_volume

from lsd_nm.config import ConfigError
from lsd_nm.data import COMPRESSOR, LABELS_MASK, NEURON_IDS, RAW
from lsd_nm.view import LayerSource, build_state, find_layers, resolve_container

OFFSET = (200, 90, 90)  # nm: 10 voxels of (20, 9, 9) along each axis


def add_array(container: Path, path: str, data: np.ndarray, offset=OFFSET) -> None:
    array = zarr.open_group(container, mode="a").create_array(path, data=data, chunks=data.shape, compressors=COMPRESSOR)
    array.attrs.update({"resolution": [20, 9, 9], "offset": list(offset)})


@pytest.fixture
def container(tmp_path) -> Path:
    """A volume with offset, its mask, affinities (channels first) and fragments, as a prediction run leaves it."""
    path = tmp_path / "funke/synthetic/training/train_0.zarr"
    raw, labels = write_volume(path, offset=OFFSET)
    add_array(path, LABELS_MASK, (labels > 0).astype(np.uint8))
    add_array(path, "volumes/affs", np.stack([raw, raw // 2, 255 - raw]))
    add_array(path, "volumes/fragments", labels.astype(np.uint64) + 7)
    # an array under a group without metadata (as funlib's prepare_ds leaves it), and an unfinished mask to ignore
    lsds = zarr.create_array(store=str(path / "predictions/lsds"), data=np.zeros((10, 8, 48, 48), np.uint8), zarr_format=2)
    lsds.attrs.update({"resolution": [20, 9, 9], "offset": list(OFFSET)})
    add_array(path, LABELS_MASK + ".partial", np.zeros((8, 48, 48), np.uint8))
    return path


def test_layers_with_voxel_size_and_offset_in_voxels(container):
    spatial = (8, 48, 48)
    assert find_layers(container) == [
        LayerSource("raw", RAW, "image", spatial, (20, 9, 9), OFFSET),
        LayerSource("neuron_ids", NEURON_IDS, "segmentation", spatial, (20, 9, 9), OFFSET),
        LayerSource("labels_mask", LABELS_MASK, "mask", spatial, (20, 9, 9), OFFSET),
        LayerSource("lsds", "predictions/lsds", "channels", (10, *spatial), (20, 9, 9), OFFSET),
        LayerSource("affs", "volumes/affs", "channels", (3, *spatial), (20, 9, 9), OFFSET),
        LayerSource("fragments", "volumes/fragments", "segmentation", spatial, (20, 9, 9), OFFSET),
    ]
    assert find_layers(container)[0].voxel_offset == (10, 10, 10)  # nm / voxel size, not nm


def test_viewer_state(container):
    import neuroglancer

    state = neuroglancer.ViewerState()
    build_state(state, container, find_layers(container))
    assert [layer.name for layer in state.layers] == ["raw", "neuron_ids", "labels_mask", "lsds", "affs", "fragments"]
    assert [layer.type for layer in state.layers] == ["image", "segmentation", "image", "image", "image", "segmentation"]
    assert list(state.dimensions.names) == ["z", "y", "x"]
    assert list(state.dimensions.scales) == pytest.approx([20e-9, 9e-9, 9e-9], rel=1e-12)  # stored in metres
    assert list(state.dimensions.units) == ["m", "m", "m"]
    raw = state.layers["raw"].source[0].url
    assert list(raw.voxel_offset) == [10, 10, 10]
    assert list(raw.dimensions.scales) == pytest.approx([20e-9, 9e-9, 9e-9], rel=1e-12)
    affs = state.layers["affs"].source[0].url
    assert list(affs.voxel_offset) == [0, 10, 10, 10] and list(affs.dimensions.names) == ["c^", "z", "y", "x"]
    assert state.layers["neuron_ids"].source[0].url.volume_type == "segmentation"
    assert list(state.position) == [14, 34, 34]  # the volume's centre in voxels, offset included
    assert not neuroglancer.server.is_server_running()


def test_an_offset_that_is_not_whole_voxels_is_an_error(tmp_path):
    path = tmp_path / "v.zarr"
    write_volume(path, offset=(205, 90, 90))
    with pytest.raises(ConfigError) as e:
        find_layers(path)
    assert str(e.value) == f"{path}/{RAW}: offset [205, 90, 90] nm is not a multiple of the voxel size [20, 9, 9] nm"


def test_which_container(container, tmp_path):
    assert resolve_container(container) == container
    assert resolve_container(container.parent) == container  # `make view` without VOLUMES passes training/
    with pytest.raises(ConfigError) as e:
        resolve_container(tmp_path / "nothing.zarr")
    assert str(e.value) == f"{tmp_path / 'nothing.zarr'}: no such container (run `make synthetic` or `make fetch-data` first)"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as e:
        resolve_container(tmp_path / "empty")
    assert str(e.value) == f"{tmp_path / 'empty'}: not a zarr container (expected e.g. 01_data/funke/synthetic/training/train_0.zarr)"


def read_lines(proc: subprocess.Popen, n: int, timeout: float = 60) -> list[str]:
    """The first ``n`` lines of the process' stdout (read from the pipe directly: no buffer hides a line from select)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    data, deadline = b"", time.monotonic() + timeout
    while data.count(b"\n") < n:
        assert time.monotonic() < deadline, f"no {n} lines of output within {timeout} s: {data!r}"
        if selector.select(timeout=1):
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the viewer exited: {proc.stderr.read()!r}"
            data += chunk
    return data.decode().splitlines()[:n]


def test_serves_the_packaged_client_until_interrupted(container):
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "01_data/view_data.py"), str(container), "--bind-address", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )
    try:
        summary, url = read_lines(proc, 2)
        assert summary == (
            f"{container}: raw (image), neuron_ids (segmentation), labels_mask (mask), lsds (channels), "
            "affs (channels), fragments (segmentation)"
        )
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v/[0-9a-f]+/", url)
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        script = re.search(r'src="([^"]*main[^"]*\.js)"', page)
        assert script, page
        response = urllib.request.urlopen(urllib.parse.urljoin(url, script[1]), timeout=10)
        assert response.status == 200 and "javascript" in response.headers["Content-Type"]
        assert len(response.read()) > 100_000  # the web client itself, from the installed package
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_screenshot_in_headless_chromium(container, tmp_path, chromium):
    from PIL import Image

    out = tmp_path / "shots" / "view.png"
    result = run_script("01_data/view_data.py", str(container), "--screenshot", str(out), "--size", "400", "300")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(out)
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "PNG" and image.size == (400, 300)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    # the volume fills the middle of the picture, in colour (segments, affinities): not the grey background
    middle = pixels[100:200, 150:250]
    chroma = middle.max(axis=2) - middle.min(axis=2)
    assert (chroma > 30).mean() > 0.5
    assert not list(out.parent.glob("*.partial"))


def test_screenshot_without_chromium_is_a_one_line_error(container, tmp_path):
    result = run_script("01_data/view_data.py", str(container), "--screenshot", str(tmp_path / "x.png"), env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr == (
        "error: --screenshot needs Chromium, and none is on PATH "
        "(install Debian's `chromium` package, or pass --chromium PATH)\n"
    )
    assert not (tmp_path / "x.png").exists()
