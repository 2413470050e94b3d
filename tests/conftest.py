"""Shared fixtures: small synthetic datasets in tmp_path."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401 - the one-node Slurm cluster fixture

# a test run started in the background of a non-interactive shell inherits SIGINT ignored, and so would every
# process the tests start: the Ctrl-C tests then wait in vain. A Python handler here is reset to the default in
# children at exec, so they get KeyboardInterrupt as under a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# under `make test` the tests' own `make` calls would run as sub-makes (MAKELEVEL, MAKEFLAGS inherited): their
# messages then read `make[1]: ***` and the flags of the outer call leak in. The tests check what a user sees.
for variable in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR"):
    os.environ.pop(variable, None)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def chromium() -> str:
    """The Chromium of the screenshot tests (``make test`` installs Debian's); missing, the test fails and says so."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("this test needs Chromium on PATH: `apt-get install -y chromium` (make test installs it)")
    return found


@pytest.fixture
def tiny_datasets_file(tmp_path: Path) -> Path:
    """A datasets.json with one small anisotropic and one small isotropic synthetic dataset."""
    recipe = lambda seed, shape, offset=(0, 0, 0): {"seed": seed, "shape": list(shape), "offset": list(offset)}  # noqa: E731
    data = {
        "tiny": {
            "voxel_size": [20, 9, 9],
            "volumes": ["a.zarr", "b.zarr"],
            "test_volumes": ["t.zarr"],
            "synthetic": {
                "a.zarr": recipe(1, (24, 96, 96)),
                "b.zarr": recipe(2, (24, 96, 96)),
                "t.zarr": recipe(3, (24, 96, 96), (200, 90, 90)),
            },
        },
        "real": {"voxel_size": [8, 8, 8], "volumes": ["x.zarr"]},
    }
    path = tmp_path / "datasets.json"
    path.write_text(json.dumps(data))
    return path
