"""``python -m gamecraft.parity GOLDEN_DIR [SECTION ...]``: compare against the official goldens.

Prints one line per tensor (section, name, max abs error, tolerance, ok) and exits non-zero on any
failure. With no section named, every implemented section runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gamecraft.parity import SECTIONS, run_sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamecraft.parity", description=__doc__.splitlines()[0])
    parser.add_argument("golden_dir", type=Path, help="folder with the golden .safetensors/.json files")
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.golden_dir.is_dir():
        parser.error(f"golden dir {args.golden_dir} does not exist")
    try:
        results = run_sections(args.golden_dir, args.sections or None)
    except ValueError as err:
        parser.error(str(err))
    for result in results:
        print(result.line())
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
