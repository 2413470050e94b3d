"""The registry of datasets (``01_data/datasets.json``) and where their volumes live on disk.

``datasets.json`` maps a dataset name to its voxel size and volumes. The real datasets (zebrafinch, fib25, hemi) are
the 45 training volumes of the public bucket ``open-neurodata``; the ``synthetic`` datasets say how each of their
volumes is drawn. Local paths reuse the bucket's keys: ``01_data/funke/<dataset>/training/<volume>`` (and
``testing/`` for held-out synthetic test volumes).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import RootModel, model_validator

from . import REPO_ROOT
from .config import ConfigError, StrictBaseModel, load_model

DATASETS_FILE = REPO_ROOT / "01_data" / "datasets.json"
"""The registry of datasets."""
DATA_DIR = Path(os.environ.get("LSD_NM_DATA_DIR") or REPO_ROOT / "01_data")
"""Where volumes are fetched or generated to: ``01_data/`` (``LSD_NM_DATA_DIR`` moves it, e.g. to a larger disk)."""
USER_DATASETS_NAME = "user_datasets.json"
"""Users' own datasets (``make new-dataset``), in the data folder, apart from the paper's registry."""
USER_DATASETS_FILE = DATA_DIR / USER_DATASETS_NAME
"""The users' registry, merged into the paper's by :func:`load_datasets`."""


class SyntheticVolume(StrictBaseModel):
    """How one synthetic volume is drawn."""

    seed: int
    """Random seed: the same seed gives identical bytes."""
    shape: tuple[int, int, int]
    """Shape in voxels (z, y, x)."""
    offset: tuple[int, int, int] = (0, 0, 0)
    """Offset in nm (z, y, x); a multiple of the voxel size."""


class Dataset(StrictBaseModel):
    """One dataset: its voxel size and volumes."""

    voxel_size: tuple[int, int, int]
    """Voxel size in nm (z, y, x)."""
    volumes: list[str]
    """Training volumes (zarr containers), in the bucket's order."""
    test_volumes: list[str] = []
    """Held-out volumes for prediction and evaluation (synthetic datasets)."""
    unlabelled_id: int | None = None
    """A label id that means 'not labelled' (hemi: 2^64 − 3); masked out by create_masks."""
    synthetic: dict[str, SyntheticVolume] | None = None
    """For generated datasets: how each volume (training and test) is drawn."""

    @model_validator(mode="after")
    def _synthetic_covers_volumes(self) -> Dataset:
        if self.synthetic is not None:
            missing = set(self.volumes + self.test_volumes) - set(self.synthetic)
            if missing:
                raise ValueError(f"synthetic volumes without a recipe: {sorted(missing)}")
        return self


class Datasets(RootModel[dict[str, Dataset]]):
    """The whole registry: dataset name → :class:`Dataset`."""


def load_datasets(path: Path = DATASETS_FILE, user_path: Path | None = USER_DATASETS_FILE) -> dict[str, Dataset]:
    """Read and validate ``datasets.json``, and the users' ``user_datasets.json`` when there is one."""
    datasets = load_model(Datasets, path).root
    if user_path is not None and Path(user_path).exists():
        user = load_model(Datasets, Path(user_path)).root
        clash = sorted(set(user) & set(datasets))
        if clash:
            raise ConfigError(f"{user_path}: dataset '{clash[0]}' is also in {path}; rename it")
        datasets = {**datasets, **user}
    return datasets


def get_dataset(name: str, path: Path = DATASETS_FILE) -> Dataset:
    """One dataset by name; an unknown name is a one-line :class:`ConfigError` listing the valid names."""
    datasets = load_datasets(path, USER_DATASETS_FILE if path == DATASETS_FILE else None)
    if name not in datasets:
        raise ConfigError(f"unknown dataset '{name}' (expected one of: {', '.join(datasets)})")
    return datasets[name]


def volume_path(dataset: str, volume: str, test: bool = False, data_dir: Path = DATA_DIR) -> Path:
    """Local path of a volume: ``<data_dir>/funke/<dataset>/{training,testing}/<volume>``."""
    return Path(data_dir) / "funke" / dataset / ("testing" if test else "training") / volume
