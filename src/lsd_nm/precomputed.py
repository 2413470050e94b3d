"""Neuroglancer precomputed volumes, read anonymously over HTTP(S) with TensorStore: the zebrafinch test raw.

The format (neuroglancer ``src/datasource/precomputed/volume.md``): a folder with an ``info`` JSON — ``data_type``,
``num_channels`` and a list of ``scales``, each with a ``key``, ``size``, ``voxel_offset``, ``resolution`` (nm) and
``chunk_sizes``, all in **x, y, z** order — and the chunks of each scale. Voxel ``v`` lies at ``v · resolution`` nm,
so ``voxel_offset`` is part of the world position.

Reading is TensorStore's (``neuroglancer_precomputed`` driver, Google's maintained implementation: every encoding
— raw, jpeg, png, compressed_segmentation — sharded or not, chunks sent gzip-compressed as Google Cloud Storage
sends them, chunk sizes checked) through its read-only ``http`` key-value store, which uses no credentials:
``gs://bucket/path`` is read through the bucket's public HTTPS endpoint. What is ours: choosing the scale by voxel
size, growing a ROI (nm, z, y, x) to the chunk grid, and :func:`copy_to_zarr`, which copies chunk by chunk into a
zarr (z, y, x) that resumes after an interruption and appears under its name only when complete.

Arrays returned here are **z, y, x** (channels first when ``num_channels > 1``), the order of our zarrs. Every
TensorStore error becomes a one-line :class:`PrecomputedError`.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data import COMPRESSOR


class PrecomputedError(ConfigError):
    """A problem reading a precomputed volume (unreachable, missing object, bad info or chunk); one line."""


def _message(error: Exception) -> str:
    """A TensorStore error in one line: without its status code, its "Error opening … driver:" preamble and its
    bracketed payloads (``[tensorstore_spec='…']``, ``[curl_code='7']``, …)."""
    text = " ".join(str(error).split("\n"))
    text = re.split(r" \[[a-z_]+=", text, maxsplit=1)[0]
    text = re.sub(r"^[A-Z_]+: ", "", text)
    return text.replace('Error opening "neuroglancer_precomputed" driver: ', "")


@dataclass(frozen=True)
class Scale:
    """One resolution level of a precomputed volume (all tuples x, y, z, as in the ``info`` file)."""

    index: int
    """Its position in ``info["scales"]``."""
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
    """A precomputed volume read over HTTP(S) with TensorStore, without credentials.

    Args:
        url: the volume's folder (``https://…``, ``gs://…`` or ``precomputed://…``).
        retries: attempts after a failed request (connection error, HTTP 429/5xx), with back-off.
        fill_missing: a chunk that does not exist reads as zeros instead of being an error (neuroglancer shows
            missing chunks as empty).
    """

    def __init__(self, url: str, retries: int = 3, fill_missing: bool = False):
        import tensorstore as ts

        self.url = normalize_url(url)
        self.fill_missing = fill_missing
        self._context = ts.Context(
            {"http_request_retries": {"max_retries": int(retries), "initial_delay": "0.5s", "max_delay": "8s"}}
        )
        self._kvstore = {"driver": "http", "base_url": self.url + "/"}
        info_url = f"{self.url}/info"
        try:
            found = ts.KvStore.open(self._kvstore, context=self._context).result().read("info").result()
        except ValueError as e:
            message = _message(e)
            if "Could not connect" in message or "Could not resolve" in message:
                raise PrecomputedError(f"cannot reach {info_url} (connection failed; check the URL and the network)") from None
            raise PrecomputedError(f"{info_url}: {message}") from None
        if found.state == "missing":
            raise PrecomputedError(f"{info_url}: not found (HTTP 404); is {self.url} a precomputed volume?")
        self._stores: dict[int, object] = {}
        first = self._open(0)  # TensorStore checks the whole info file here
        self.info = json.loads(found.value)
        self.dtype = np.dtype(first.dtype.numpy_dtype)
        self.num_channels = int(first.shape[-1])
        self.scales = [
            Scale(
                i, str(s["key"]).strip("/"), tuple(s["size"]), tuple(s.get("voxel_offset", (0, 0, 0))),
                tuple(float(r) for r in s["resolution"]), tuple(s["chunk_sizes"][0]), s["encoding"],
            )
            for i, s in enumerate(self.info["scales"])
        ]  # fmt: skip

    def _open(self, index: int):
        import tensorstore as ts

        if index not in self._stores:
            spec = {
                "driver": "neuroglancer_precomputed",
                "kvstore": self._kvstore,
                "scale_index": index,
                "fill_missing_data_reads": self.fill_missing,
            }
            try:
                self._stores[index] = ts.open(spec, read=True, context=self._context).result()
            except ValueError as e:
                raise PrecomputedError(_message(e)) from None
        return self._stores[index]

    def scale(self, voxel_size: tuple[int, int, int] | None = None) -> Scale:
        """The scale with this voxel size (z, y, x nm); None: the first (finest) scale."""
        if voxel_size is None:
            return self.scales[0]
        for s in self.scales:
            if np.allclose(s.voxel_size_zyx, voxel_size):
                return s
        have = ", ".join(str([_number(v) for v in s.voxel_size_zyx]) for s in self.scales)
        raise PrecomputedError(f"{self.url}: no scale with voxel size {list(voxel_size)} (z, y, x nm); it has {have}")

    def read(self, scale: Scale, begin: tuple[int, int, int], end: tuple[int, int, int]) -> np.ndarray:
        """The voxels of the box ``[begin, end)`` (x, y, z, inside the volume), as (channels, z, y, x)."""
        _check_inside(self.url, scale, begin, end)
        store = self._open(scale.index)
        try:
            data = store[tuple(slice(b, e) for b, e in zip(begin, end))].read().result()
        except ValueError as e:
            raise PrecomputedError(_message(e)) from None
        return np.ascontiguousarray(np.asarray(data).transpose(3, 2, 1, 0))

    def read_chunk(self, scale: Scale, begin: tuple[int, int, int]) -> np.ndarray:
        """The chunk that starts at voxel ``begin`` (x, y, z), as (channels, z, y, x)."""
        return self.read(scale, begin, scale.chunk_end(begin))


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
