"""``python -m gamecraft.weights check DIR`` / ``download DIR`` / ``prepare DIR``: is a weights directory
complete; fetch it; make it deployable (safetensors cache, compiled kernels, manifest).

``prepare`` builds and warms the serving engine, which lives above this package
(:mod:`gamecraft.serving.prepare`): this module is an entry point, the one place in ``gamecraft.weights``
allowed to import it (pyproject.toml's import-linter contracts name it), and imports it only when run.
"""

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
    prepare = commands.add_parser(
        "prepare", help="download, convert, compile every pass shape and write the manifest (on the serving GPU)"
    )
    prepare.add_argument("dir", type=Path)
    prepare.add_argument("--variant", choices=VARIANTS, action="append", dest="variants", help="default: both")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "check":
            check_layout(args.dir, args.variant)
            print(f"{args.dir}: complete for variant {args.variant!r}")
        elif args.command == "download":
            download_weights(args.dir, args.variants or ["full"])
            print(f"downloaded weights to {args.dir}")
        else:
            from gamecraft.serving.config import ServingConfig
            from gamecraft.serving.prepare import prepare_directory

            manifest = prepare_directory(ServingConfig.from_env(weights=str(args.dir)), args.variants)
            size = sum(entry.size for entry in manifest.files.values())
            print(
                f"prepared {args.dir}: {len(manifest.files)} files, {size / 1e9:.1f} GB, kernels for {manifest.machine}"
            )
    except MissingWeightsError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
