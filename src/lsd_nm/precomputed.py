"""Neuroglancer precomputed volumes read over HTTP(S), anonymously: the zebrafinch test raw and similar.

The format (neuroglancer ``src/datasource/precomputed/volume.md``): a folder with an ``info`` JSON — ``data_type``,
``num_channels`` and a list of ``scales``, each with a ``key`` (sub-folder), ``size``, ``voxel_offset``,
``resolution`` (nm) and ``chunk_sizes``, all in **x, y, z** order, and an ``encoding`` — plus one object per chunk,
``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` (voxel ranges, clipped at the volume's upper bounds). Voxel ``v`` lies at
``v · resolution`` nm, so ``voxel_offset`` is part of the world position.

Supported encodings: ``raw`` (little-endian values, x fastest, then y, z, channel) and ``jpeg`` (uint8, 1 or 3
channels; the image's rows concatenated are the chunk's voxels in the same x-fastest order). Chunks sent with
``Content-Encoding: gzip`` (as Google Cloud Storage does) are decompressed. Sharded volumes are not supported.

Arrays returned here are **z, y, x** (channels first when ``num_channels > 1``), the order of our zarrs.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from .config import ConfigError, format_validation_error
from .data import COMPRESSOR

SUPPORTED_ENCODINGS = ("raw", "jpeg")
DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32")


class PrecomputedError(ConfigError):
    """A problem reading a precomputed volume (unreachable, missing object, bad info or chunk); one line."""


class _InfoScale(BaseModel):
    # the info format allows keys we do not use (sharding, compressed_segmentation_block_size, jpeg_quality, …)
    model_config = ConfigDict(extra="ignore")

    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    voxel_offset: tuple[int, int, int] = (0, 0, 0)
    chunk_sizes: list[tuple[int, int, int]]
    encoding: str
    sharding: dict | None = None


class _Info(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = "image"
    data_type: str
    num_channels: int = 1
    scales: list[_InfoScale]


@dataclass(frozen=True)
class Scale:
    """One resolution level of a precomputed volume (all tuples x, y, z, as in the ``info`` file)."""

    key: str
    """Sub-folder of its chunks."""
    size: tuple[int, int, int]
    """Extent in voxels."""
    voxel_offset: tuple[int, int, int]
    """First voxel."""
    resolution: tuple[float, float, float]
    """Voxel size in nm."""
    chunk_size: tuple[int, int, int]
    """Chunk extent in voxels (the grid starts at ``voxel_offset``)."""
    encoding: str

    @property
    def end(self) -> tuple[int, int, int]:
        """One past the last voxel."""
        return tuple(o + s for o, s in zip(self.voxel_offset, self.size))  # type: ignore[return-value]

    @property
    def voxel_size_zyx(self) -> tuple[float, float, float]:
        """The resolution in our order (z, y, x)."""
        return self.resolution[::-1]

    def chunk_begins(self, begin: tuple[int, ...], end: tuple[int, ...]) -> Iterator[tuple[int, int, int]]:
        """First voxels (x, y, z) of the chunks that intersect the box ``[begin, end)``, z slowest, x fastest."""
        ranges = []
        for b, e, o, c, stop in zip(begin, end, self.voxel_offset, self.chunk_size, self.end):
            first = o + (max(b, o) - o) // c * c
            ranges.append(range(first, min(e, stop), c))
        for z in ranges[2]:
            for y in ranges[1]:
                for x in ranges[0]:
                    yield (x, y, z)

    def chunk_end(self, begin: tuple[int, int, int]) -> tuple[int, int, int]:
        """One past the last voxel of the chunk that starts at ``begin`` (clipped at the volume's end)."""
        return tuple(min(b + c, e) for b, c, e in zip(begin, self.chunk_size, self.end))  # type: ignore[return-value]

    def chunk_name(self, begin: tuple[int, int, int]) -> str:
        """The chunk's object name: ``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>``."""
        end = self.chunk_end(begin)
        return f"{self.key}/" + "_".join(f"{b}-{e}" for b, e in zip(begin, end))


def normalize_url(url: str) -> str:
    """An HTTP(S) base URL: strips ``precomputed://`` and a trailing ``/``; ``gs://bucket/path`` becomes the public
    ``https://storage.googleapis.com/bucket/path`` (anonymous reads)."""
    url = url.removeprefix("precomputed://").rstrip("/")
    if url.startswith("gs://"):
        url = "https://storage.googleapis.com/" + url.removeprefix("gs://")
    if not url.startswith(("http://", "https://")):
        raise PrecomputedError(f"'{url}': expected an http(s):// or gs:// URL of a precomputed volume")
    return url


class PrecomputedVolume:
    """A precomputed volume read over HTTP(S), without credentials.

    Args:
        url: the volume's folder (``https://…``, ``gs://…`` or ``precomputed://…``).
        retries: attempts after a connection error or an HTTP 429/5xx answer, with back-off.
        timeout: seconds to connect and between received bytes.
        fill_missing: a chunk that does not exist (HTTP 404) reads as zeros instead of being an error (neuroglancer
            shows missing chunks as empty).
    """

    def __init__(self, url: str, retries: int = 3, timeout: float = 30.0, fill_missing: bool = False):
        import urllib3

        self.url = normalize_url(url)
        self.fill_missing = fill_missing
        self._http = urllib3.PoolManager(
            maxsize=16,
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504), raise_on_status=False
            ),
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        info_url = f"{self.url}/info"
        body = self._get(info_url)
        if body is None:
            raise PrecomputedError(f"{info_url}: not found (HTTP 404); is {self.url} a precomputed volume?")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PrecomputedError(f"{info_url}: invalid JSON ({e})") from None
        if not isinstance(data, dict):
            raise PrecomputedError(f"{info_url}: expected a JSON object, got {type(data).__name__}")
        try:
            info = _Info.model_validate(data)
        except ValidationError as e:
            raise PrecomputedError(format_validation_error(info_url, _Info, e)) from None
        if info.data_type not in DATA_TYPES:
            raise PrecomputedError(f"{info_url}: data_type '{info.data_type}' is not supported (expected one of: {', '.join(DATA_TYPES)})")
        if info.num_channels < 1:
            raise PrecomputedError(f"{info_url}: num_channels must be at least 1, got {info.num_channels}")
        if not info.scales:
            raise PrecomputedError(f"{info_url}: no scales")
        self.info = data
        self.dtype = np.dtype(info.data_type).newbyteorder("<")
        self.num_channels = info.num_channels
        self.scales = []
        for i, s in enumerate(info.scales):
            where = f"{info_url}: scale {i} ('{s.key}')"
            if s.sharding is not None:
                raise PrecomputedError(f"{where} is sharded (not supported: only unsharded chunks)")
            if s.encoding not in SUPPORTED_ENCODINGS:
                raise PrecomputedError(f"{where} has encoding '{s.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
            if s.encoding == "jpeg" and (self.dtype != np.uint8 or self.num_channels not in (1, 3)):
                raise PrecomputedError(f"{where}: jpeg needs uint8 data with 1 or 3 channels")
            if not s.chunk_sizes or any(c < 1 for c in s.chunk_sizes[0]) or any(v < 0 for v in s.size):
                raise PrecomputedError(f"{where}: expected positive chunk_sizes and a size ≥ 0")
            if any(r <= 0 for r in s.resolution):
                raise PrecomputedError(f"{where}: resolution must be positive, got {list(s.resolution)}")
            self.scales.append(Scale(s.key.strip("/"), s.size, s.voxel_offset, s.resolution, s.chunk_sizes[0], s.encoding))

    # ---- HTTP ----------------------------------------------------------------------------------------------------

    def _get(self, url: str) -> bytes | None:
        """The body of ``url`` (gzip content-encoding undone); None for HTTP 404."""
        import urllib3

        try:
            response = self._http.request("GET", url, headers={"Accept-Encoding": "gzip"}, decode_content=True)
        except urllib3.exceptions.MaxRetryError as e:
            reason = e.reason
            if isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError):
                raise PrecomputedError(f"cannot reach {url} (connection failed; check the URL and the network)") from None
            raise PrecomputedError(f"{url}: {type(reason).__name__ if reason else 'request failed'} after retries") from None
        except urllib3.exceptions.DecodeError as e:
            raise PrecomputedError(f"{url}: the gzip content-encoding does not decode ({e})") from None
        except urllib3.exceptions.HTTPError as e:
            raise PrecomputedError(f"{url}: {type(e).__name__}: {e}") from None
        if response.status == 404:
            return None
        if response.status in (401, 403):
            raise PrecomputedError(f"{url}: access denied (HTTP {response.status}; the volume must be public, no credentials are used)")
        if response.status != 200:
            raise PrecomputedError(f"{url}: HTTP {response.status}")
        return response.data

    # ---- chunks --------------------------------------------------------------------------------------------------

    def scale(self, voxel_size: tuple[int, int, int] | None = None) -> Scale:
        """The scale with this voxel size (z, y, x nm); None: the first (finest) scale."""
        if voxel_size is None:
            return self.scales[0]
        for s in self.scales:
            if np.allclose(s.voxel_size_zyx, voxel_size):
                return s
        have = ", ".join(str([_number(v) for v in s.voxel_size_zyx]) for s in self.scales)
        raise PrecomputedError(f"{self.url}: no scale with voxel size {list(voxel_size)} (z, y, x nm); it has {have}")

    def read_chunk(self, scale: Scale, begin: tuple[int, int, int]) -> np.ndarray:
        """The chunk that starts at voxel ``begin`` (x, y, z), as (channels, z, y, x)."""
        end = scale.chunk_end(begin)
        shape_xyz = tuple(e - b for b, e in zip(begin, end))
        shape = (self.num_channels, *shape_xyz[::-1])
        url = f"{self.url}/{scale.chunk_name(begin)}"
        data = self._get(url)
        if data is None:
            if self.fill_missing:
                return np.zeros(shape, self.dtype)
            raise PrecomputedError(f"{url}: chunk not found (HTTP 404)")
        if scale.encoding == "raw":
            expected = int(np.prod(shape)) * self.dtype.itemsize
            if len(data) != expected:
                dims = "×".join(map(str, shape_xyz))
                raise PrecomputedError(f"{url}: {len(data)} bytes, expected {expected} for a raw {self.dtype.name} chunk of {dims} voxels (x, y, z) × {self.num_channels} channel(s)")
            return np.frombuffer(data, self.dtype).reshape(shape)
        return self._decode_jpeg(data, url, shape)

    def _decode_jpeg(self, data: bytes, url: str, shape: tuple[int, ...]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "JPEG":
                    raise PrecomputedError(f"{url}: expected a JPEG chunk, got {image.format}")
                image = image.convert("L" if self.num_channels == 1 else "RGB")
                pixels = np.asarray(image)
        except (UnidentifiedImageError, OSError) as e:
            raise PrecomputedError(f"{url}: not a decodable JPEG image ({e})") from None
        voxels = int(np.prod(shape[1:]))
        if pixels.shape[0] * pixels.shape[1] != voxels:
            raise PrecomputedError(f"{url}: JPEG of {pixels.shape[1]}×{pixels.shape[0]} pixels, expected {voxels} (the chunk's voxels)")
        # rows concatenated = voxels x fastest, then y, then z; colour channels interleaved per voxel
        return np.moveaxis(pixels.reshape(*shape[1:], self.num_channels), -1, 0)

    def read(self, scale: Scale, begin: tuple[int, int, int], end: tuple[int, int, int]) -> np.ndarray:
        """The voxels of the box ``[begin, end)`` (x, y, z, inside the volume), as (channels, z, y, x)."""
        _check_inside(self.url, scale, begin, end)
        out = np.zeros((self.num_channels, *(e - b for b, e in zip(begin[::-1], end[::-1]))), self.dtype)
        for chunk_begin in scale.chunk_begins(begin, end):
            chunk = self.read_chunk(scale, chunk_begin)
            chunk_end = scale.chunk_end(chunk_begin)
            lo = [max(b, cb) for b, cb in zip(begin, chunk_begin)]
            hi = [min(e, ce) for e, ce in zip(end, chunk_end)]
            dst = tuple(slice(lo[a] - begin[a], hi[a] - begin[a]) for a in (2, 1, 0))
            src = tuple(slice(lo[a] - chunk_begin[a], hi[a] - chunk_begin[a]) for a in (2, 1, 0))
            out[(slice(None), *dst)] = chunk[(slice(None), *src)]
        return out


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _check_inside(url: str, scale: Scale, begin, end) -> None:
    if any(b < o or e > s or b >= e for b, e, o, s in zip(begin, end, scale.voxel_offset, scale.end)):
        raise PrecomputedError(
            f"{url}: the box {list(begin)}–{list(end)} (x, y, z voxels) is empty or not inside the volume "
            f"{list(scale.voxel_offset)}–{list(scale.end)}"
        )


# ---- a region → zarr --------------------------------------------------------------------------------------------


@dataclass
class CopySummary:
    """What :func:`copy_to_zarr` did."""

    roi_offset: tuple[int, int, int]
    """Offset (nm, z, y, x) of the region written: the requested one grown to the volume's chunk grid."""
    roi_shape: tuple[int, int, int]
    """Its shape (nm, z, y, x)."""
    chunks: int = 0
    """Chunks of the region."""
    fetched: int = 0
    """Chunks fetched by this run."""
    resumed: int = 0
    """Chunks an earlier, interrupted run had already written."""
    bytes: int = 0
    """Decoded bytes written by this run."""
    seconds: float = 0.0
    complete_before: bool = False
    """The output was already complete: nothing was fetched."""

    def line(self) -> str:
        """The one-line summary printed at the end."""
        if self.complete_before:
            return f"complete already: {self.chunks} chunks, ROI {list(self.roi_offset)}+{list(self.roi_shape)} nm"
        return (
            f"fetched {self.fetched} of {self.chunks} chunks ({self.resumed} done before), {self.bytes} bytes decoded, "
            f"ROI {list(self.roi_offset)}+{list(self.roi_shape)} nm (z, y, x); {self.seconds:.1f} s"
        )


FETCH_RECORD = "fetch.json"
"""In the ``.partial`` container: what is being fetched (a different request starts over)."""
DONE_LOG = "fetched_chunks.txt"
"""In the ``.partial`` container: one line ``x_y_z`` (the chunk's first voxel) per chunk written."""


def region_for_roi(scale: Scale, roi_offset, roi_shape, url: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The voxel box (x, y, z) to fetch for a ROI in nm (z, y, x): the ROI grown to the chunk grid, clipped to the
    volume. Every chunk then maps to exactly one chunk of the output and is fetched once.

    Raises:
        PrecomputedError: the ROI is not a whole number of voxels, or not inside the volume (one line, in nm).
    """
    voxel_size = scale.voxel_size_zyx
    if any(not float(v).is_integer() for v in voxel_size):
        raise PrecomputedError(f"{url}: scale '{scale.key}' has a non-integer resolution {list(scale.resolution)} nm")
    vs = [int(v) for v in voxel_size]
    for what, values in (("roi_offset", roi_offset), ("roi_shape", roi_shape)):
        if len(values) != 3 or any(int(v) % s for v, s in zip(values, vs)):
            raise PrecomputedError(f"{what} {list(values)} nm is not a multiple of the voxel size {vs} nm (z, y, x)")
    if any(int(s) <= 0 for s in roi_shape):
        raise PrecomputedError(f"roi_shape {list(roi_shape)} nm must be positive")
    begin = [int(o) // s for o, s in zip(roi_offset, vs)][::-1]
    end = [b + int(n) // s for b, n, s in zip(begin, list(roi_shape)[::-1], vs[::-1])]
    if any(b < o or e > v for b, e, o, v in zip(begin, end, scale.voxel_offset, scale.end)):
        lo = [o * s for o, s in zip(scale.voxel_offset[::-1], vs)]
        hi = [e * s for e, s in zip(scale.end[::-1], vs)]
        raise PrecomputedError(
            f"ROI {list(roi_offset)}+{list(roi_shape)} nm is not inside the volume {url} ({lo} to {hi} nm, z, y, x)"
        )
    grown_begin = tuple(o + (b - o) // c * c for b, o, c in zip(begin, scale.voxel_offset, scale.chunk_size))
    grown_end = tuple(min(o + -(-(e - o) // c) * c, v) for e, o, c, v in zip(end, scale.voxel_offset, scale.chunk_size, scale.end))
    return grown_begin, grown_end


def copy_to_zarr(
    volume: PrecomputedVolume,
    scale: Scale,
    out,
    roi_offset,
    roi_shape,
    dataset: str = "volumes/raw",
    jobs: int = 8,
) -> CopySummary:
    """Copy a ROI of a precomputed volume into a new zarr v2 container (z, y, x), chunk by chunk, resumably.

    The container is built as ``<out>.partial`` and renamed to ``out`` when every chunk is in: a complete ``out`` is
    never half-written. Each chunk of the volume becomes one chunk of the zarr (same shape, z, y, x), so an
    interrupted run resumes with the chunks it has not written (``fetched_chunks.txt`` records them). The dataset
    carries our attrs ``resolution`` (voxel size, nm, z, y, x) and ``offset`` (nm, z, y, x), plus ``source``.

    Args:
        volume: the source.
        scale: its scale to copy (see :meth:`PrecomputedVolume.scale`).
        out: the zarr container to create.
        roi_offset: offset (nm, z, y, x); grown down to the chunk grid.
        roi_shape: shape (nm, z, y, x); grown up to the chunk grid (never beyond the volume).
        dataset: the dataset inside the container.
        jobs: chunks fetched in parallel.
    """
    import zarr
    from tqdm import tqdm

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    start = time.monotonic()
    out = Path(out)
    begin, end = region_for_roi(scale, roi_offset, roi_shape, volume.url)
    vs = [int(v) for v in scale.voxel_size_zyx]
    offset_nm = tuple(b * s for b, s in zip(begin[::-1], vs))
    shape_zyx = tuple(e - b for b, e in zip(begin[::-1], end[::-1]))
    summary = CopySummary(offset_nm, tuple(n * s for n, s in zip(shape_zyx, vs)))  # type: ignore[arg-type]
    channels = () if volume.num_channels == 1 else (volume.num_channels,)
    chunk_begins = list(scale.chunk_begins(begin, end))
    summary.chunks = len(chunk_begins)
    request = {
        "source": f"{volume.url}/{scale.key}",
        "dataset": dataset,
        "offset": list(offset_nm),
        "shape": list(channels + shape_zyx),
        "resolution": vs,
        "dtype": volume.dtype.name,
    }

    if out.exists():
        try:
            array = zarr.open_array(out / dataset, mode="r")
            attrs = array.attrs.asdict()
            same = (
                list(array.shape) == request["shape"]
                and list(attrs.get("offset", [])) == request["offset"]
                and list(attrs.get("resolution", [])) == vs
                and array.dtype == volume.dtype
            )
        except (FileNotFoundError, ValueError, KeyError, OSError):
            same = False
        if not same:
            raise ConfigError(f"{out} exists and does not hold this region ({dataset} {request['shape']} at {request['offset']} nm); remove it or choose another output")
        summary.complete_before = True
        return summary

    tmp = out.with_name(out.name + ".partial")
    record = tmp / FETCH_RECORD
    if tmp.exists():
        try:
            previous = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != request:  # another region, or the run died before the container was set up
            shutil.rmtree(tmp)
    if not tmp.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        group = root
        *parents, leaf = dataset.split("/")
        for parent in parents:
            group = group.require_group(parent)
        array = group.create_array(
            leaf,
            shape=channels + shape_zyx,
            chunks=channels + tuple(scale.chunk_size[::-1]),
            dtype=volume.dtype,
            fill_value=0,
            compressors=COMPRESSOR,
        )
        array.attrs.update({"resolution": vs, "offset": list(offset_nm), "source": request["source"]})
        record.write_text(json.dumps(request))  # last: its presence means the container is set up

    done_log = tmp / DONE_LOG
    done = set()
    if done_log.exists():
        for line in done_log.read_text().splitlines():
            parts = line.split("_")
            if len(parts) == 3 and all(p.isdigit() for p in parts):  # a line cut short by a kill is left out
                done.add(tuple(int(p) for p in parts))
    todo = [b for b in chunk_begins if b not in done]
    summary.resumed = summary.chunks - len(todo)
    array = zarr.open_array(tmp / dataset, mode="r+")

    def write(chunk_begin: tuple[int, int, int], data: np.ndarray) -> None:
        # one whole zarr chunk per write (clipped at the array's end): a chunk file a kill tore is overwritten whole
        rel = [b - g for b, g in zip(chunk_begin[::-1], begin[::-1])]
        region = tuple(slice(r, r + n) for r, n in zip(rel, data.shape[1:]))
        array[(slice(None), *region) if channels else region] = data if channels else data[0]

    with (
        open(done_log, "a") as log,
        tqdm(total=summary.chunks, initial=summary.resumed, unit="chunk", desc=f"{out.name}", mininterval=0.5) as bar,
        ThreadPoolExecutor(max_workers=jobs) as pool,
    ):
        pending: dict = {}
        queue = iter(todo)
        try:
            while True:
                while len(pending) < 2 * jobs:
                    chunk_begin = next(queue, None)
                    if chunk_begin is None:
                        break
                    pending[pool.submit(volume.read_chunk, scale, chunk_begin)] = chunk_begin
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    chunk_begin = pending.pop(future)
                    data = future.result()
                    write(chunk_begin, data)
                    log.write("_".join(map(str, chunk_begin)) + "\n")
                    log.flush()
                    summary.fetched += 1
                    summary.bytes += data.nbytes
                    bar.update(1)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    record.unlink()
    done_log.unlink()
    tmp.rename(out)
    summary.seconds = time.monotonic() - start
    return summary
