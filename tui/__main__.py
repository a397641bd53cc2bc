"""``python -m tui [--db PATH] [--config FILE] [--refresh SECONDS] [--read-only] [--screenshots DIR]``.

The database is found exactly as the sender's commands find it (``sender.config.load``):
``--db``, then ``$SENDER_DB``, then ``db`` in the config file (``--config``, ``$SENDER_CONFIG``,
``./sender.toml``), then ``sender.db``. Log records from ``sender`` go nowhere while the screen
is up: a line on stderr would tear the display.
"""

from __future__ import annotations

import argparse
import logging
import os

from sender import config
from sender.errors import SenderError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tui", description="Monitor a sender queue.")
    parser.add_argument("--db", help="queue database (default: $SENDER_DB, then the config file's "
                                      "db, then sender.db)")
    parser.add_argument("--config", help="config file (default: $SENDER_CONFIG, then ./sender.toml)")
    parser.add_argument("--refresh", type=_positive, default=1.0, metavar="SECONDS",
                        help="seconds between refreshes (default: 1)")
    parser.add_argument("--read-only", action="store_true",
                        help="watch only: every action is hidden")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="folder for ctrl+s screenshots (default: the current folder)")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def settings_db(db: str | None, config_path: str | None) -> str:
    """The queue the sender's commands would open with the same flags, environment and file."""
    return config.load({"db": db}, config_path=config_path).db


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]
    from .app import MonitorApp

    if args.screenshots and not os.path.isdir(args.screenshots):
        parser.exit(2, f"error: --screenshots: {args.screenshots} is not a folder\n")
    try:
        db = settings_db(args.db, args.config)
    except SenderError as exc:
        parser.exit(exc.exit_code, f"error: {exc}\n")
    MonitorApp(db, refresh_every=args.refresh, read_only=args.read_only,
               screenshots=args.screenshots).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
