"""gunpowder's ``ZarrSource`` whose read errors name the volume, the array and the chunk that cannot be decoded."""

from __future__ import annotations

from pathlib import Path

import gunpowder as gp
import zarr

from ..config import ConfigError
from ..data import damage_hint, damaged_chunk


class ZarrSource(gp.ZarrSource):
    """:class:`gunpowder.ZarrSource` (same arguments, and ``role``: how a message names the volume, e.g.
    ``"training volume"``); a damaged chunk stops with a one-line :class:`~lsd_nm.config.ConfigError` naming the
    container, the dataset and the chunk, instead of a codec's traceback from a PreCache worker."""

    def __init__(self, *args, role: str = "volume", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.role = role

    def provide(self, request):
        try:
            return super().provide(request)
        except Exception as error:
            for key, spec in request.array_specs.items():
                if key not in self.datasets:
                    continue
                voxel_size = self.spec[key].voxel_size
                begin = (spec.roi.begin - self.spec[key].roi.offset) / voxel_size
                end = (spec.roi.end - self.spec[key].roi.offset) / voxel_size
                array = zarr.open_array(Path(self.store) / self.datasets[key], mode="r")
                found = damaged_chunk(array, tuple(slice(b, e) for b, e in zip(begin, end)))
                if found is not None:
                    index, reason = found
                    name = array.metadata.encode_chunk_key(index) if hasattr(array.metadata, "encode_chunk_key") else index
                    raise ConfigError(
                        f"{self.role} {self.store}: {self.datasets[key]} chunk {name} cannot be decoded ({reason}); "
                        f"{damage_hint(Path(self.store) / self.datasets[key])}"
                    ) from error
            raise
