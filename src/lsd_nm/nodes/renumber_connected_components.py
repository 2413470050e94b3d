"""RenumberConnectedComponents: give every 6-connected piece of every label its own id (for MALIS)."""

from __future__ import annotations

import gunpowder as gp


class RenumberConnectedComponents(gp.BatchFilter):
    """Relabel so that each 6-connected component of each label gets a unique id; 0 stays 0.

    (gunpowder's node of that name needs the ``malis`` package, which has no wheel for current Pythons.)

    Args:
        labels (:class:`gunpowder.ArrayKey`): the labels to relabel in place.
    """

    def __init__(self, labels: gp.ArrayKey):
        self.labels = labels

    def setup(self):
        self.enable_autoskip()
        self.updates(self.labels, self.spec[self.labels])

    def prepare(self, request):
        deps = gp.BatchRequest()
        deps[self.labels] = request[self.labels].copy()
        return deps

    def process(self, batch, request):
        from skimage.measure import label

        data = batch[self.labels].data
        components = label(data, background=0, connectivity=1)
        batch[self.labels].data = components.astype(data.dtype)
