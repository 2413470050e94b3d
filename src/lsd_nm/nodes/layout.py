"""Conversions between gunpowder's channels-first arrays and Keras' channels-last batches."""

from __future__ import annotations

import numpy as np


def to_keras(data: np.ndarray) -> np.ndarray:
    """(C, z, y, x) or (z, y, x) → (1, z, y, x, C) float32."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3:
        data = data[None]
    return np.moveaxis(data, 0, -1)[None]


def from_keras(data) -> np.ndarray:
    """(1, z, y, x, C) → (C, z, y, x)."""
    return np.moveaxis(np.asarray(data)[0], -1, 0)
