"""gunpowder nodes of this project (one per file, as in gunpowder)."""

from .keras_predict import KerasPredict
from .keras_train import KerasTrain
from .quantize_uint8 import QuantizeUInt8
from .renumber_connected_components import RenumberConnectedComponents
from .snapshot import Snapshot

__all__ = ["KerasPredict", "KerasTrain", "QuantizeUInt8", "RenumberConnectedComponents", "Snapshot"]
