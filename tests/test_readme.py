"""The READMEs work as written: every command of their ```bash blocks runs, in the order shown, from a copy of the
repository, on a small configuration.

Commands on the synthetic dataset run for real (training a few iterations instead of thousands). Commands that read
the public bucket run against a real S3 server on loopback holding tiny data under the bucket's keys. Commands that
need the paper's data, a GPU or a container runtime are dry-run (``make -n``: the target exists and names a script
that exists). A README command that matches no rule below fails this test, so a new command cannot go unchecked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from s3_server import bucket, moto_endpoint, write_volume  # noqa: F401

READMES = ["README.md", "00_containers/README.md", "02_train/README.md", "03_predict/README.md"]
ITERATIONS = "6"
"""What a README's ``ITERATION=2000`` (synthetic) becomes here."""
SKIPPED = {
    "make demo": "tests/test_demo.py runs the demo (its fast form) and its resume",
    "make test": "this suite",
}
PAPER = r"(zebrafinch|fib25|hemi)"


def readme_commands(path: Path) -> list[str]:
    """The commands of a README's ```bash blocks, in order, without comments."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def how(command: str) -> str:
    """How the walk runs a command: skip, dry, help, serve or run."""
    if command in SKIPPED:
        return "skip"
    if re.search(r"CONTAINER=|^make container|^00_containers/build\.sh|^sbatch ", command):
        return "dry"  # no container runtime or batch system here
    if re.match(rf"^make (train|segment|import-checkpoint|predict-scan|predict) .*{PAPER}", command):
        return "dry"  # the paper's data and a GPU
    if re.match(r"^make (fetch-test-data|fetch-published|reproduce) ", command):
        return "dry"  # the paper's test data (GBs; tests/test_paper_data.py and test_reproduce*.py run them on loopback)
    if re.match(rf"^cd 02_train/{PAPER}/\w+ && python \w+\.py", command):
        return "help"
    if re.match(r"^make (view|view-batch)\b", command) and "--screenshot" not in command:
        return "serve"
    if re.match(r"^(make |python |cd 02_train/synthetic/)", command):
        return "run"
    raise AssertionError(f"README command without a rule in tests/test_readme.py: {command}")


@pytest.fixture
def copy_of_the_repository(tmp_path) -> Path:
    """The repository's files (tracked and new, as git sees them) in a temporary folder, with the same .venv."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    root = tmp_path / "repo"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)  # keeps mtimes: make sees .venv as set up for this pyproject.toml
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


@pytest.fixture
def public_bucket(bucket, tmp_path):  # noqa: F811 - the fixture from s3_server
    """The bucket's layout for what the READMEs fetch: every zebrafinch training volume (tiny), the mtlsd checkpoint
    files, the original images."""
    from lsd_nm.datasets import get_dataset

    for i, volume in enumerate(get_dataset("zebrafinch").volumes):
        write_volume(tmp_path / "upload" / volume, seed=i)
        bucket.upload_tree(tmp_path / "upload" / volume, f"funke/zebrafinch/training/{volume}/")
    prefix = "funke/zebrafinch/training/checkpoints/mtlsd/"
    for suffix in ("index", "data-00000-of-00001", "meta"):
        bucket.put(f"{prefix}train_net_checkpoint_400000.{suffix}", np.random.default_rng(1).bytes(64))
    for image in ("lsd:v0.8.img", "lsd_legacy.img"):
        bucket.put(f"funke/singularity/{image}", b"an image\n")
    return bucket


def test_every_readme_command_runs_as_written_in_order(copy_of_the_repository, public_bucket, tmp_path):
    root = copy_of_the_repository
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a bare `python`: the interpreter the .venv was made from, without the dependencies (scripts must re-run
    # themselves with the repository's .venv)
    (bin_dir / "python").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ENDPOINT_URL": public_bucket.endpoint,
        "LANG": "C.UTF-8", "CI": os.environ.get("CI", ""),
    }  # fmt: skip
    walked = []
    for readme in READMES:
        for command in readme_commands(REPO / readme):
            mode = how(command)
            walked.append((readme, command, mode))
            if mode == "skip":
                continue
            if mode == "dry":
                _dry_run(command, root, env)
            elif mode == "help":
                folder, script = re.match(r"^cd (\S+) && python (\S+)", command).groups()
                done = subprocess.run(["python", script, "--help"], cwd=root / folder, env=env, capture_output=True, text=True)
                assert done.returncode == 0 and done.stdout.startswith("usage: lsd-nm "), (command, done.stderr[-2000:])
            elif mode == "serve":
                _serve(command, root, env)
            else:
                small = command.replace("ITERATION=2000", f"ITERATION={ITERATIONS}").replace("/scratch/", f"{tmp_path}/scratch/")
                done = subprocess.run(small, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=900)
                assert done.returncode == 0, (readme, command, done.stdout[-2000:], done.stderr[-3000:])
    modes = {mode for _, _, mode in walked}
    assert {"run", "dry", "serve", "help", "skip"} <= modes
    # what the tutorial promises, on disk
    assert (root / "view.png").stat().st_size > 1000
    assert (root / "02_train/synthetic/mtlsd/test_prediction.zarr/pred_affs").exists()
    assert (root / "03_predict/out/synthetic_mtlsd.scores.json").exists()
    assert (root / "02_train/zebrafinch/mtlsd/checkpoint").exists()
    assert len(list((root / "01_data/funke/zebrafinch/training").glob("*.zarr"))) == 33


def _dry_run(command: str, root: Path, env: dict) -> None:
    if command.startswith("sbatch "):
        command = re.search(r'--wrap "([^"]+)"', command).group(1)
    if command.startswith("00_containers/build.sh"):
        assert subprocess.run(["bash", "-n", str(root / "00_containers/build.sh")]).returncode == 0
        return
    words = shlex.split(command)
    assert words[0] == "make", command
    done = subprocess.run(["make", "-n", *words[1:]], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (command, done.stderr)
    scripts = re.findall(r"(\S+\.py)\b", done.stdout)
    folder = re.search(r"cd (\S+) &&", done.stdout)
    for script in scripts:
        path = Path(script) if Path(script).is_absolute() else (Path(folder.group(1)) if folder else root) / script
        assert path.exists(), (command, path)


def _serve(command: str, root: Path, env: dict) -> None:
    """Start a viewer command, wait for its URL, stop it with Ctrl-C: it must end cleanly."""
    proc = subprocess.Popen(shlex.split(command), cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        seen = ""
        while "http://" not in seen:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, (command, seen, proc.stderr.read()[-2000:])
            seen += line
            assert time.time() < deadline, (command, seen)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode in (0, 2, 130) or proc.returncode < 0, (command, proc.returncode)
