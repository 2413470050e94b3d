"""00_containers/: the image definition's structure, what build.sh and the Makefile run, and download_imgs.py.

No image can be built here (no Singularity/Apptainer): a stand-in `singularity` records what it is asked to do.
"""

import os
import re
import subprocess
import tomllib

import pytest
from s3_server import REPO, bucket, files_under, moto_endpoint, run_script  # noqa: F401

DEFINITION = REPO / "00_containers/lsd_nm.def"
BUILD = REPO / "00_containers/build.sh"
FAKE_SINGULARITY = """#!/bin/bash
# records its working directory and arguments; writes the image it is asked to build (the argument before the .def)
printf '%s\\n' "$PWD" "$@" > "$FAKE_LOG"
if [ "${FAKE_FAIL:-}" = 1 ]; then echo "FATAL: build failed" >&2; exit 255; fi
echo image > "${@: -2:1}"
"""


def sections(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A definition file's header (``Key: value``) and its ``%sections`` (stripped lines, comments dropped)."""
    header, body, current = {}, {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line.startswith("%"):
            current = line[1:].strip()
            body[current] = []
        elif current is None:
            key, value = stripped.split(":", 1)
            header[key.strip()] = value.strip()
        else:
            body[current].append(stripped)
    return header, body


def test_definition_builds_this_repository_with_gpu_tensorflow():
    header, body = sections(DEFINITION.read_text())
    assert header == {"Bootstrap": "docker", "From": "ubuntu:24.04"}  # its Python is 3.12
    assert set(body) == {"labels", "help", "files", "post", "environment", "runscript", "test"}
    files = dict(line.split() for line in body["files"])
    assert files == {"pyproject.toml": "/opt/lsd_nm/pyproject.toml", "README.md": "/opt/lsd_nm/README.md", "src": "/opt/lsd_nm/src"}
    assert all((REPO / source).exists() for source in files)  # paths relative to the root, where build.sh runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.12"
    assert pyproject["project"]["readme"] == "README.md"  # setuptools needs it: copied
    assert any(dep.startswith("tensorflow[and-cuda]") for dep in pyproject["project"]["optional-dependencies"]["gpu"])
    post = body["post"]
    assert "python3.12 -m venv /opt/venv" in post
    assert 'apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev build-essential ca-certificates git' in post
    assert post[-1] == '/opt/venv/bin/pip install --no-cache-dir "/opt/lsd_nm[gpu]"'
    # `exec` finds the environment (the Makefile's default CONTAINER_MODE), not only `run`
    assert "export PATH=/opt/venv/bin:$PATH" in body["environment"]
    assert body["runscript"] == ['exec python "$@"']
    assert "import lsd_nm, gunpowder, daisy, tensorflow as tf" in body["test"][0]


@pytest.fixture
def fake_runtime(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("singularity", "apptainer"):
        (bin_dir / name).write_text(FAKE_SINGULARITY)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "log")}
    env.pop("BUILD_FLAGS", None)
    env.pop("SINGULARITY", None)
    return env


def test_build_sh_builds_from_the_repository_root_and_renames_when_done(fake_runtime, tmp_path):
    out = tmp_path / "images" / "lsd_nm.sif"
    out.parent.mkdir()
    out.write_text("old image")
    result = subprocess.run([str(BUILD), str(out)], capture_output=True, text=True, env=fake_runtime, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"
    flags = [] if os.geteuid() == 0 else ["--fakeroot"]
    assert (tmp_path / "log").read_text().splitlines() == [str(REPO), "build", *flags, f"{out}.partial", "00_containers/lsd_nm.def"]
    assert out.read_text() == "image\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["lsd_nm.sif"]


def test_build_sh_with_apptainer_and_flags(fake_runtime, tmp_path):
    out = tmp_path / "x.sif"
    env = {**fake_runtime, "SINGULARITY": "apptainer", "BUILD_FLAGS": "--fakeroot --force"}
    result = subprocess.run([str(BUILD), str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log").read_text().splitlines()[1:] == ["build", "--fakeroot", "--force", f"{out}.partial", "00_containers/lsd_nm.def"]


def test_a_failed_build_keeps_the_old_image(fake_runtime, tmp_path):
    out = tmp_path / "lsd_nm.sif"
    out.write_text("old image")
    result = subprocess.run([str(BUILD), str(out)], capture_output=True, text=True, env={**fake_runtime, "FAKE_FAIL": "1"})
    assert result.returncode == 255
    assert out.read_text() == "old image"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".sif", ".partial")) == ["lsd_nm.sif"]


def test_build_sh_without_a_runtime(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SINGULARITY": "no-such-singularity", "HOME": str(tmp_path)}
    result = subprocess.run([str(BUILD), str(tmp_path / "x.sif")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr == "error: 'no-such-singularity' not found (install Apptainer or Singularity, or pass SINGULARITY=apptainer)\n"


def test_make_container_runs_build_sh(fake_runtime, tmp_path):
    """`make container` must run build.sh itself: through $(RUN) (Python) a shell script cannot run."""
    out = tmp_path / "made.sif"
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "container", f"ARGS={out}"], capture_output=True, text=True, env=fake_runtime
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "image\n"


def test_make_runs_the_data_steps_in_the_image():
    out = subprocess.run(
        ["make", "-n", "-C", str(REPO), "fetch-data", "DATASET=zebrafinch", "ALL=1", "CONTAINER=lsd_nm.sif"],
        capture_output=True, text=True, check=True,
    ).stdout
    command = f"singularity exec --nv --bind {REPO} lsd_nm.sif python {REPO}/01_data/fetch_data.py --dataset zebrafinch"
    assert re.search(re.escape(command) + r" +--all *$", out, re.MULTILINE), out
    out = subprocess.run(
        ["make", "-n", "-C", str(REPO), "masks", "CONTAINER=lsd_nm.sif", "SINGULARITY=apptainer", "CONTAINER_MODE=run"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert f"apptainer run --nv --bind {REPO} lsd_nm.sif python {REPO}/01_data/create_masks.py" in out


def test_download_imgs(bucket, tmp_path):
    image = os.urandom(6 * 1024 * 1024)
    etag = bucket.put_multipart("funke/singularity/lsd:v0.8.img", image)
    assert re.fullmatch(r"[0-9a-f]{32}-2", etag)  # a multipart upload: checked by size
    bucket.put("funke/singularity/lsd_legacy.img", b"legacy")
    out = tmp_path / "images"
    result = run_script("00_containers/download_imgs.py", "--endpoint-url", bucket.endpoint, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(out / "lsd:v0.8.img")
    assert files_under(out) == {"lsd:v0.8.img": image}
    result = run_script("00_containers/download_imgs.py", "--all", "--endpoint-url", bucket.endpoint, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert files_under(out) == {"lsd:v0.8.img": image, "lsd_legacy.img": b"legacy"}
    assert result.stdout.splitlines()[-1].startswith("fetched 1 object (6 bytes = 6 B, 0 resumed); skipped 1 complete object (6291456 bytes)")


def test_download_imgs_errors(bucket, tmp_path):
    result = run_script("00_containers/download_imgs.py", "--image", "lsd:v0.9.img", "--endpoint-url", bucket.endpoint, "--out", str(tmp_path / "o"))
    assert (result.returncode, result.stderr) == (2, "error: unknown image 'lsd:v0.9.img' (expected one of: lsd:v0.8.img, lsd_legacy.img)\n")
    result = run_script("00_containers/download_imgs.py", "--endpoint-url", bucket.endpoint, "--out", str(tmp_path / "o"))
    assert (result.returncode, result.stderr) == (2, f"error: s3://open-neurodata/funke/singularity/lsd:v0.8.img: not found at {bucket.endpoint}\n")
    assert not (tmp_path / "o").exists()
