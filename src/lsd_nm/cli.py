"""The ``lsd-nm`` command line: one subcommand per step of the tutorial. Every numbered script and network-folder
script calls :func:`main`; nothing in the package imports this module.

Run: ``lsd-nm --help`` (or ``python -m lsd_nm --help``); ``lsd-nm <command> --help`` for one step.

Errors: a bad argument, a bad config or missing input is one line on stderr (``error: …``) and exit code 2, before
any work starts; the package raises :class:`~lsd_nm.config.ConfigError` and only this module formats it. The heavy
modules (TensorFlow, gunpowder, daisy) are imported by the subcommand that needs them, so ``--help`` and argument
errors answer at once. Each subcommand is one call into the module whose concept it is (:func:`dispatch`), which
returns the lines to print.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import get_args

from . import REPO_ROOT
from .config import user_error
from .experiment import NetworkType, load_network_folder
from .steps import AGGLOMERATE, EVALUATE, EXTRACT_FRAGMENTS, EXTRACT_SEGMENTATION, FIND_SEGMENTS, PREDICT, STEPS
from .s3 import BUCKET, DEFAULT_JOBS, IMAGES
from .tensorflow_logs import hide_import_noise

NETWORK_FOLDER_HELP = "network folder, e.g. 02_train/zebrafinch/mtlsd"
RUN_CONFIG_HELP = "the run's JSON config (see 03_predict/README.md)"
DATA_DIR_HELP = "data folder (default: 01_data/)"


def positive_int(noun: str = "") -> Callable[[str], int]:
    """An argparse type: an integer ≥ 1 (``noun`` names it in the error, e.g. ``iteration``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer{' ' + noun if noun else ''}, got '{text}'") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected {'an ' + noun if noun else 'an integer'} ≥ 1, got {value}")
        return value

    return parse


def iteration_or_latest(text: str) -> int | str:
    """An argparse type: a checkpoint iteration, or ``latest``."""
    if text == "latest":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'latest', got '{text}'") from None


