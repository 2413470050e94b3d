"""The precomputed reader and the ROI → zarr copy (lsd_nm.precomputed) against a real HTTP server on loopback."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from precomputed_server import StaticServer, write_precomputed

from lsd_nm.config import ConfigError
from lsd_nm.precomputed import (
    DONE_LOG,
    PrecomputedError,
    PrecomputedVolume,
    copy_to_zarr,
    normalize_url,
)

# a volume of 20 × 24 × 10 voxels (x, y, z) at 9 × 9 × 20 nm, first voxel (4, 8, 2): chunks 8 × 8 × 4, so the last
# chunk along every axis is clipped (20 = 8 + 8 + 4, 24 = 3 · 8, 10 = 4 + 4 + 2)
SIZE = (20, 24, 10)
VOXEL_OFFSET = (4, 8, 2)
CHUNK = (8, 8, 4)


def source_xyz(seed=0, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, 256, SIZE).astype(dtype)


@pytest.fixture
def serve():
    servers = []

    def start(objects, **kwargs):
        server = StaticServer(objects, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def zyx(data_xyz):
    return data_xyz.transpose(2, 1, 0)


def test_url_forms():
    assert normalize_url("gs://bucket/a/b/") == "https://storage.googleapis.com/bucket/a/b"
    assert normalize_url("precomputed://https://host/v") == "https://host/v"
    with pytest.raises(PrecomputedError) as e:
        normalize_url("s3://bucket/v")
    assert str(e.value) == "'s3://bucket/v': expected an http(s):// or gs:// URL of a precomputed volume"


def test_raw_chunks_read_in_zyx_order_with_gzip(serve):
    data = source_xyz()
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET), gzip_paths="*")
    volume = PrecomputedVolume(server.url)
    scale = volume.scale((20, 9, 9))
    assert scale.key == "9_9_20" and scale.voxel_offset == VOXEL_OFFSET and scale.chunk_size == CHUNK
    # the clipped corner chunk: x 20..24, y 24..32, z 10..12 (volume voxels), i.e. data[16:20, 16:24, 8:10]
    chunk = volume.read_chunk(scale, (20, 24, 10))
    assert chunk.shape == (1, 2, 8, 4)
    np.testing.assert_array_equal(chunk[0], zyx(data[16:20, 16:24, 8:10]))
    # an arbitrary box across chunk borders
    box = volume.read(scale, (7, 9, 3), (22, 30, 11))
    np.testing.assert_array_equal(box[0], zyx(data[3:18, 1:22, 1:9]))
    assert box.dtype == np.uint8


def test_uint16_raw_is_little_endian(serve):
    data = source_xyz(dtype=np.uint16) * 257 + 1
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET))
    volume = PrecomputedVolume(server.url)
    box = volume.read(volume.scale((20, 9, 9)), VOXEL_OFFSET, tuple(o + s for o, s in zip(VOXEL_OFFSET, SIZE)))
    np.testing.assert_array_equal(box[0], zyx(data))


def test_jpeg_chunks_decode_to_the_exact_voxels(serve):
    # 8×8 pixel blocks of one value survive JPEG at quality 100 exactly: a block is 8 x-voxels × 8 y-voxels of one z
    blocks = np.random.default_rng(3).integers(0, 256, (3, 2, 6), dtype=np.uint8)
    data = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)  # x 24, y 16, z 6
    server = serve(write_precomputed(data, (16, 8, 4), encoding="jpeg"), gzip_paths="*")
    volume = PrecomputedVolume(server.url)
    scale = volume.scale((20, 9, 9))
    assert scale.encoding == "jpeg"
    np.testing.assert_array_equal(volume.read(scale, (0, 0, 0), (24, 16, 6))[0], zyx(data))


def test_copy_to_zarr_grows_the_roi_to_the_chunk_grid(serve, tmp_path):
    data = source_xyz()
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET), gzip_paths="*")
    volume = PrecomputedVolume(server.url)
    scale = volume.scale((20, 9, 9))
    # ROI voxels z 3..7, y 10..20, x 5..13 → grown to the grid (origin = voxel_offset): z 2..10, y 8..24, x 4..20
    offset = (3 * 20, 10 * 9, 5 * 9)
    shape = (4 * 20, 10 * 9, 8 * 9)
    out = tmp_path / "raw.zarr"
    summary = copy_to_zarr(volume, scale, out, offset, shape, jobs=3)
    assert summary.roi_offset == (40, 72, 36) and summary.roi_shape == (160, 144, 144)
    assert (summary.chunks, summary.fetched, summary.resumed) == (2 * 2 * 2, 8, 0)
    array = zarr.open_array(out / "volumes/raw", mode="r")
    assert array.attrs["resolution"] == [20, 9, 9] and array.attrs["offset"] == [40, 72, 36]
    assert array.attrs["source"] == f"{server.url}/9_9_20"
    assert array.shape == (8, 16, 16) and array.chunks == (4, 8, 8) and array.dtype == np.uint8
    np.testing.assert_array_equal(array[:], zyx(data[0:16, 0:16, 0:8]))
    assert set(server.chunk_gets().values()) == {1} and len(server.chunk_gets()) == 8
    assert not (tmp_path / "raw.zarr.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == [".zattrs", ".zgroup", "volumes"]
    again = copy_to_zarr(volume, scale, out, offset, shape)
    assert again.complete_before and len(server.chunk_gets()) == 8 and sum(server.chunk_gets().values()) == 8


def test_clipped_chunks_at_the_volume_end(serve, tmp_path):
    data = source_xyz(seed=1)
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET))
    volume = PrecomputedVolume(server.url)
    scale = volume.scale((20, 9, 9))
    offset = tuple(o * s for o, s in zip(VOXEL_OFFSET[::-1], (20, 9, 9)))
    shape = tuple(n * s for n, s in zip(SIZE[::-1], (20, 9, 9)))
    summary = copy_to_zarr(volume, scale, tmp_path / "all.zarr", offset, shape)
    assert summary.chunks == 3 * 3 * 3
    array = zarr.open_array(tmp_path / "all.zarr/volumes/raw", mode="r")
    assert array.shape == SIZE[::-1] and array.attrs["offset"] == list(offset)
    np.testing.assert_array_equal(array[:], zyx(data))


def test_an_interrupted_copy_resumes_with_the_missing_chunks(serve, tmp_path):
    data = source_xyz(seed=2)
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET), gzip_paths="*")
    volume = PrecomputedVolume(server.url, retries=0)
    scale = volume.scale((20, 9, 9))
    offset = tuple(o * s for o, s in zip(VOXEL_OFFSET[::-1], (20, 9, 9)))
    shape = tuple(n * s for n, s in zip(SIZE[::-1], (20, 9, 9)))
    out = tmp_path / "raw.zarr"
    server.fail_after = 10
    with pytest.raises(PrecomputedError) as e:
        copy_to_zarr(volume, scale, out, offset, shape, jobs=1)
    assert str(e.value).endswith(": Service Unavailable [HTTP code 503]") and "\n" not in str(e.value)
    assert not out.exists()
    partial = tmp_path / "raw.zarr.partial"
    written = (partial / DONE_LOG).read_text().splitlines()
    assert len(written) == 10
    # chunk files a kill tore (not in the log; an inner and a clipped one) must be replaced
    for key in ("1.1.1", "2.2.2"):
        (partial / "volumes/raw" / key).write_bytes(b"torn")
    server.fail_after = None
    before = sum(server.chunk_gets().values())
    summary = copy_to_zarr(volume, scale, out, offset, shape, jobs=2)
    assert (summary.chunks, summary.resumed, summary.fetched) == (27, 10, 17)
    assert sum(server.chunk_gets().values()) - before == 17
    np.testing.assert_array_equal(zarr.open_array(out / "volumes/raw", mode="r")[:], zyx(data))
    assert not partial.exists()


def test_a_killed_copy_resumes(serve, tmp_path):
    """kill -9 of a copy in another process: the next run fetches only the chunks the log does not list."""
    data = source_xyz(seed=5)
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET))
    server.delay = 0.05
    offset = tuple(o * s for o, s in zip(VOXEL_OFFSET[::-1], (20, 9, 9)))
    shape = tuple(n * s for n, s in zip(SIZE[::-1], (20, 9, 9)))
    out = tmp_path / "raw.zarr"
    code = (
        "from lsd_nm.precomputed import PrecomputedVolume, copy_to_zarr\n"
        f"v = PrecomputedVolume({server.url!r})\n"
        f"copy_to_zarr(v, v.scale((20, 9, 9)), {str(out)!r}, {offset!r}, {shape!r}, jobs=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "raw.zarr.partial" / DONE_LOG
    deadline = time.monotonic() + 60
    while not (log.exists() and len(log.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, "the copy ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len([line for line in log.read_text().splitlines() if line.count("_") == 2])
    assert 5 <= done < 27 and not out.exists()
    server.delay = 0.0
    before = sum(server.chunk_gets().values())
    summary = copy_to_zarr(PrecomputedVolume(server.url), PrecomputedVolume(server.url).scale((20, 9, 9)), out, offset, shape)
    assert (summary.resumed, summary.fetched) == (done, 27 - done)
    assert sum(server.chunk_gets().values()) - before == 27 - done
    np.testing.assert_array_equal(zarr.open_array(out / "volumes/raw", mode="r")[:], zyx(data))


def test_a_partial_of_another_region_starts_over(serve, tmp_path):
    data = source_xyz(seed=4)
    server = serve(write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET))
    volume = PrecomputedVolume(server.url, retries=0)
    scale = volume.scale((20, 9, 9))
    out = tmp_path / "raw.zarr"
    server.fail_after = 1
    with pytest.raises(PrecomputedError):
        copy_to_zarr(volume, scale, out, (40, 72, 36), (160, 144, 144), jobs=1)
    server.fail_after = None
    summary = copy_to_zarr(volume, scale, out, (40, 72, 36), (80, 72, 72), jobs=1)
    assert (summary.chunks, summary.resumed, summary.fetched) == (1, 0, 1)
    np.testing.assert_array_equal(zarr.open_array(out / "volumes/raw", mode="r")[:], zyx(data[0:8, 0:8, 0:4]))


def test_an_existing_output_of_another_region_is_refused(serve, tmp_path):
    server = serve(write_precomputed(source_xyz(), CHUNK, voxel_offset=VOXEL_OFFSET))
    volume = PrecomputedVolume(server.url)
    scale = volume.scale((20, 9, 9))
    out = tmp_path / "raw.zarr"
    copy_to_zarr(volume, scale, out, (40, 72, 36), (80, 72, 72))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as e:
        copy_to_zarr(volume, scale, out, (40, 72, 36), (160, 72, 72))
    assert str(e.value) == (
        f"{out} exists and does not hold this region (volumes/raw [8, 8, 8] at [40, 72, 36] nm); "
        "remove it or choose another output"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_bad_rois_are_refused_before_any_chunk(serve, tmp_path):
    server = serve(write_precomputed(source_xyz(), CHUNK, voxel_offset=VOXEL_OFFSET))
    volume = PrecomputedVolume(server.url)
    scale = volume.scale((20, 9, 9))
    with pytest.raises(PrecomputedError) as e:
        copy_to_zarr(volume, scale, tmp_path / "a.zarr", (40, 72, 37), (80, 72, 72))
    assert str(e.value) == "roi_offset [40, 72, 37] nm is not a multiple of the voxel size [20, 9, 9] nm (z, y, x)"
    with pytest.raises(PrecomputedError) as e:
        copy_to_zarr(volume, scale, tmp_path / "a.zarr", (20, 72, 36), (80, 72, 72))
    assert str(e.value) == (
        f"ROI [20, 72, 36]+[80, 72, 72] nm is not inside the volume {server.url} ([40, 72, 36] to [240, 288, 216] nm, z, y, x)"
    )
    assert not list(tmp_path.iterdir()) and not server.chunk_gets()


def test_missing_chunks_fail_or_read_as_zeros(serve):
    objects = write_precomputed(source_xyz(), CHUNK, voxel_offset=VOXEL_OFFSET)
    del objects["9_9_20/4-12_8-16_2-6"]
    server = serve(objects)
    volume = PrecomputedVolume(server.url)
    with pytest.raises(PrecomputedError) as e:
        volume.read_chunk(volume.scale((20, 9, 9)), (4, 8, 2))
    assert str(e.value) == f"chunk {{0, 0, 0}} stored at {server.url}/9_9_20/4-12_8-16_2-6 is missing"
    filled = PrecomputedVolume(server.url, fill_missing=True)
    assert not filled.read_chunk(filled.scale((20, 9, 9)), (4, 8, 2)).any()


def test_a_raw_chunk_of_the_wrong_size_is_an_error(serve):
    objects = write_precomputed(source_xyz(), CHUNK, voxel_offset=VOXEL_OFFSET)
    objects["9_9_20/4-12_8-16_2-6"] = objects["9_9_20/4-12_8-16_2-6"][:-1]
    server = serve(objects)
    volume = PrecomputedVolume(server.url)
    with pytest.raises(PrecomputedError) as e:
        volume.read_chunk(volume.scale((20, 9, 9)), (4, 8, 2))
    assert str(e.value) == f"Error reading {server.url}/9_9_20/4-12_8-16_2-6: Expected chunk length to be 256, but received 255 bytes"


def _info(**scale) -> bytes:
    base = {"key": "a", "size": [1, 1, 1], "resolution": [1, 1, 1], "chunk_sizes": [[1, 1, 1]], "encoding": "raw"}
    return json.dumps({"type": "image", "num_channels": 1, "data_type": "uint8", "scales": [{**base, **scale}]}).encode()


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", "Expected object, but received: [1,2]"),
        (json.dumps({"type": "image", "num_channels": 1, "data_type": "uint8"}).encode(), 'Error parsing object member "scales": Expected array, but member is missing'),
        (_info(encoding="png2"), 'Error parsing object member "scales": Error parsing value at position 0: Error parsing object member "encoding": Expected one of "raw", "png", "jpeg", "compressed_segmentation", but received: "png2"'),
        (_info(size=[1, 1]), 'Error parsing object member "scales": Error parsing value at position 0: Error parsing object member "size": Array has length 2 but should have length 3'),
        (
            json.dumps({"type": "image", "num_channels": 1, "data_type": "float64", "scales": []}).encode(),
            'Error parsing object member "data_type": float64 data type is not one of the supported data types: uint8, uint16, uint32, int8, int16, int32, uint64, float32',
        ),
    ],
)
def test_bad_info_files_are_one_line_errors(serve, info, message):
    server = serve({"info": info})
    with pytest.raises(PrecomputedError) as e:
        PrecomputedVolume(server.url)
    assert str(e.value) == f"Error reading {server.url}/info: {message}"


def test_sharded_volumes_read_too(serve, tmp_path):
    """The reason for a maintained reader: the format has more than raw and jpeg chunks (sharded files here)."""
    data = source_xyz(seed=6, dtype=np.uint16)
    sharding = {
        "@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0, "hash": "identity", "minishard_bits": 1,
        "shard_bits": 1, "minishard_index_encoding": "gzip", "data_encoding": "gzip",
    }  # fmt: skip
    objects = write_precomputed(data, CHUNK, voxel_offset=VOXEL_OFFSET, sharding=sharding)
    assert sorted(k for k in objects if k.startswith("9_9_20/")) == ["9_9_20/0.shard", "9_9_20/1.shard"]
    server = serve(objects)
    volume = PrecomputedVolume(server.url)
    offset = tuple(o * s for o, s in zip(VOXEL_OFFSET[::-1], (20, 9, 9)))
    shape = tuple(n * s for n, s in zip(SIZE[::-1], (20, 9, 9)))
    copy_to_zarr(volume, volume.scale((20, 9, 9)), tmp_path / "raw.zarr", offset, shape)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "raw.zarr/volumes/raw", mode="r")[:], zyx(data))


def test_a_missing_volume_and_an_unreachable_server(serve):
    server = serve({})
    with pytest.raises(PrecomputedError) as e:
        PrecomputedVolume(server.url)
    assert str(e.value) == f"{server.url}/info: not found (HTTP 404); is {server.url} a precomputed volume?"
    url = server.url
    server.close()
    with pytest.raises(PrecomputedError) as e:
        PrecomputedVolume(url, retries=0)
    assert str(e.value) == f"cannot reach {url}/info (connection failed; check the URL and the network)"


def test_an_unknown_voxel_size_names_the_scales(serve):
    server = serve(write_precomputed(source_xyz(), CHUNK))
    volume = PrecomputedVolume(server.url)
    with pytest.raises(PrecomputedError) as e:
        volume.scale((8, 8, 8))
    assert str(e.value) == f"{server.url}: no scale with voxel size [8, 8, 8] (z, y, x nm); it has [40, 18, 18], [20, 9, 9]"
