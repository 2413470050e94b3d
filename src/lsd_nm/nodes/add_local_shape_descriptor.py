"""AddLocalShapeDescriptor: the LSD training targets of a label array, as lsds' node computes them, per label."""

from __future__ import annotations

import gunpowder as gp
import numpy as np

from ..config import ConfigError


class AddLocalShapeDescriptor(gp.BatchFilter):
    """Add the local shape descriptors of a label array (see :mod:`lsd_nm.local_shape_descriptors`).

    A drop-in for ``lsd.train.gp.AddLocalShapeDescriptor`` (lsds 0.1.3, mode ``gaussian``) with the same requests
    and the same values: the labels are requested on the descriptor's ROI grown by 3 sigma (snapped inwards to the
    voxel grid, joined with the labels' own request), and the descriptors see all of it.

    Args:
        segmentation (:class:`gunpowder.ArrayKey`): the labels (0 is background).
        descriptor (:class:`gunpowder.ArrayKey`): the float32 descriptors to add (10 channels in 3-D, 6 in 2-D).
        lsds_mask (:class:`gunpowder.ArrayKey`, optional): a float32 mask of the descriptor's shape to add: the
            ``labels_mask`` if given, else 1 on labelled voxels; times ``unlabelled`` if given.
        labels_mask (:class:`gunpowder.ArrayKey`, optional): the labels' mask, copied into ``lsds_mask``.
        unlabelled (:class:`gunpowder.ArrayKey`, optional): 0 where voxels are unlabelled, multiplied into
            ``lsds_mask``.
        sigma (float or tuple of float): the Gaussian's standard deviation in nm (one value or one per axis).
        components (str, optional): the channels to compute, as lsds' component string (e.g. ``"0129"``).
        downsample (int): the statistics' grid is subsampled by this factor (1: none).
    """

    def __init__(
        self,
        segmentation: gp.ArrayKey,
        descriptor: gp.ArrayKey,
        lsds_mask: gp.ArrayKey | None = None,
        labels_mask: gp.ArrayKey | None = None,
        unlabelled: gp.ArrayKey | None = None,
        sigma: float | tuple[float, ...] = 5.0,
        components: str | None = None,
        downsample: int = 1,
    ):
        self.segmentation = segmentation
        self.descriptor = descriptor
        self.lsds_mask = lsds_mask
        self.labels_mask = labels_mask
        self.unlabelled = unlabelled
        self.sigma = tuple(float(s) for s in sigma) if isinstance(sigma, tuple | list) else (float(sigma),) * 3
        self.components = components
        self.downsample = downsample

    def setup(self):
        if self.segmentation not in self.spec:
            raise ConfigError(f"AddLocalShapeDescriptor: upstream does not provide the labels {self.segmentation}")
        spec = self.spec[self.segmentation].copy()
        spec.dtype = np.float32
        self.voxel_size = spec.voxel_size
        self.provides(self.descriptor, spec)
        if self.lsds_mask:
            self.provides(self.lsds_mask, spec.copy())
        self.enable_autoskip()

    def prepare(self, request):
        roi = self._output_roi(request)
        # the labels within 3 sigma of every requested descriptor (the Gaussian is truncated there)
        context = gp.Coordinate(3 * s for s in self.sigma[: roi.dims])
        context_roi = roi.grow(context, context).snap_to_grid(self.voxel_size, mode="shrink")
        if self.segmentation in request:
            context_roi = request[self.segmentation].roi.union(context_roi)
        deps = gp.BatchRequest()
        deps[self.segmentation] = gp.ArraySpec(roi=context_roi)
        for key in (self.labels_mask, self.unlabelled):
            if key:
                deps[key] = gp.ArraySpec(roi=context_roi)
        return deps

    def process(self, batch, request):
        # imported here: it loads numba (~0.3 s), which the prediction workers importing lsd_nm.nodes never need
        from ..local_shape_descriptors import local_shape_descriptors

        roi = self._output_roi(request)
        labels = batch[self.segmentation]
        voxel_roi = (roi - labels.spec.roi.offset) / self.voxel_size
        descriptor = local_shape_descriptors(
            labels.data,
            self.sigma[: roi.dims],
            voxel_size=self.voxel_size,
            roi=voxel_roi,
            downsample=self.downsample,
            components=self.components,
        )
        spec = self.spec[self.descriptor].copy()
        spec.roi = roi
        outputs = gp.Batch()
        if self.descriptor in request:
            outputs[self.descriptor] = gp.Array(descriptor, spec)
        if self.lsds_mask and self.lsds_mask in request:
            crop = voxel_roi.to_slices()
            # as lsds: the labels mask where there is one (background included), else the labelled voxels
            if self.labels_mask:
                mask = batch[self.labels_mask].data[crop].astype(np.float32)
            else:
                mask = (labels.data[crop] != 0).astype(np.float32)
            if self.unlabelled:
                mask = mask * batch[self.unlabelled].data[crop].astype(np.float32)
            outputs[self.lsds_mask] = gp.Array(np.repeat(mask[None], descriptor.shape[0], axis=0), spec.copy())
        return outputs

    def _output_roi(self, request) -> gp.Roi:
        """The ROI to compute: the descriptor's request, or else the LSD mask's."""
        key = self.descriptor if self.descriptor in request else self.lsds_mask
        return request[key].roi
