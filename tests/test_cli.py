"""The command line: every script answers a bad argument with one line and exit code 2, and runs with any `python`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from lsd_nm.cli import build_parser

SCRIPTS = {
    "00_containers/download_imgs.py": "images",
    "01_data/create_masks.py": "create-masks",
    "01_data/fetch_checkpoint.py": "fetch-checkpoint",
    "01_data/fetch_data.py": "fetch-data",
    "01_data/fetch_published.py": "fetch-published",
    "01_data/fetch_test_data.py": "fetch-test-data",
    "01_data/make_synthetic.py": "synthetic",
    "01_data/new_dataset.py": "new-dataset",
    "01_data/view_data.py": "view",
    "03_predict/01_predict_blockwise.py": "predict",
    "03_predict/02_extract_fragments.py": "extract-fragments",
    "03_predict/03_agglomerate.py": "agglomerate",
    "03_predict/04_find_segments.py": "find-segments",
    "03_predict/05_extract_segmentation.py": "extract-segmentation",
    "03_predict/06_evaluate.py": "evaluate",
    "03_predict/07_reproduce.py": "reproduce",
    "03_predict/segment.py": "segment",
    "03_predict/status.py": "status",
    **{f"02_train/synthetic/mtlsd/{name}.py": name.replace("_", "-") for name in ("mknet", "train", "predict_scan", "predict", "view_batch")},
}  # fmt: skip
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"
"""The interpreter the .venv was made from: it has none of the dependencies."""


def test_every_script_is_a_subcommand_and_every_tutorial_step_has_one():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert set(SCRIPTS.values()) <= commands
    assert commands == set(SCRIPTS.values()) | {"demo", "import-checkpoint"}
    scripts = {str(p.relative_to(REPO)) for p in (REPO / "00_containers").glob("*.py")}
    scripts |= {str(p.relative_to(REPO)) for folder in ("01_data", "03_predict") for p in (REPO / folder).glob("*.py")}
    assert scripts == {s for s in SCRIPTS if not s.startswith("02_train")}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_bad_argument_is_one_line_and_exit_2(script):
    done = subprocess.run([sys.executable, str(REPO / script), "--no-such-flag"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: lsd-nm {SCRIPTS[script]}: "), done.stderr


def test_a_script_started_with_another_python_runs_with_the_repository_venv(tmp_path):
    """`python train.py …` outside the .venv once failed with `No module named 'dask'`: scripts re-run themselves."""
    if not (REPO / ".venv/bin/python").exists():
        pytest.fail("this test needs the repository's .venv (make setup)")
    assert subprocess.run([str(BASE_PYTHON), "-c", "import gunpowder"], capture_output=True).returncode != 0
    script = REPO / "02_train/synthetic/baseline/mknet.py"
    done = subprocess.run([str(BASE_PYTHON), str(script), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: lsd-nm mknet")
    # and a bad config is a one-line error from the .venv's Python too
    bad = tmp_path / "run.json"
    bad.write_text('{"raw_file": "x.zarr"}')
    done = subprocess.run([str(BASE_PYTHON), str(REPO / "03_predict/06_evaluate.py"), str(bad)], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2, f"error: {bad}: missing key 'out_file'\n")


def test_without_the_environment_the_advice_is_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LSD_NM_NO_VENV": "1"}
    done = subprocess.run(
        [str(BASE_PYTHON), str(REPO / "03_predict/segment.py"), "x.json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: the environment is not set up for {BASE_PYTHON}") and done.stderr.count("\n") == 1
    assert "make setup" in done.stderr


def test_the_network_folders_predict_py_predicts_with_its_own_folder(tmp_path):
    """`python predict.py RUN.json` in a network folder is step 1 with that folder's network (whatever `setup` says)."""
    import shutil

    from lsd_nm.data import RAW, write_container

    train = tmp_path / "02_train/synthetic"
    for name in ("baseline", "lsd"):
        (train / name).mkdir(parents=True)
        shutil.copy(REPO / "02_train/synthetic" / name / "config.json", train / name)
    shutil.copy(REPO / "02_train/synthetic/config.json", train)
    shutil.copy(REPO / "02_train/synthetic/lsd/predict.py", train / "lsd")
    write_container(tmp_path / "raw.zarr", {RAW: __import__("numpy").zeros((8, 8, 8), "uint8")}, (20, 9, 9), (0, 0, 0))
    config = tmp_path / "run.json"
    config.write_text(
        '{"setup": "%s", "raw_file": "%s", "out_file": "%s", "roi_offset": [0, 0, 0], "roi_shape": [20, 9, 9]}'
        % (train / "baseline", tmp_path / "raw.zarr", tmp_path / "o.zarr")
    )
    done = subprocess.run([sys.executable, "predict.py", str(config)], capture_output=True, text=True, cwd=train / "lsd")
    assert done.returncode == 2
    # the lsd folder's checkpoints are looked for, not the baseline's of the config
    assert done.stderr.startswith(f"error: {train / 'lsd'}: no checkpoint for iteration latest (found: none)"), done.stderr


TENSORFLOW_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796218388.749787    5951 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
    "I0000 00:00:1796218389.307958    5951 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.\n"
)
"""What ``import tensorflow`` 2.21 wrote, twice, on a CPU with AVX-512 (on another CPU it wrote nothing)."""


def test_tensorflows_start_up_lines_are_hidden_and_other_output_is_kept(tmp_path):
    """The start-up lines come from C++, on file descriptor 2: a stand-in ``tensorflow`` package writes them there
    (CPUs differ in what the real one writes), with a line of its own that must be kept."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    written = (TENSORFLOW_NOISE + "a warning of its own\n" + TENSORFLOW_NOISE).encode()
    (package / "__init__.py").write_text(f"import os\nos.write(2, {written!r})\n")
    code = "import sys; {}import tensorflow; sys.stderr.write('mine\\n')"
    hide = "from lsd_nm.tensorflow_logs import hide_import_noise; hide_import_noise(); "
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    plain = subprocess.run([sys.executable, "-c", code.format("")], capture_output=True, text=True, env=env)
    assert (plain.returncode, plain.stderr) == (0, written.decode() + "mine\n")
    quiet = subprocess.run([sys.executable, "-c", code.format(hide)], capture_output=True, text=True, env=env)
    assert (quiet.returncode, quiet.stderr) == (0, "a warning of its own\nmine\n")
    # and the real one, whatever this CPU makes it write
    real = subprocess.run([sys.executable, "-c", code.format(hide)], capture_output=True, text=True)
    assert (real.returncode, real.stderr) == (0, "mine\n")
