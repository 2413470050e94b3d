"""gunpowder nodes of this project (one per file, as in gunpowder).

The nodes are imported on first use (``from lsd_nm.nodes import KerasTrain``): importing a helper module of this
package alone (``lsd_nm.nodes.layout``, e.g. in a prediction worker) does not import gunpowder, dask and
TensorFlow's training stack with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .add_local_shape_descriptor import AddLocalShapeDescriptor
    from .keras_predict import KerasPredict
    from .keras_train import KerasTrain
    from .precache import PreCache
    from .quantize_uint8 import QuantizeUInt8
    from .random_location import RandomLocation
    from .renumber_connected_components import RenumberConnectedComponents
    from .snapshot import Snapshot
    from .zarr_source import ZarrSource

_MODULES = {
    "AddLocalShapeDescriptor": "add_local_shape_descriptor",
    "KerasPredict": "keras_predict",
    "KerasTrain": "keras_train",
    "PreCache": "precache",
    "QuantizeUInt8": "quantize_uint8",
    "RandomLocation": "random_location",
    "RenumberConnectedComponents": "renumber_connected_components",
    "Snapshot": "snapshot",
    "ZarrSource": "zarr_source",
}
"""Each node and the module that defines it."""

__all__ = [
    "AddLocalShapeDescriptor", "KerasPredict", "KerasTrain", "PreCache", "QuantizeUInt8", "RandomLocation",
    "RenumberConnectedComponents", "Snapshot", "ZarrSource",
]


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    node = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = node
    return node
