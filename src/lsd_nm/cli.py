"""The ``lsd-nm`` command line: one subcommand per tutorial step; the numbered folders' scripts call into it.

Run: ``lsd-nm --help`` (or ``python -m lsd_nm --help``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .config import ConfigError


def _synthetic(args: argparse.Namespace) -> None:
    from .synthetic import make_synthetic, plot_volume

    paths = make_synthetic(args.dataset, data_dir=args.out, workers=args.workers, force=args.force)
    for p in paths:
        print(p)
    if args.png:
        print(plot_volume(paths[0], args.png))


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
    return parser


def run(func: Callable[[], object]) -> int:
    """Run ``func``; a :class:`ConfigError` (or a missing file) becomes one line on stderr and exit code 2."""
    try:
        func()
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
