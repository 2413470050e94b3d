"""Shared fixtures: small synthetic datasets in tmp_path."""

import json
import os
import re
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
# messages then read `make[1]: ***`, and the variables of the outer command line (`make test ARGS=…`, which make
# exports to its recipes) leak in. The tests check what a user sees.
_overrides = os.environ.get("MAKEFLAGS", "").partition(" -- ")[2]
for variable in re.findall(r"(?:^|(?<!\\) )([A-Za-z_]\w*)=", _overrides):
    os.environ.pop(variable, None)
for variable in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR"):
    os.environ.pop(variable, None)

REPO = Path(__file__).resolve().parents[1]


# the longest files first: `make test` runs the files on two workers (pytest-xdist, --dist loadfile), and a long file
# started last would leave one worker idle at the end
LONGEST_FIRST = ("test_demo.py", "test_readme.py", "test_train.py", "test_segment.py", "test_slurm.py",
                 "test_predict_blockwise.py", "test_reproduce.py", "test_skeleton_evaluation.py", "test_evaluate.py",
                 "test_cli.py", "test_predict.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file is kept


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
