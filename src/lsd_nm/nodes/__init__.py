"""gunpowder nodes of this project (one per file, as in gunpowder)."""

from .keras_predict import KerasPredict
from .keras_train import KerasTrain
from .quantize_uint8 import QuantizeUInt8

__all__ = ["KerasPredict", "KerasTrain", "QuantizeUInt8"]
