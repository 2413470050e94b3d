"""The Makefile: the container switch, the parameter names, help, and finding Python."""

import os
import subprocess

import pytest
from conftest import REPO


def make_n(*args: str) -> str:
    result = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, check=True)
    return result.stdout


def test_default_runs_the_venv_python():
    out = make_n("synthetic")
    assert f"{REPO}/.venv/bin/python {REPO}/01_data/make_synthetic.py --dataset synthetic" in out
    assert "singularity" not in out


def test_container_exec_with_gpu_and_repo_bound():
    out = make_n("synthetic", "CONTAINER=/images/lsd.sif")
    assert f"singularity exec --nv --bind {REPO} /images/lsd.sif python {REPO}/01_data/make_synthetic.py" in out
    assert ".venv/bin/python" not in out


def test_container_run_mode():
    out = make_n("synthetic", "CONTAINER=lsd.img", "CONTAINER_MODE=run")
    assert f"singularity run --nv --bind {REPO} lsd.img python " in out


def test_apptainer():
    out = make_n("synthetic", "CONTAINER=lsd.sif", "SINGULARITY=apptainer")
    assert f"apptainer exec --nv --bind {REPO} lsd.sif python " in out


def test_network_steps_run_inside_the_network_folder(tmp_path):
    # a network folder that exists only for this test would touch the repo: use one that is committed if present
    folders = sorted(p for p in (REPO / "02_train").glob("*/*") if (p / "train.py").exists()) if (REPO / "02_train").exists() else []
    if not folders:
        result = subprocess.run(
            ["make", "-C", str(REPO), "train", "DATASET=nowhere", "NETWORK=none"], capture_output=True, text=True
        )
        assert result.returncode != 0
        assert "no network folder 02_train/nowhere/none" in result.stderr
        return
    folder = folders[0]
    dataset, network = folder.parent.name, folder.name
    out = make_n("train", f"DATASET={dataset}", f"NETWORK={network}", "ITERATION=400001", "CONTAINER=x.sif")
    assert f"cd {folder} && singularity exec --nv --bind {REPO} x.sif python train.py 400001" in out


def test_help_lists_every_step():
    out = subprocess.run(["make", "-C", str(REPO), "help"], capture_output=True, text=True, check=True).stdout
    for target in ("setup", "test", "demo", "synthetic", "fetch-data", "masks", "view", "fetch-checkpoint", "container",
                   "mknet", "train", "view-batch", "predict-scan", "predict", "segment", "evaluate", "clean-data", "fetch-test-data",
                   "fetch-published", "reproduce"):
        assert f"\n  {target} " in out, target


def test_setup_is_up_to_date_after_setup():
    """`make test` ran setup before this suite: a second setup has nothing to do."""
    result = subprocess.run(["make", "-q", "-C", str(REPO), "setup"], capture_output=True, text=True)
    assert result.returncode == 0


@pytest.mark.parametrize("mode", ["empty PATH", "no python >= 3.12"])
def test_find_python_fails_with_one_line(tmp_path, mode):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if mode == "no python >= 3.12":
        fake = bin_dir / "python3"
        fake.write_text("#!/bin/sh\nexit 1\n")  # answers like a Python < 3.12 or a pyenv shim that fails
        fake.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    result = subprocess.run(["/bin/bash", str(REPO / ".ci" / "find-python")], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: no Python >= 3.12 found on PATH or through pyenv; install one or pass PYTHON=/path/to/python3.12\n"
    )


def test_find_python_finds_a_python_312():
    result = subprocess.run([str(REPO / ".ci" / "find-python")], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0
    version = subprocess.run([result.stdout.strip(), "-c", "import sys; print(sys.version_info >= (3, 12))"],
                             capture_output=True, text=True).stdout
    assert version.strip() == "True"


def test_synthetic_of_a_real_dataset_is_a_one_line_error():
    """`make synthetic DATASET=zebrafinch` once generated `synthetic` and exited 0 (the Makefile rewrote the name)."""
    result = subprocess.run(["make", "-s", "-C", str(REPO), "synthetic", "DATASET=zebrafinch"], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "error: dataset 'zebrafinch' is not synthetic: fetch it with `make fetch-data DATASET=zebrafinch`"
    )


def test_view_batch_defaults_to_the_newest_snapshot():
    """The Makefile's ITERATION default `latest` is not passed on (view_batch.py takes no `latest`: no ITERATION is the
    newest)."""
    out = make_n("view-batch", "DATASET=synthetic", "NETWORK=mtlsd")
    line = next(line for line in out.splitlines() if "view_batch.py" in line)
    assert line.split() == ["cd", f"{REPO}/02_train/synthetic/mtlsd", "&&", f"{REPO}/.venv/bin/python", "view_batch.py"]
    assert "view_batch.py 300" in make_n("view-batch", "DATASET=synthetic", "NETWORK=mtlsd", "ITERATION=300")


@pytest.mark.parametrize("target", ["predict", "segment", "evaluate"])
def test_a_config_path_with_spaces_reaches_the_step_whole(tmp_path, target):
    """Before: `make segment CONFIG="my runs/x.json"` passed two arguments, and argparse refused the second."""
    config = tmp_path / "my runs" / "x.json"
    result = subprocess.run(["make", "-s", "-C", str(REPO), target, f"CONFIG={config}"], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"error: {config}: file not found" in result.stderr.splitlines(), result.stderr
    assert "unrecognized arguments" not in result.stderr
