"""QuantizeUInt8: round-trip predictions through uint8, as stored predictions are."""

from __future__ import annotations

import gunpowder as gp
import numpy as np


class QuantizeUInt8(gp.BatchFilter):
    """Replace an array in [0, 1] by ``floor(255·a) / 255``: what a prediction becomes once stored as uint8.

    The autocontext nets read stored (uint8) LSDs at inference; LSDs computed on the fly go through this so that
    the affs net sees the same values in training and on the fly (the original's EnsureUInt8 + Normalize).

    Args:
        array (:class:`gunpowder.ArrayKey`): the array to quantise in place.
    """

    def __init__(self, array: gp.ArrayKey):
        self.array = array

    def setup(self):
        self.enable_autoskip()
        self.updates(self.array, self.spec[self.array])

    def prepare(self, request):
        deps = gp.BatchRequest()
        deps[self.array] = request[self.array].copy()
        return deps

    def process(self, batch, request):
        data = batch[self.array].data
        batch[self.array].data = (np.floor(np.clip(data, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)