def lsd_channels(text: str) -> tuple[int, int, int]:
    """An argparse type: three LSD channels shown as red, green and blue."""
    from .view_batch import parse_lsd_channels

    try:
        return parse_lsd_channels(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _picked(args: argparse.Namespace, names: str) -> dict:
    """The arguments ``names`` (space-separated) of ``args``, as keyword arguments."""
    return {name: getattr(args, name) for name in names.split()}


def dispatch(args: argparse.Namespace) -> Iterable[object] | None:
    """Run the subcommand of ``args``: one call into the module whose concept it is, imported here (the heavy modules
    load only for their command). Returns the lines to print, or None."""
    a = args
    transfer = dict(bucket=a.bucket, endpoint_url=a.endpoint_url, out=a.out, jobs=a.jobs) if "bucket" in a else {}
    match a.command:
        case "demo":
            from .demo import run_demo
            run_demo(a.out, a.networks, a.fast)
        case "synthetic":
            from .synthetic import make_synthetic_lines
            return make_synthetic_lines(a.dataset, a.out, a.workers, a.force, a.png)
        case "new-dataset":
            from .new_dataset import new_dataset
            return new_dataset(a.name, a.train, **_picked(a, "test raw_dataset labels_dataset mask_dataset voxel_size force rescale root data_dir")).lines()
        case "fetch-data":
            from .s3 import fetch_data, transfer_lines
            return transfer_lines(*fetch_data(a.dataset, a.volume, a.all, **transfer))
        case "fetch-test-data":
            from .paper_data import fetch_test_data
            return fetch_test_data(a.dataset, a.roi, a.network, a.context, a.raw_url, a.fill_missing, a.rois, **transfer)
        case "fetch-published":
            from .paper_data import fetch_published_runs, published_lines
            options = _picked(a, "run merge_function skeletons all_supervoxels supervoxels_dataset")
            return published_lines(*fetch_published_runs(a.dataset, a.network, **options, **transfer))
        case "images":
            from .s3 import download_images, transfer_lines
            return transfer_lines(*download_images(a.image, a.all, **transfer))
        case "create-masks":
            from .masks import create_masks
            return [result.line() for result in create_masks(a.data_dir, a.dataset, a.force)]
        case "view":
            from .view import view
            view(a.data, _viewer_options(a))
        case "fetch-checkpoint":
            from .tf1 import fetch_checkpoint, fetched_checkpoint_lines
            return fetched_checkpoint_lines(*fetch_checkpoint(a.dataset, a.network, **transfer))
        case "import-checkpoint":
            from .tf1 import import_checkpoint_line
            return [import_checkpoint_line(load_network_folder(a.folder), a.iteration, a.scope)]
        case "mknet":
            from .networks import mknet_lines
            return mknet_lines(load_network_folder(a.folder), a.folder)
        case "train":
            from .train import train
            return [f"trained until iteration {train(load_network_folder(a.folder), a.iteration, device=a.device, seed=a.seed)}"]
        case "view-batch":
            from .view_batch import view_batch
            view_batch(Path(a.folder), a.iteration, Path(a.file) if a.file else None, a.lsd_channels, _viewer_options(a))
        case "predict-scan":
            from .predict import predict_scan
            iteration = next((i for i in (a.iteration, a.positional_iteration) if i is not None), "latest")
            options = _picked(a, "raw_file raw_dataset out_file lsds_on_the_fly device overwrite")
            return [f"wrote {predict_scan(load_network_folder(a.folder), iteration, **options)}"]
        case "segment":
            from .segment import segment_lines
            return segment_lines(a.config, a.overwrite, a.start)
        case "status":
            from .run_config import load_run_config
            from .status import status_lines
            return status_lines(load_run_config(a.config), a.json)
        case "reproduce":
            from .reproduce import reproduce, result_lines
            options = _picked(a, "name min_cut rois data_dir progress threshold_rule threshold_roi")
            return result_lines(reproduce(a.dataset, a.network, configs=a.config, thresholds=tuple(a.thresholds), out_dir=a.out,
                                          threshold_masked=not a.threshold_unmasked, **options))  # fmt: skip
        case _:  # a step of a run config
            from .run_config import load_predict_config, load_run_config
            from .segment import run_step, step_lines
            config = load_predict_config(a.paths) if a.step is PREDICT else load_run_config(a.config)
            return step_lines(a.step, run_step(config, a.step, getattr(a, "overwrite", False)))
    return None


def _viewer_options(args: argparse.Namespace):
    from .view import ViewerOptions

    return ViewerOptions(args.bind_address, args.port, args.screenshot, tuple(args.size), args.chromium, args.timeout)


def _add_viewer_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind-address", "-b", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="OUT.png", help="write a PNG of the view and exit")
    parser.add_argument("--size", type=positive_int("size"), nargs=2, default=(800, 600), metavar=("WIDTH", "HEIGHT"),
                        help="screenshot size (default: 800 600)")  # fmt: skip
    parser.add_argument("--chromium", default=None, help="Chromium executable for --screenshot (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the screenshot (default: 120)")


def _add_transfer_args(parser: argparse.ArgumentParser, out_help: str = DATA_DIR_HELP) -> None:
    parser.add_argument("--out", type=Path, default=None, help=out_help)
    parser.add_argument("--bucket", default=BUCKET, help=f"the bucket (default: {BUCKET})")
    parser.add_argument("--endpoint-url", default=None, help="an S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS)")
    parser.add_argument("--jobs", type=positive_int(), default=DEFAULT_JOBS, help=f"objects transferred in parallel (default: {DEFAULT_JOBS})")


def _add_run_config_args(parser: argparse.ArgumentParser, overwrite: bool = True) -> None:
    parser.add_argument("config", type=Path, help=RUN_CONFIG_HELP)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace results made with other settings")


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): ``error: <prog>: <message>``, exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``lsd-nm`` parser: every subcommand (:func:`dispatch` runs it by its name)."""
    parser = OneLineParser(prog="lsd-nm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    def command(name: str, help: str, folder: bool = False, **defaults) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(parser=p, **defaults)
        if folder:
            p.add_argument("folder", help=NETWORK_FOLDER_HELP)
        return p

    p = command("demo", "the whole pipeline on the synthetic dataset, with a report (make demo)")
    p.add_argument("--networks", nargs="*", default=None, help="networks to train and score (default: demo.json's)")
    p.add_argument("--fast", action="store_true", help="a tiny version that checks the plumbing in a few minutes")
    p.add_argument("--out", default=None, help="output folder (default: demo/, or demo/fast/ with --fast)")
    # 00_containers, 01_data
    p = command("synthetic", "generate a synthetic dataset of 01_data/datasets.json (make synthetic)")
    p.add_argument("--dataset", default="synthetic", help="synthetic dataset to generate (default: synthetic)")
    p.add_argument("--out", type=Path, default=None, help=DATA_DIR_HELP)
    p.add_argument("--workers", type=positive_int(), default=2, help="volumes generated in parallel (default: 2)")
    p.add_argument("--force", action="store_true", help="redraw volumes that already exist")
    p.add_argument("--png", type=Path, default=None, help="also save a picture of the first volume's middle section")
    p = command("new-dataset", "your own volumes (zarr, OME-Zarr, HDF5) as a dataset with its 02_train and 03_predict configs (make new-dataset)")
    p.add_argument("--name", required=True, help="the new dataset's name")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="training volumes (containers)")
    p.add_argument("--test", type=Path, default=None, help="a test volume (default: segment the last training volume)")
    p.add_argument("--raw-dataset", default="volumes/raw", help="raw in each container (default: volumes/raw)")
    p.add_argument("--labels-dataset", default="volumes/labels/neuron_ids", help="neuron ids in each container (default: volumes/labels/neuron_ids)")
    p.add_argument("--mask-dataset", default=None, help="a labels mask in each container (default: ones)")
    p.add_argument("--voxel-size", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="voxel size in nm, when the containers say none (must agree when they do)")  # fmt: skip
    p.add_argument("--rescale", action="store_true", help="map raw that is not uint8 from its range to 0-255")
    p.add_argument("--force", action="store_true", help="replace a dataset of this name")
    p.add_argument("--root", type=Path, default=None, help="the repository holding 02_train/ and 03_predict/")
    p.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    p = command("fetch-data", "download training volumes of the public bucket into 01_data/funke/ (make fetch-data)")
    p.add_argument("--dataset", required=True, help="zebrafinch, fib25 or hemi")
    p.add_argument("--volume", action="append", default=[], help="a volume to fetch (repeatable; default: the first)")
    p.add_argument("--all", action="store_true", help="fetch every volume of the dataset")
    _add_transfer_args(p)
    p = command("fetch-test-data",
                "download the paper's test data: skeletons and neuropil mask (zebrafinch), labels and masks (hemi, fib25) (make fetch-test-data)")  # fmt: skip
    p.add_argument("--dataset", required=True, help="zebrafinch, hemi or fib25")
    p.add_argument("--roi", default=None,
                   help="zebrafinch: also the test raw of this ROI of 03_predict/configs/rois/zebrafinch.json, with the "
                   "network's context; hemi (roi_1 … roi_3), fib25 (full, roi_1, roi_2): only this ROI")  # fmt: skip
    p.add_argument("--network", default="mtlsd", help="whose context the raw gets (default: mtlsd; acrlsd/aclsd need twice as much)")
    p.add_argument("--context", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"), help="context in nm instead of the network's")
    p.add_argument("--raw-url", default=None, help="the zebrafinch test raw (default: the authors' precomputed volume on Google Cloud Storage)")
    p.add_argument("--fill-missing", action="store_true", help="read raw chunks the volume does not have as zeros")
    p.add_argument("--rois", type=Path, default=None, help="zebrafinch: a ROI registry instead of 03_predict/configs/rois/zebrafinch.json")
    _add_transfer_args(p)
    p = command("fetch-published", "download the authors' supervoxels and region graphs of a network, as our fragments and region graph (make fetch-published)")
    p.add_argument("--dataset", required=True, help="zebrafinch, hemi or fib25")
    p.add_argument("--network", required=True, help="the network's folder in the bucket, e.g. mtlsd, acrlsd, long_range (case, _ and - ignored)")
    p.add_argument("--run", default=None, help="one run of the network (default: all; hemi has one per ROI)")
    p.add_argument("--merge-function", default="hist_quant_75", help="the edges file edges_<merge function>.bson (default: hist_quant_75)")
    p.add_argument("--skeletons", type=Path, action="append", default=None,
                   help="fetch only the supervoxel chunks under these skeletons' nodes (repeatable; zebrafinch default: "
                   "the fetched validation and test skeletons)")  # fmt: skip
    p.add_argument("--all-supervoxels", action="store_true", help="fetch every supervoxel chunk (zebrafinch: 4.78·10¹¹ voxels)")
    p.add_argument("--supervoxels-dataset", default=None, help="the supervoxel array below data.zarr/ (default: found by listing)")
    _add_transfer_args(p)
    p = command("create-masks", "write volumes/labels/labels_mask into every fetched or synthetic volume (make masks)")
    p.add_argument("--dataset", action="append", default=[], help="only this dataset (repeatable; default: all)")
    p.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    p.add_argument("--force", action="store_true", help="rewrite masks that exist")
    p = command("view", "show a zarr container in neuroglancer, or write a screenshot (make view)")
    p.add_argument("data", type=Path, help="a zarr container, or a folder of them (the first is shown)")
    _add_viewer_args(p)
    p = command("fetch-checkpoint", "download a network's published TF1 checkpoints (make fetch-checkpoint)")
    p.add_argument("--dataset", required=True, help="zebrafinch, fib25 or hemi")
    p.add_argument("--network", required=True, help=", ".join(get_args(NetworkType)))
    _add_transfer_args(p, "network folder (default: 02_train/<dataset>/<network>/)")
    p = command("import-checkpoint", "convert a published TF1 checkpoint in a network folder into ours")
    p.add_argument("folder", help="network folder holding train_net_checkpoint_<N>.index/.data-*")
    p.add_argument("--iteration", type=positive_int("iteration"), default=None, help="which one (default: the newest present)")
    p.add_argument("--scope", default=None, help="TF1 variable scope (default: the network's, e.g. setup01)")
    p = command("images", "download the original Singularity images into 00_containers/ (make images)")
    p.add_argument("--image", action="append", default=[], help=f"one of {', '.join(IMAGES)} (repeatable; default: {IMAGES[0]})")
    p.add_argument("--all", action="store_true", help="download both images")
    _add_transfer_args(p, "folder for the images (default: 00_containers/)")
    # 02_train
    command("mknet", "build a network folder's network, print its summary, write net_*.json", folder=True)
    p = command("train", "train a network folder until ITERATION, resuming from its latest checkpoint", folder=True)
    p.add_argument("iteration", type=positive_int("iteration"), help="train until this iteration")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: a GPU if there is one)")
    p.add_argument("--seed", type=int, default=None, help="seed the initial weights and the augmentations")
    p = command("view-batch", "show a training snapshot (snapshots/batch_<n>.hdf) in neuroglancer", folder=True)
    p.add_argument("iteration", nargs="?", type=positive_int("iteration"), default=None, metavar="ITERATION",
                   help="the snapshot's iteration (default: the newest)")  # fmt: skip
    p.add_argument("--file", "-f", default=None, help="a snapshot file to show instead of one of the folder's")
    p.add_argument("--lsd-channels", type=lsd_channels, default=(0, 1, 2), metavar="A,B,C",
                   help="LSD channels shown as red, green, blue (default: 0,1,2 = mean offset z,y,x; "
                   "3,4,5 = covariance diagonal; 6,7,8 = Pearson off-diagonal)")  # fmt: skip
    _add_viewer_args(p)
    p = command("predict-scan", "predict a volume in memory into <folder>/test_prediction.zarr", folder=True)
    p.add_argument("positional_iteration", nargs="?", type=iteration_or_latest, default=None, metavar="ITERATION")
    p.add_argument("--iteration", type=iteration_or_latest, default=None, help="checkpoint iteration (default: latest)")
    p.add_argument("--raw-file", default=None, help="raw zarr (default: the dataset's test volume)")
    p.add_argument("--raw-dataset", default="volumes/raw", help="raw dataset in it (default: volumes/raw)")
    p.add_argument("--out-file", default=None, help="output zarr (default: <folder>/test_prediction.zarr)")
    p.add_argument("--lsds-on-the-fly", action="store_true", help="aclsd/acrlsd: predict the LSDs here from the lsd net")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: a GPU if there is one)")
    p.add_argument("--overwrite", action="store_true", help="replace a prediction of another checkpoint")
    # 03_predict
    p = command(PREDICT.command, PREDICT.summary, step=PREDICT)
    p.add_argument("paths", nargs="+", metavar="[NETWORK_FOLDER] CONFIG.json",
                   help="the run config; a network folder before it predicts with that folder's network")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace results made with other settings")
    for step in (EXTRACT_FRAGMENTS, AGGLOMERATE, FIND_SEGMENTS, EXTRACT_SEGMENTATION):
        # their outputs are written and closed when they return: the process ends at once (see main)
        _add_run_config_args(command(step.command, step.summary, step=step, end_at_once=True))
    _add_run_config_args(command(EVALUATE.command, EVALUATE.summary, step=EVALUATE), overwrite=False)
    p = command("reproduce", "the paper's tables for a network: every ROI scored, our numbers beside the paper's (make reproduce)")
    p.add_argument("--dataset", required=True, help="zebrafinch, hemi or fib25")
    p.add_argument("--network", required=True, help="baseline, long_range, malis, mtlsd, aclsd or acrlsd (the paper's rows)")
    p.add_argument("--config", type=Path, action="append", default=[], help="score this run of ours instead of the authors' published results (repeatable)")
    p.add_argument("--name", default=None, help="the report's name (default: <dataset>_<network>)")
    p.add_argument("--thresholds", type=float, nargs=3, default=(0.0, 1.0, 0.02), metavar=("MIN", "MAX", "STEP"),
                   help="the sweep on the published region graphs (default: 0 1 0.02)")  # fmt: skip
    p.add_argument("--min-cut", action="store_true", help="also the min-cut metric on the masked 11, 18, 25 µm cubes")
    p.add_argument("--threshold-rule", default="validation", metavar="RULE",
                   help="zebrafinch: one threshold per network, 'validation' (lowest VOI sum of the "
                        "validation skeletons, default) or 'paper' (the authors'; THRESHOLDS=paper)")  # fmt: skip
    p.add_argument("--threshold-roi", default="benchmark_roi", help="the ROI of the validation rule (default: benchmark_roi)")
    p.add_argument("--threshold-unmasked", action="store_true", help="the validation rule on the unmasked skeletons (default: neuropil-masked)")
    p.add_argument("--rois", type=Path, default=None, help="zebrafinch: a ROI registry instead of 03_predict/configs/rois/zebrafinch.json")
    p.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reproduce", help="report folder (default: reproduce/)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p = command("segment", "steps 1–6 in order, each resuming its finished work (make segment)")
    _add_run_config_args(p)
    first_last = f"1 = {STEPS[0].name} … {len(STEPS)} = {STEPS[-1].name}"
    p.add_argument("--start", type=int, default=1, choices=range(1, len(STEPS) + 1), metavar="N",
                   help=f"start at step N ({first_last}); earlier steps are not run")  # fmt: skip
    p = command("status", "per step: blocks done, failed and in all, the last error, ETA, live workers (make status)")
    p.add_argument("config", type=Path, help="the run config (e.g. 03_predict/configs/synthetic.json)")
    p.add_argument("--json", action="store_true", help="one JSON object: out_file, running, steps [{name, done, failed, total, …}]")
    return parser


def run(func: Callable[[], object]) -> int:
    """Run ``func``; a :class:`ConfigError` (or a missing file) becomes one line on stderr and exit code 2."""
    try:
        func()
    except KeyboardInterrupt as e:  # Ctrl-C, or a stop signal turned into one (training: SIGTERM, SIGHUP)
        signum = getattr(e, "signum", signal.SIGINT)
        print("interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except Exception as e:
        error = user_error(e) or (e if isinstance(e, FileNotFoundError) else None)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _print(lines: Iterable[object] | None) -> None:
    """Print the lines a subcommand returns, each as soon as it comes (a generator's lines as the work goes on)."""
    for line in lines or ():
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the subcommand; returns the exit code.

    Post-processing steps 2-5 end the process when they succeed (``os._exit`` after flushing stdout and stderr):
    everything they write is written and closed when they return, and the interpreter's teardown (zarr's I/O thread,
    module cleanup) would add ~0.15 s to every step.
    """
    # TensorFlow's C++ start-up and runtime notices (oneDNN, CPU features) are not for users
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    hide_import_noise()
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # reported by the subcommand, as every other error of its arguments
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    code = run(lambda: _print(dispatch(args)))
    if code == 0 and getattr(args, "end_at_once", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return code
