"""The ``lsd-nm`` command line: one subcommand per tutorial step; the numbered folders' scripts call into it.

Run: ``lsd-nm --help`` (or ``python -m lsd_nm --help``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Callable, Sequence

from .config import ConfigError, user_error


def _synthetic(args: argparse.Namespace) -> None:
    from .synthetic import make_synthetic, plot_volume

    paths = make_synthetic(args.dataset, data_dir=args.out, workers=args.workers, force=args.force)
    for p in paths:
        print(p)
    if args.png:
        print(plot_volume(paths[0], args.png))


def _mknet(args: argparse.Namespace) -> None:
    from .networks import describe, mknet

    ios = mknet(args.folder)
    print(describe(ios["train"]))
    for role in ("predict", "auto"):
        if role in ios:
            io = ios[role]
            ins = ", ".join(f"{n} {t.channels}×{t.shape}" for n, t in io.inputs.items())
            outs = ", ".join(f"{n} {t.channels}×{t.shape}" for n, t in io.outputs.items())
            print(f"{role}: {ins} → {outs}")
    print(f"wrote net_{{{','.join(ios)}}}.json in {args.folder}")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer iteration, got '{value}'") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an iteration ≥ 1, got {number}")
    return number


def _iteration(value: str) -> int | str:
    if value == "latest":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'latest', got '{value}'") from None


def _predict_scan(args: argparse.Namespace) -> None:
    from .predict import predict_scan

    out = predict_scan(
        args.folder, args.iteration, args.raw_file, args.raw_dataset, args.out_file, args.lsds_on_the_fly, args.device
    )
    print(f"wrote {out}")


def _import_checkpoint(args: argparse.Namespace) -> None:
    from .tf1 import import_tf1_checkpoint

    iteration, path = import_tf1_checkpoint(args.folder, args.iteration, args.scope)
    print(f"imported the TF1 checkpoint of iteration {iteration} into {path}")


def _train(args: argparse.Namespace) -> None:
    from .train import train

    if args.seed is not None:
        import keras

        keras.utils.set_random_seed(args.seed)  # Python, NumPy (augmentations) and TensorFlow (initial weights)
    done = train(args.folder, args.iteration, device=args.device)
    print(f"trained until iteration {done}")


def _lsd_channels(value: str) -> tuple[int, int, int]:
    from .view_batch import parse_lsd_channels

    try:
        return parse_lsd_channels(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _view_batch(args: argparse.Namespace) -> None:

    from .view_batch import view_batch

    view_batch(
        Path(args.folder),
        args.iteration,
        Path(args.file) if args.file else None,
        args.lsd_channels,
        args.bind_address,
        args.port,
        Path(args.screenshot) if args.screenshot else None,
        tuple(args.size),
        args.chromium,
        args.timeout,
    )


def _demo(args: argparse.Namespace) -> None:
    from . import REPO_ROOT
    from .demo import StageFailed, demo

    out = Path(args.out) if args.out else REPO_ROOT / "demo" / ("fast" if args.fast else "")
    try:
        demo(out, args.networks, args.fast)
    except StageFailed as e:
        raise ConfigError(str(e)) from None


def _not_built(step: str) -> Callable[[argparse.Namespace], None]:
    def fail(args: argparse.Namespace) -> None:
        raise ConfigError(f"`{step}` is not built yet")

    return fail


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): ``error: <prog>: <message>``, exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lsd-nm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole pipeline on the synthetic dataset, with a report (make demo)")
    p.add_argument("--networks", nargs="*", default=None, help="networks to train and score (default: demo.json's)")
    p.add_argument("--fast", action="store_true", help="a tiny version that checks the plumbing in a few minutes")
    p.add_argument("--out", default=None, help="output folder (default: demo/, or demo/fast/ with --fast)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("synthetic", help="generate a synthetic dataset of 01_data/datasets.json")
    p.add_argument("--dataset", default="synthetic", help="synthetic dataset to generate (default: synthetic)")
    p.add_argument("--out", default=None, help="data folder (default: 01_data/)")
    p.add_argument("--workers", type=int, default=2, help="volumes generated in parallel (default: 2)")
    p.add_argument("--force", action="store_true", help="redraw volumes that already exist")
    p.add_argument("--png", default=None, help="also save a picture of the first volume's middle section")
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("mknet", help="build a network folder's network, print its summary, write net_*.json")
    p.add_argument("folder", help="network folder, e.g. 02_train/zebrafinch/mtlsd")
    p.set_defaults(func=_mknet)

    p = sub.add_parser("predict-scan", help="predict a volume in memory into <folder>/test_prediction.zarr")
    p.add_argument("folder", help="network folder")
    p.add_argument("positional_iteration", nargs="?", type=_iteration, default=None, metavar="ITERATION")
    p.add_argument("--iteration", type=_iteration, default=None, help="checkpoint iteration (default: latest)")
    p.add_argument("--raw-file", default=None, help="raw zarr (default: the dataset's test volume)")
    p.add_argument("--raw-dataset", default="volumes/raw", help="raw dataset in it (default: volumes/raw)")
    p.add_argument("--out-file", default=None, help="output zarr (default: <folder>/test_prediction.zarr)")
    p.add_argument("--lsds-on-the-fly", action="store_true", help="aclsd/acrlsd: predict the LSDs here from the lsd net")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: a GPU if there is one)")
    p.set_defaults(func=_predict_scan)

    p = sub.add_parser("import-checkpoint", help="convert a published TF1 checkpoint in a network folder into ours")
    p.add_argument("folder", help="network folder holding train_net_checkpoint_<N>.index/.data-*")
    p.add_argument("--iteration", type=int, default=None, help="which one (default: the newest present)")
    p.add_argument("--scope", default=None, help="TF1 variable scope (default: the network's, e.g. setup01)")
    p.set_defaults(func=_import_checkpoint)

    p = sub.add_parser("train", help="train a network folder until ITERATION, resuming from its latest checkpoint")
    p.add_argument("folder", help="network folder")
    p.add_argument("iteration", type=_positive_int, help="train until this iteration")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: a GPU if there is one)")
    p.add_argument("--seed", type=int, default=None, help="seed the initial weights and the augmentations")
    p.set_defaults(func=_train)

    p = sub.add_parser("view-batch", help="show a training snapshot (snapshots/batch_<n>.hdf) in neuroglancer")
    p.add_argument("folder", help="network folder")
    p.add_argument("iteration", nargs="?", type=_positive_int, default=None, metavar="ITERATION",
                   help="the snapshot's iteration (default: the newest)")
    p.add_argument("--file", "-f", default=None, help="a snapshot file to show instead of one of the folder's")
    p.add_argument("--bind-address", "-b", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument("--lsd-channels", type=_lsd_channels, default=(0, 1, 2), metavar="A,B,C",
                   help="LSD channels shown as red, green, blue (default: 0,1,2 = mean offset z,y,x; "
                   "3,4,5 = covariance diagonal; 6,7,8 = Pearson off-diagonal)")
    p.add_argument("--screenshot", default=None, metavar="OUT.png", help="write a PNG of the view and exit")
    p.add_argument("--size", type=int, nargs=2, default=(800, 600), metavar=("WIDTH", "HEIGHT"),
                   help="screenshot size (default: 800 600)")
    p.add_argument("--chromium", default=None, help="Chromium executable for --screenshot (default: found on PATH)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the screenshot (default: 120)")
    p.set_defaults(func=_view_batch)

    for step in ("predict",):
        p = sub.add_parser(step, help=f"{step} (network folder scripts)")
        p.add_argument("folder")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_not_built(step))
    return parser


def run(func: Callable[[], object]) -> int:
    """Run ``func``; a :class:`ConfigError` (or a missing file) becomes one line on stderr and exit code 2."""
    try:
        func()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        error = user_error(e) or (e if isinstance(e, FileNotFoundError) else None)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "positional_iteration", None) is not None:  # `python predict_scan.py 400000`, as the original
        args.iteration = args.iteration if args.iteration is not None else args.positional_iteration
    if getattr(args, "iteration", "missing") is None and args.func is _predict_scan:
        args.iteration = "latest"
    return run(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
