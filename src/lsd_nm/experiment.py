"""A network folder (``02_train/<dataset>/<network>/``) and its configuration.

The defaults of :class:`NetworkConfig` are the paper's zebrafinch settings. A folder's configuration is three
layers, each overriding the one before (dicts merge key by key, lists are replaced):

1. the model's defaults (here),
2. ``02_train/<dataset>/config.json`` (optional): what a dataset changes for all its networks (e.g. fib25's
   isotropic U-Net),
3. ``02_train/<dataset>/<network>/config.json``: what this network changes (at least ``network``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .config import (
    ConfigError,
    Fraction,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictBaseModel,
    format_validation_error,
    read_json,
    validate_json_data,
)  # fmt: skip

NetworkType = Literal["baseline", "lsd", "mtlsd", "aclsd", "acrlsd", "long_range", "malis"]
AUTOCONTEXT_NETWORKS = ("aclsd", "acrlsd")
"""The networks fed by the LSDs of a frozen lsd net."""
Shape = tuple[PositiveInt, PositiveInt, PositiveInt]
"""A shape in voxels (z, y, x)."""
Offset = tuple[int, int, int]
"""An affinity offset in voxels (z, y, x)."""


class UNetConfig(StrictBaseModel):
    """The U-Net all networks share (``mala.networks.unet`` in the original)."""

    num_fmaps: PositiveInt = 12
    """Feature maps at the top level."""
    fmap_inc_factor: PositiveInt = 5
    """Feature maps grow by this factor per level (12, 60, 300, 1500)."""
    downsample_factors: list[Shape] = [(1, 3, 3), (1, 3, 3), (3, 3, 3)]
    """Max-pooling factors (z, y, x) between levels; the upsampling uses the same factors."""
    kernel_size: PositiveInt = 3
    """Size of the valid convolutions (two per level and path)."""
    num_fmaps_out: PositiveInt | None = None
    """Feature maps of the top level's right path (mtlsd: 14); None: ``num_fmaps``."""


class AdamConfig(StrictBaseModel):
    """Adam, as in the paper (no schedule, no weight decay)."""

    learning_rate: PositiveFloat = 0.5e-4
    """Step size."""
    beta1: Fraction = 0.95
    """Decay of the first moment."""
    beta2: Fraction = 0.999
    """Decay of the second moment."""
    epsilon: PositiveFloat = 1e-8
    """Numerical stabiliser."""


class LsdConfig(StrictBaseModel):
    """The local shape descriptor targets."""

    sigma: PositiveFloat = 120.0
    """Gaussian sigma in nm (120 for zebrafinch, 80 for the isotropic datasets)."""
    downsample: PositiveInt = 2
    """Compute the statistics on a grid strided by this factor (much faster, same result up to sampling)."""


class AutocontextConfig(StrictBaseModel):
    """The frozen lsd network that feeds aclsd/acrlsd."""

    lsd_setup: str = "../lsd"
    """The lsd network folder, relative to this folder."""
    lsd_iteration: PositiveInt = 400000
    """The lsd checkpoint to use."""
    auto_input_shape: Shape = (120, 484, 484)
    """Raw input of the lsd net during training (voxels); its LSDs are cropped to ``input_shape``."""


class ElasticConfig(StrictBaseModel):
    """One ElasticAugment (voxels, z y x)."""

    control_point_spacing: Shape = (4, 4, 10)
    """Distance between control points."""
    jitter_sigma: tuple[float, float, float] = (0.0, 2.0, 2.0)
    """Standard deviation of the control points' displacement."""
    rotation_interval: tuple[float, float] = (0.0, math.pi / 2)
    """Rotation angle interval in the y-x plane (radians)."""
    prob_slip: Fraction = 0.05
    """Probability that a section is shifted on its own."""
    prob_shift: Fraction = 0.05
    """Probability that a section and all following ones are shifted."""
    max_misalign: NonNegativeInt = 10
    """Largest shift of a slip or a shift (voxels)."""
    subsample: PositiveInt = 8
    """Compute the transformation on a grid this much coarser."""


