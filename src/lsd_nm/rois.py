"""The paper's evaluation ROIs: a registry per dataset (``03_predict/configs/rois/<dataset>.json``).

Zebrafinch (Sheridan et al., Fig. 4 and the authors' per-ROI result tables): ten nested cubes with edges 10.8, 18.0,
…, 75.6 µm (named ``11_micron_roi`` … ``76_micron_roi`` as in the authors' tables) and the Benchmark ROI
(774,543 µm³). Only the 11 µm cube's offset is published (the evaluation example of ``funkelab/lsd``: offset
[50800, 43200, 44100] nm, shape [10800]³); every other offset is derived, and the registry says which and how
(``offset_source``, ``note``). :func:`check_roi_against_skeletons` checks a ROI against the per-ROI masks and
components of the authors' consolidated skeletons.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import model_validator

from . import REPO_ROOT
from .bson_dump import NO_COMPONENT
from .config import ConfigError, StrictBaseModel, load_model

ROIS_DIR = REPO_ROOT / "03_predict" / "configs" / "rois"
"""The registries (a folder of their own: every other ``03_predict/configs/**/*.json`` is a run config)."""


class EvaluationRoi(StrictBaseModel):
    """One ROI the paper evaluates on."""

    roi_offset: tuple[int, int, int]
    """Offset in nm (z, y, x): the ``roi_offset`` of a run config."""
    roi_shape: tuple[int, int, int]
    """Shape in nm (z, y, x): the ``roi_shape`` of a run config."""
    offset_source: Literal["published", "derived"]
    """``published``: the offset appears in the authors' code or data; ``derived``: we computed it (see ``note``)."""
    note: str
    """Where the values come from, and for a derived offset how it was derived and checked."""

    @property
    def roi_end(self) -> tuple[int, int, int]:
        """One past the last nm (z, y, x)."""
        return tuple(o + s for o, s in zip(self.roi_offset, self.roi_shape))  # type: ignore[return-value]

    def volume_um3(self) -> float:
        """Volume in µm³."""
        return float(np.prod(np.asarray(self.roi_shape, np.float64) / 1000))

    def contains(self, other: EvaluationRoi) -> bool:
        """Whether ``other`` lies inside this ROI."""
        return all(a <= b for a, b in zip(self.roi_offset, other.roi_offset)) and all(
            a >= b for a, b in zip(self.roi_end, other.roi_end)
        )


class RoiRegistry(StrictBaseModel):
    """The evaluation ROIs of one dataset."""

    dataset: str
    """The dataset of ``01_data/datasets.json`` the ROIs belong to."""
    voxel_size: tuple[int, int, int]
    """Voxel size in nm (z, y, x); every offset and shape is a multiple of it."""
    rois: dict[str, EvaluationRoi]
    """ROI name → ROI, smallest first (names as in the authors' result tables)."""

    @model_validator(mode="after")
    def _aligned(self) -> RoiRegistry:
        if not self.rois:
            raise ValueError("no ROIs")
        if any(v <= 0 for v in self.voxel_size):
            raise ValueError(f"voxel_size must be positive, got {list(self.voxel_size)}")
        for name, roi in self.rois.items():
            if any(s <= 0 for s in roi.roi_shape):
                raise ValueError(f"ROI '{name}': roi_shape must be positive, got {list(roi.roi_shape)}")
            for what, values in (("roi_offset", roi.roi_offset), ("roi_shape", roi.roi_shape)):
                if any(v % s for v, s in zip(values, self.voxel_size)):
                    raise ValueError(
                        f"ROI '{name}': {what} {list(values)} is not a multiple of the voxel size {list(self.voxel_size)}"
                    )
        return self


def rois_path(dataset: str) -> Path:
    """The registry file of a dataset: ``03_predict/configs/rois/<dataset>.json``."""
    return ROIS_DIR / f"{dataset}.json"


