"""gunpowder nodes of this project (one per file, as in gunpowder)."""

from .keras_predict import KerasPredict
from .keras_train import KerasTrain

__all__ = ["KerasPredict", "KerasTrain"]
