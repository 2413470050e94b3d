"""RenumberConnectedComponents: give every 6-connected piece of every label its own id (for MALIS)."""

from __future__ import annotations

import gunpowder as gp
import numpy as np


class RenumberConnectedComponents(gp.BatchFilter):
    """Relabel so that each 6-connected component of each label gets a unique id; 0 stays 0.

    As the original (gunpowder's node of that name, through malis ``connected_components_affgraph``, whose
    ``prune_and_renum`` has size threshold 1), components of a single voxel become 0 (background, so MALIS counts
    no pair for them), and the others are numbered 1, 2, … from the largest down. (gunpowder's node needs the
    ``malis`` package, which has no wheel for current Pythons.)

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
        components, n = label(data, background=0, connectivity=1, return_num=True)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        # largest first (equal sizes in raster order of their first voxel; the original leaves that order to
        # numpy's unstable argsort), one-voxel components dropped
        order = np.argsort(-sizes[1:], kind="stable") + 1
        kept = order[sizes[order] > 1]
        renumber = np.zeros(n + 1, dtype=data.dtype)
        renumber[kept] = np.arange(1, len(kept) + 1)
        batch[self.labels].data = renumber[components]
