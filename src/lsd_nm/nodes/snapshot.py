"""Snapshot: write training batches to HDF5 files, as the original did (``snapshots/batch_<iteration>.hdf``)."""

from __future__ import annotations

from pathlib import Path

import gunpowder as gp
import numpy as np

from ..data import atomic_path


class Snapshot(gp.BatchFilter):
    """Write the arrays of every ``every``-th batch (iterations 1, every + 1, 2·every + 1, …) to an HDF5 file.

    Each dataset gets the attrs ``offset`` (nm) and ``resolution`` (nm), which ``view_batch`` reads; the file's root
    gets ``iteration`` and ``loss``. Files are written to a temporary name and renamed when complete.

    Args:
        dataset_names (dict): :class:`gunpowder.ArrayKey` → dataset path in the file.
        output_dir (Path): where the files go.
        every (int): snapshot interval in iterations.
        first_iteration (int): the iteration of the first batch that passes (resumed runs start later than 1).
        additional_request (:class:`gunpowder.BatchRequest`, optional): arrays requested only for snapshots
            (predictions, gradients).
        dataset_dtypes (dict, optional): key → dtype to store the array as.
    """

    def __init__(
        self,
        dataset_names: dict[gp.ArrayKey, str],
        output_dir: Path,
        every: int,
        first_iteration: int = 1,
        additional_request: gp.BatchRequest | None = None,
        dataset_dtypes: dict | None = None,
    ):
        self.dataset_names = dataset_names
        self.output_dir = Path(output_dir)
        self.every = max(1, every)
        self.next_iteration = first_iteration
        self.additional_request = additional_request or gp.BatchRequest()
        self.dataset_dtypes = dataset_dtypes or {}
        self.record = False

    def prepare(self, request):
        self.record = (self.next_iteration - 1) % self.every == 0
        self.next_iteration += 1
        deps = gp.BatchRequest()
        for key, spec in request.array_specs.items():
            deps[key] = spec.copy()
        if self.record:
            for key, spec in self.additional_request.array_specs.items():
                if key not in deps:
                    deps[key] = spec.copy()
        return deps

    def process(self, batch, request):
        if not self.record:
            return
        import h5py

        self.output_dir.mkdir(parents=True, exist_ok=True)
        iteration = int(batch.iteration or self.next_iteration - 1)
        path = self.output_dir / f"batch_{iteration}.hdf"
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["iteration"] = iteration
            if batch.loss is not None:
                f.attrs["loss"] = float(batch.loss)
            for key, name in self.dataset_names.items():
                if key not in batch.arrays:
                    continue
                array = batch.arrays[key]
                data = array.data.astype(self.dataset_dtypes[key]) if key in self.dataset_dtypes else array.data
                dataset = f.create_dataset(name, data=np.asarray(data), compression="gzip")
                dataset.attrs["offset"] = tuple(int(v) for v in array.spec.roi.offset)
                dataset.attrs["resolution"] = tuple(int(v) for v in array.spec.voxel_size)
        # arrays that only the snapshot asked for do not travel further
        for key in list(batch.arrays):
            if key not in request:
                del batch.arrays[key]
