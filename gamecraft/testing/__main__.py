"""``python -m gamecraft.testing write-tiny DIR``: write tiny random weights in the official layout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .tiny_weights import write_tiny_weights


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamecraft.testing", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("write-tiny", help="write tiny random weights in the official layout")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_tiny_weights(args.dir, seed=args.seed)
    print(f"wrote tiny weights to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
