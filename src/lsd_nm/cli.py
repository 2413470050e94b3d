"""The ``lsd-nm`` command line: one subcommand per tutorial step; the numbered folders' scripts call into it.

Run: ``lsd-nm --help`` (or ``python -m lsd_nm --help``).
"""

from __future__ import annotations

import argparse
import sys
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


def _not_built(step: str) -> Callable[[argparse.Namespace], None]:
    def fail(args: argparse.Namespace) -> None:
        raise ConfigError(f"`{step}` is not built yet")

    return fail


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsd-nm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

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

    for step in ("train", "predict", "predict-scan", "view-batch"):
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
    return run(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
