"""``python -m gamecraft.weights check DIR`` / ``download DIR``: is a weights directory complete; fetch it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .download import download_weights
from .layout import REPO_ID, VARIANTS, MissingWeightsError, check_layout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamecraft.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check that a weights directory is complete")
    check.add_argument("dir", type=Path)
    check.add_argument("--variant", choices=VARIANTS, default="full")
    download = commands.add_parser("download", help=f"download the weights from {REPO_ID}")
    download.add_argument("dir", type=Path)
    download.add_argument("--variant", choices=VARIANTS, action="append", dest="variants")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "check":
            check_layout(args.dir, args.variant)
            print(f"{args.dir}: complete for variant {args.variant!r}")
        else:
            download_weights(args.dir, args.variants or ["full"])
            print(f"downloaded weights to {args.dir}")
    except MissingWeightsError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
