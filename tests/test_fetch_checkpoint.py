"""01_data/fetch_checkpoint.py: the published TF1 checkpoints, ready to use, with the iteration that is really there."""

import json
import os
import subprocess
import sys

import pytest
from s3_server import REPO, bucket, files_under, moto_endpoint, run_script  # noqa: F401

from lsd_nm.tf1 import TF1Checkpoint, complete_checkpoints, find_tf1_checkpoints, latest_tf1_checkpoint

PREFIX = "funke/zebrafinch/training/checkpoints/baseline/"
# what the bucket's state file says: an absolute path on the authors' cluster, and an iteration never published
PUBLISHED_STATE = (
    'model_checkpoint_path: "/nrs/funke/lsd/zebrafinch/baseline/train_net_checkpoint_500000"\n'
    'all_model_checkpoint_paths: "/nrs/funke/lsd/zebrafinch/baseline/train_net_checkpoint_500000"\n'
)
WRITE_TF1 = """
import sys
import numpy as np
import tensorflow as tf

with tf.Graph().as_default():
    tf.compat.v1.get_variable("setup01/affs_0/bias", initializer=tf.constant([0.25, 0.5, 0.75]))
    tf.compat.v1.get_variable("setup01/affs_0/kernel", initializer=tf.constant(np.arange(6, dtype=np.float32).reshape(1, 1, 1, 2, 3)))
    tf.compat.v1.get_variable("gunpowder/iteration", initializer=tf.constant([400000.0]))
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, sys.argv[1])
"""
READ_TF1 = """
import json, sys
import tensorflow as tf

prefix = tf.train.latest_checkpoint(sys.argv[1])
reader = tf.train.load_checkpoint(prefix)
print(json.dumps({"prefix": prefix, "bias": reader.get_tensor("setup01/affs_0/bias").tolist()}))
"""


def tensorflow(script: str, *args: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def tf1_files(tmp_path_factory) -> dict[str, bytes]:
    """A real TF1 checkpoint (TensorFlow's own writer) of iteration 400000: file name → bytes."""
    folder = tmp_path_factory.mktemp("tf1")
    tensorflow(WRITE_TF1, str(folder / "train_net_checkpoint_400000"))
    files = {name: data for name, data in files_under(folder).items() if name != "checkpoint"}
    assert sorted(files) == [
        "train_net_checkpoint_400000.data-00000-of-00001",
        "train_net_checkpoint_400000.index",
        "train_net_checkpoint_400000.meta",
    ]
    return files


@pytest.fixture
def published(bucket, tf1_files):
    for name, data in tf1_files.items():
        bucket.put(PREFIX + name, data)
    bucket.put(PREFIX + "checkpoint", PUBLISHED_STATE.encode())
    return bucket


def test_the_folder_is_ready_with_the_published_iteration(published, tf1_files, tmp_path):
    out = tmp_path / "02_train/zebrafinch/baseline"
    args = ("--dataset", "zebrafinch", "--network", "baseline", "--endpoint-url", published.endpoint, "--out", str(out))
    result = run_script("01_data/fetch_checkpoint.py", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"iteration 400000: {out}/train_net_checkpoint_400000 "
        "(the bucket's state file names train_net_checkpoint_500000, which is not there: ignored)"
    )
    state = 'model_checkpoint_path: "train_net_checkpoint_400000"\nall_model_checkpoint_paths: "train_net_checkpoint_400000"\n'
    assert files_under(out) == {**tf1_files, "checkpoint": state.encode()}
    assert latest_tf1_checkpoint(out) == TF1Checkpoint(400000, out / "train_net_checkpoint_400000")
    # TensorFlow's own reader follows the state file to the weights, with no hand edit
    read = json.loads(tensorflow(READ_TF1, str(out)))
    assert read == {"prefix": str(out / "train_net_checkpoint_400000"), "bias": [0.25, 0.5, 0.75]}

    again = run_script("01_data/fetch_checkpoint.py", *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].startswith("fetched 0 objects (0 bytes = 0 B, 0 resumed); skipped 3 complete objects (")
    assert files_under(out) == {**tf1_files, "checkpoint": state.encode()}


def test_make_fetch_checkpoint(published, tf1_files, tmp_path):
    out = tmp_path / "baseline"
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "fetch-checkpoint", "ENV_READY=", "DATASET=zebrafinch", "NETWORK=baseline",
         f"ARGS=--endpoint-url {published.endpoint} --out {out}"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert set(files_under(out)) == {*tf1_files, "checkpoint"}


def test_complete_checkpoints_need_the_index_and_every_shard(tmp_path):
    names = [
        "train_net_checkpoint_100.index", "train_net_checkpoint_100.data-00000-of-00001",
        "train_net_checkpoint_200.index",  # no data
        "train_net_checkpoint_300.index", "train_net_checkpoint_300.data-00001-of-00002",  # a shard missing
        "train_net_checkpoint_400.index", "train_net_checkpoint_400.data-00000-of-00002", "train_net_checkpoint_400.data-00001-of-00002",
        "train_net_checkpoint_500.data-00000-of-00001",  # no index
        "train_net_checkpoint_40.meta", "checkpoint",
    ]
    assert complete_checkpoints(names) == [(100, "train_net_checkpoint_100"), (400, "train_net_checkpoint_400")]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert find_tf1_checkpoints(tmp_path) == [
        TF1Checkpoint(100, tmp_path / "train_net_checkpoint_100"),
        TF1Checkpoint(400, tmp_path / "train_net_checkpoint_400"),
    ]
    assert latest_tf1_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--network", "unet"], "unknown network 'unet' (expected one of: baseline, lsd, mtlsd, aclsd, acrlsd, long_range, malis)"),
        (["--dataset", "synthetic"], "no published checkpoints for the generated dataset 'synthetic' (expected one of: zebrafinch, fib25, hemi)"),
        (["--dataset", "fib25"], "no objects under s3://open-neurodata/funke/fib25/training/checkpoints/baseline/ at {endpoint}"),
        (["--network", "lsd"], "no complete TF1 checkpoint (<name>_checkpoint_<N>.index + .data-*) under "
                               "s3://open-neurodata/funke/zebrafinch/training/checkpoints/lsd/"),
    ],
)
def test_errors_are_one_line_and_write_nothing(published, tf1_files, tmp_path, args, message):
    # lsd has a state file and an index, but no data
    published.put("funke/zebrafinch/training/checkpoints/lsd/checkpoint", PUBLISHED_STATE.encode())
    published.put("funke/zebrafinch/training/checkpoints/lsd/train_net_checkpoint_400000.index", tf1_files["train_net_checkpoint_400000.index"])
    options = {"--dataset": "zebrafinch", "--network": "baseline"}
    options.update(dict(zip(args[::2], args[1::2])))
    out = tmp_path / "net"
    result = run_script(
        "01_data/fetch_checkpoint.py", *[x for kv in options.items() for x in kv], "--endpoint-url", published.endpoint, "--out", str(out)
    )
    assert result.returncode == 2
    assert result.stderr == f"error: {message.format(endpoint=published.endpoint)}\n"
    assert not out.exists()