def load_rois(dataset: str = "zebrafinch", path: Path | None = None) -> RoiRegistry:
    """Read and validate a dataset's ROI registry (one-line errors naming the file and key)."""
    path = Path(path) if path is not None else rois_path(dataset)
    if not path.exists():
        have = sorted(p.stem for p in ROIS_DIR.glob("*.json"))
        raise ConfigError(f"no ROI registry for dataset '{dataset}' at {path} (registries exist for: {', '.join(have) or 'none'})")
    return load_model(RoiRegistry, path)


def get_roi(name: str, dataset: str = "zebrafinch", path: Path | None = None) -> EvaluationRoi:
    """One ROI by name; an unknown name is a one-line error listing the valid ones."""
    registry = load_rois(dataset, path)
    if name not in registry.rois:
        raise ConfigError(f"unknown ROI '{name}' of dataset '{dataset}' (expected one of: {', '.join(registry.rois)})")
    return registry.rois[name]


def check_roi_against_skeletons(roi: EvaluationRoi, name: str, skeletons: dict[str, np.ndarray], key: str) -> dict[str, object]:
    """Check a ROI against the per-ROI arrays ``masked_<key>`` / ``component_id_<key>`` of consolidated skeletons.

    The authors computed those arrays for the nodes inside their ROI, so the nodes they mark (masked in, or given a
    component) lie inside ours. A collection may list a few more (the original reads the nodes inside the ROI and
    ignores the rest of an attribute collection): marked nodes outside the ROI are ignored and counted; a ROI that
    holds none of the marked nodes is refused (the wrong ROI). The bounding box of the marked nodes inside is
    returned too: for a ROI dense with skeletons it nearly fills the ROI, which tells a right offset from one that
    merely contains the nodes.

    Args:
        roi: the ROI to check.
        name: its name (for messages).
        skeletons: arrays of a ``.skeletons.npz`` (see :func:`lsd_nm.bson_dump.read_skeleton_dump`).
        key: the attribute key, e.g. ``11_micron_roi_masked``.

    Returns:
        ``{"nodes": marked nodes inside, "outside": marked nodes outside (ignored), "bbox_begin": (z, y, x) nm,
        "bbox_end": (z, y, x) nm}``.

    Raises:
        ConfigError: no array for ``key``, or every marked node outside the ROI (one line, with a node).
    """

    marked = np.zeros(len(skeletons["node_ids"]), bool)
    found = False
    if f"masked_{key}" in skeletons:
        marked |= skeletons[f"masked_{key}"].astype(bool)
        found = True
    if f"component_id_{key}" in skeletons:
        marked |= skeletons[f"component_id_{key}"] != NO_COMPONENT
        found = True
    if not found:
        have = sorted(k for k in skeletons if k.startswith(("masked_", "component_id_")))
        raise ConfigError(f"the skeletons have no masked_{key} or component_id_{key} (they have: {', '.join(have) or 'none'})")
    positions = skeletons["positions"][marked].astype(np.float64)
    begin, end = np.asarray(roi.roi_offset, np.float64), np.asarray(roi.roi_end, np.float64)
    outside = ~((positions >= begin) & (positions < end)).all(axis=1)
    if outside.any() and outside.all():
        i = int(np.flatnonzero(outside)[0])
        node = int(skeletons["node_ids"][marked][i])
        raise ConfigError(
            f"ROI '{name}' {list(roi.roi_offset)}+{list(roi.roi_shape)} nm disagrees with the skeletons' '{key}': "
            f"{int(outside.sum())} of {len(positions)} marked nodes lie outside it (e.g. node {node} at "
            f"{[float(v) for v in positions[i]]} nm, z, y, x)"
        )
    inside = positions[~outside]
    if len(inside) == 0:
        return {"nodes": 0, "outside": 0, "bbox_begin": None, "bbox_end": None}
    return {
        "nodes": len(inside),
        "outside": int(outside.sum()),
        "bbox_begin": tuple(float(v) for v in inside.min(axis=0)),
        "bbox_end": tuple(float(v) for v in inside.max(axis=0)),
    }
