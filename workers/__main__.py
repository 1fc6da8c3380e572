"""``python -m workers``: run a Celery worker with the settings from the environment.

The ``sirocco worker`` CLI command is the documented way; this entry point is
the same thing without the CLI.
"""

from __future__ import annotations

import argparse

from sirocco.settings import get_settings
from workers.app import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    parser.add_argument("--stage", action="append", choices=["parse", "embed"], default=None,
                        help="a stage to consume (repeatable; default both)")
    args = parser.parse_args(argv)
    run_worker(
        get_settings(),
        loglevel=args.loglevel,
        concurrency=args.concurrency,
        pool=args.pool,
        stages=args.stage,
    )


if __name__ == "__main__":
    main()
