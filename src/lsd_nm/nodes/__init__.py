"""gunpowder nodes of this project (one per file, as in gunpowder)."""

from .add_local_shape_descriptor import AddLocalShapeDescriptor
from .keras_predict import KerasPredict
from .keras_train import KerasTrain
from .precache import PreCache
from .quantize_uint8 import QuantizeUInt8
from .random_location import RandomLocation
from .renumber_connected_components import RenumberConnectedComponents
from .snapshot import Snapshot
from .zarr_source import ZarrSource

__all__ = [
    "AddLocalShapeDescriptor", "KerasPredict", "KerasTrain", "PreCache", "QuantizeUInt8", "RandomLocation",
    "RenumberConnectedComponents", "Snapshot", "ZarrSource",
]
