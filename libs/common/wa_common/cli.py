"""Command line of every service: ``python -m wa_<service> [serve|migrate]``.

``serve`` (the default) runs the service until SIGTERM; ``migrate`` upgrades the service's store
to the newest schema and exits (services without a store have no ``migrate``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def run_cli(service: str, serve: Callable[[], None], migrate: Callable[[], None] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m wa_{service.replace('-', '_')}")
    choices = ["serve", "migrate"] if migrate else ["serve"]
    parser.add_argument("command", nargs="?", default="serve", choices=choices)
    args = parser.parse_args()
    if args.command == "migrate" and migrate is not None:
        migrate()
    else:
        serve()