class IntensityConfig(StrictBaseModel):
    """IntensityAugment of raw: ``mean + (raw − mean)·scale + shift``."""

    scale_min: float = 0.9
    """Smallest scale."""
    scale_max: float = 1.1
    """Largest scale."""
    shift_min: float = -0.1
    """Smallest shift."""
    shift_max: float = 0.1
    """Largest shift."""
    z_section_wise: bool = True
    """Draw scale and shift per section (anisotropic data)."""


class GrowBoundaryConfig(StrictBaseModel):
    """GrowBoundary: separate touching objects by background before computing affinities."""

    steps: PositiveInt = 1
    """Voxels to erode each object by."""
    only_xy: bool = True
    """Erode in sections only (anisotropic data)."""


class TrainConfig(StrictBaseModel):
    """The training pipeline and schedule."""

    save_every: PositiveInt = 10000
    """Write a checkpoint every this many iterations (autocontext: 1000)."""
    snapshot_every: PositiveInt = 1000
    """Write a snapshot of the batch every this many iterations."""
    profiling_every: PositiveInt | None = None
    """Print gunpowder's profiling statistics (time per node) every this many iterations (None: never; the training
    output is the progress bar with the ETA and one line per checkpoint)."""
    labels_padding: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (500, 369, 369)
    """Padding of labels and mask (nm): (840, 720, 720) for nets with LSDs, (780, 603, 603) for long_range."""
    min_masked: Fraction = 0.5
    """RandomLocation: least fraction of masked-in voxels in a batch."""
    sample_probabilities: list[float] | None = None
    """Probability of each training volume (None: uniform)."""
    elastic: list[ElasticConfig] = [ElasticConfig()]
    """ElasticAugments, applied in this order (fib25/hemi use two)."""
    transpose_only: list[int] | None = [1, 2]
    """SimpleAugment: the axes that may be transposed (None: all)."""
    intensity: IntensityConfig = IntensityConfig()
    """IntensityAugment of raw."""
    grow_boundary: GrowBoundaryConfig | None = GrowBoundaryConfig()
    """GrowBoundary before the affinities (None: off; the lsd net has none)."""
    malis_phase_switch: NonNegativeInt = 10000
    """malis: iterations of MSE training before the MALIS loss takes over."""
    cache_size: PositiveInt = 40
    """PreCache: batches prepared ahead (where the step runs on the CPU: at most two per worker)."""
    num_workers: PositiveInt = 10
    """PreCache: processes preparing batches (capped at the number of cores)."""
    precache_niceness: int | None = Field(None, ge=0, le=19)
    """PreCache: how much lower the workers' scheduling priority is than the train step's (None: 10 where the step
    runs on the CPU, 0 with a GPU). On a CPU shared with other busy processes set 0: at +10 the workers get a tenth
    of a core beside each of them, and training waits for its batches."""


class NetworkConfig(StrictBaseModel):
    """Everything that defines one network folder. Defaults: the paper's zebrafinch setup."""

    network: NetworkType
    """Which of the paper's networks this is."""
    dataset: str | None = None
    """The training dataset of ``01_data/datasets.json`` (None: the name of the folder's parent)."""
    unet: UNetConfig = UNetConfig()
    """The U-Net."""
    input_shape: Shape = (84, 268, 268)
    """Network input during training (voxels)."""
    predict_input_shape: Shape = (96, 484, 484)
    """Network input during prediction (voxels); larger for throughput, same weights."""
    neighborhood: list[Offset] = [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]
    """Affinity offsets (voxels); one output channel each (long_range: 12; for fib25/hemi derived from zebrafinch's
    by their reach in nm, see ``02_train/README.md``)."""
    lsds: LsdConfig = LsdConfig()
    """LSD targets (lsd, mtlsd)."""
    autocontext: AutocontextConfig | None = None
    """The lsd net feeding aclsd/acrlsd (required for them)."""
    optimizer: AdamConfig = AdamConfig()
    """The optimizer."""
    train: TrainConfig = TrainConfig()
    """Training pipeline and schedule."""
    tf32: bool = False
    """Allow TensorFloat-32 on GPUs that have it (Ampere and newer), in training and prediction: faster, but
    convolutions then round their inputs to 10-bit mantissas. Off: FP32, as the original ran (TF1 has no TF32)."""

    @property
    def is_autocontext(self) -> bool:
        """Whether the LSDs of a frozen lsd net feed this network (aclsd, acrlsd)."""
        return self.network in AUTOCONTEXT_NETWORKS

    @model_validator(mode="after")
    def _autocontext_where_needed(self) -> NetworkConfig:
        if self.is_autocontext and self.autocontext is None:
            raise ValueError(f"network '{self.network}' needs an 'autocontext' section (the lsd net that feeds it)")
        if not self.is_autocontext and self.autocontext is not None:
            raise ValueError(f"network '{self.network}' takes no 'autocontext' section")
        return self


