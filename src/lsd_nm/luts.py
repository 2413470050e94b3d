"""The fragment → segment lookup tables (LUTs) of a run: their names, files and application.

A LUT of merge threshold t maps every fragment (node of the region graph) to its segment. It is saved as
``<out_file>/luts/fragment_segment/seg_<merge_function>_<int(round(100·t))>.npz`` with the arrays ``fragments`` and
``segments`` (uint64, sorted by fragment) and ``edges_sha256`` (the region graph's edges it was made from); the
segmentation of t is ``volumes/segmentation_<int(round(100·t))>``. The threshold in a name is rounded, not truncated
(the original's ``int(0.29 * 100)`` is 28); two thresholds with the same name are an error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import ConfigError
from .run_config import RunConfig

LUT_DIR = "luts/fragment_segment"


def threshold_name(threshold: float) -> int:
    """The integer of a threshold in file and dataset names: ``int(round(100·t))`` (0.29 → 29, 0.58 → 58)."""
    return int(round(100 * threshold))


def sweep(thresholds: Sequence[float]) -> list[float]:
    """The thresholds of ``[min, max, step]``: min + i·step below max (max excluded), rounded to 10 decimals.

    Args:
        thresholds: ``[min, max, step]`` with step > 0.
    """
    low, high, step = (float(x) for x in thresholds)
    if step <= 0:
        raise ConfigError(f"thresholds {list(thresholds)}: the step must be positive")
    count = max(0, math.ceil((high - low) / step - 1e-9))
    return [round(low + i * step, 10) for i in range(count)]


def all_thresholds(config: RunConfig) -> list[float]:
    """The sweep of ``config.thresholds`` plus ``config.extract_thresholds`` and ``config.score_threshold``, sorted,
    without duplicates.

    Raises:
        ConfigError: two different thresholds would share one LUT name (their int(round(100·t)) are equal).
    """
    extra = [*config.extract_thresholds, *([] if config.score_threshold is None else [config.score_threshold])]
    values = sorted(set(sweep(config.thresholds)) | {round(float(t), 10) for t in extra})
    names: dict[int, float] = {}
    for t in values:
        if threshold_name(t) in names:
            raise ConfigError(
                f"thresholds {names[threshold_name(t)]} and {t} would share the name _{threshold_name(t)}; "
                "use thresholds 0.01 apart"
            )
        names[threshold_name(t)] = t
    return values


def lut_path(config: RunConfig, threshold: float) -> Path:
    """``<out_file>/luts/fragment_segment/seg_<merge_function>_<int(round(100·t))>.npz``."""
    return config.path(config.out_file) / LUT_DIR / f"seg_{config.merge_function}_{threshold_name(threshold)}.npz"


def load_lut(config: RunConfig, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``(fragments, segments)`` LUT of a threshold.

    Raises:
        ConfigError: the LUT file does not exist (one line naming it).
    """
    path = lut_path(config, threshold)
    if not path.is_file():
        raise ConfigError(f"no LUT for threshold {threshold} ('{path}'); run 04_find_segments first")
    with np.load(path) as f:
        return f["fragments"], f["segments"]


def lut_digest(lut: tuple[np.ndarray, np.ndarray]) -> str:
    """A SHA-256 of a LUT's contents (not of its file, whose zip timestamps change)."""
    digest = hashlib.sha256()
    for array in lut:
        digest.update(np.ascontiguousarray(array, dtype=np.uint64).tobytes())
    return digest.hexdigest()


def save_lut(path: Path, fragments: np.ndarray, segments: np.ndarray, edges_sha256: str) -> None:
    """Write a LUT ``.npz`` atomically (a partial file renamed when complete)."""
    from .data import atomic_path  # here: step 4 (find segments) imports this module and never needs zarr

    with atomic_path(path, suffix=".partial.npz") as tmp:
        np.savez_compressed(tmp, fragments=fragments, segments=segments, edges_sha256=np.array(edges_sha256))


def apply_lut(fragments: np.ndarray, lut: tuple[np.ndarray, np.ndarray] | np.ndarray) -> np.ndarray:
    """Map fragment ids to segment ids through a LUT, in memory (vectorised binary search).

    Fragment ids missing from the LUT map to **0**, as in the original's ``05_extract_segmentation_from_lut.py``
    (its output is zero-initialised): they are not part of the region graph, so they belong to no segment. Fragment
    0 maps to 0 unless the LUT says otherwise.

    Args:
        fragments: Fragment ids, any shape (a volume, or one id per skeleton node).
        lut: ``(fragment_ids, segment_ids)``, or the original's (2, N) ``fragment_segment_lut`` array.

    Returns:
        Segment ids, the shape of ``fragments``, the dtype of ``segment_ids``.
    """
    fragment_ids, segment_ids = (np.asarray(x) for x in lut)
    fragments = np.asarray(fragments)
    out = np.zeros(fragments.shape, dtype=segment_ids.dtype)
    if fragment_ids.size == 0:
        return out
    # compare in the fragments' dtype: mixing uint64 with int64 would promote to float64 and lose large ids
    keys, values = fragment_ids.astype(fragments.dtype), segment_ids
    if np.any(keys[1:] < keys[:-1]):  # our LUT files are sorted by fragment already
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
    flat = fragments.ravel()
    index = np.searchsorted(keys, flat).clip(0, len(keys) - 1)
    found = keys[index] == flat
    out.ravel()[found] = values[index[found]]
    return out


def segmentation_dataset(threshold: float) -> str:
    """``volumes/segmentation_<int(round(100·t))>``."""
    return f"volumes/segmentation_{threshold_name(threshold)}"
