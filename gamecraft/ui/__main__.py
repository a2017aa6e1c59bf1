"""``python -m gamecraft.ui [--backend URL | --replicate owner/name[:version]] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import os
import sys

from gamecraft.ui.replicate import ReplicateBackend
from gamecraft.ui.server import CogBackend, make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamecraft.ui", description=__doc__)
    parser.add_argument("--backend", default="http://127.0.0.1:5000", help="Cog server URL (default: %(default)s)")
    parser.add_argument(
        "--replicate",
        metavar="OWNER/NAME[:VERSION]",
        help="use a model on Replicate instead (token from REPLICATE_API_TOKEN)",
    )
    parser.add_argument("--replicate-api", default="https://api.replicate.com/v1", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        backend = (
            ReplicateBackend(args.replicate, os.environ.get("REPLICATE_API_TOKEN", ""), api=args.replicate_api)
            if args.replicate
            else CogBackend(args.backend)
        )
        server = make_server(backend, args.host, args.port)
    except (ValueError, OSError) as err:
        print(f"gamecraft.ui: {err}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    target = f"replicate {args.replicate}" if args.replicate else args.backend
    print(f"GameCraft controller on http://{host}:{port}/  (backend: {target}); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