CONFIG_FILE = "config.json"


def merge_config(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested dicts merged key by key (the layering of network configs)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has(data: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


def load_network_config(folder: Path) -> NetworkConfig:
    """Read a network folder's configuration (defaults ← dataset ``config.json`` ← network ``config.json``).

    Errors name the file that holds the offending key, the key and what was expected, on one line.
    """
    folder = Path(folder).resolve()
    layers = _layers(folder)
    merged: dict[str, Any] = {"dataset": folder.parent.name}
    for _, data in layers:
        merged = merge_config(merged, data)
    try:
        return validate_json_data(NetworkConfig, merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(str(_source(layers, tuple(e.errors()[0]["loc"]))), NetworkConfig, e)) from None


@dataclass(frozen=True)
class NetworkFolder:
    """A network folder, read once at the entry point and passed down: its path, its config and, for the autocontext
    networks, the lsd folder that feeds them."""

    path: Path
    """The folder (absolute)."""
    config: NetworkConfig
    """Its configuration (defaults ← dataset ``config.json`` ← network ``config.json``)."""

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def lsd(self) -> NetworkFolder | None:
        """aclsd/acrlsd: the lsd network folder of ``autocontext.lsd_setup``, read on first use (importing a
        checkpoint needs no lsd folder); None for the other networks.

        Raises:
            ConfigError: no such folder, a bad config, or not an lsd network.
        """
        if self.config.autocontext is None:
            return None
        lsd_path = (self.path / self.config.autocontext.lsd_setup).resolve()
        lsd = NetworkFolder(lsd_path, load_network_config(lsd_path))
        if lsd.config.network != "lsd":
            raise ConfigError(
                f"{self.path}: autocontext.lsd_setup points to a '{lsd.config.network}' network, expected 'lsd'"
            )
        return lsd


def load_network_folder(folder: Path) -> NetworkFolder:
    """Read a network folder; one-line errors naming the file and key (the lsd folder of an autocontext network is
    read when first used: :attr:`NetworkFolder.lsd`).

    Raises:
        ConfigError: no such folder, or a bad config.
    """
    path = Path(folder).resolve()
    return NetworkFolder(path, load_network_config(path))


def _layers(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The config files of a network folder that exist, with their contents: the dataset's (optional), the network's."""
    network_file = folder / CONFIG_FILE
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such network folder")
    layers: list[tuple[Path, dict[str, Any]]] = []
    for path in (folder.parent / CONFIG_FILE, network_file):
        if path == network_file or path.exists():
            data = read_json(path)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
            layers.append((path, data))
    return layers


def _source(layers: list[tuple[Path, dict[str, Any]]], loc: tuple[Any, ...]) -> Path:
    """The file that set the value at ``loc``: the last layer holding the longest prefix of its keys (a list is
    replaced whole by a later layer, so list indices do not count); else the network's own file."""
    keys = []
    for part in loc:
        if not isinstance(part, str):
            break
        keys.append(part)
    for n in range(len(keys), 0, -1):
        for path, data in reversed(layers):
            if _has(data, tuple(keys[:n])):
                return path
    return layers[-1][0]


def config_file_of(folder: Path, key: str) -> Path:
    """The config file of a network folder that sets ``key`` (dotted, e.g. ``autocontext.auto_input_shape``): the
    network's ``config.json`` when neither sets it (the default applies)."""
    return _source(_layers(Path(folder).resolve()), tuple(key.split(".")))
