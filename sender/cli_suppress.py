"""``suppress add|remove|list|import``: the operator's hands on the suppression list."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from typing import Any

from .config import Settings
from .errors import InputError, UsageError
from .store.engine import db_now, open_store
from .store.states import SUPPRESSION_REASONS


def add_parser(sub: argparse._SubParsersAction[Any],
               common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("suppress", help="never mail these addresses (unsubscribed, bounced, ...)")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("add", parents=[common], help="suppress addresses")
    a.add_argument("addresses", nargs="+", metavar="ADDR")
    a.add_argument("--reason", default="manual", choices=SUPPRESSION_REASONS)
    r = acts.add_parser("remove", parents=[common], help="mail these addresses again")
    r.add_argument("addresses", nargs="+", metavar="ADDR")
    s = acts.add_parser("list", parents=[common], help="the suppressed addresses")
    s.add_argument("--json", action="store_true")
    i = acts.add_parser("import", parents=[common], help="suppress every address of a CSV (email[,reason])")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--reason", default="manual", choices=SUPPRESSION_REASONS,
                   help="for rows without a reason column (manual)")


def add_unsubscribe_parser(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("unsubscribe", parents=[common],
                       help="apply an unsubscribe token (from a List-Unsubscribe link): suppress its address")
    p.add_argument("token", metavar="TOKEN")


async def cmd_unsubscribe(args: argparse.Namespace, settings: Settings) -> int:
    from . import unsubscribe

    if not settings.unsubscribe_secret:
        raise UsageError("unsubscribe: no secret configured (SENDER_UNSUBSCRIBE_SECRET or [unsubscribe] secret)")
    async with open_store(settings.db) as db:
        found = await unsubscribe.apply(db, settings.unsubscribe_secret, args.token, now=await db_now(db))
    print(f"unsubscribed {found.email} (row {found.row})")
    return 0


def _addresses(values: list[str]) -> list[str]:
    from .store import suppressions

    try:
        return [suppressions.normalise(v) for v in values]
    except InputError as exc:
        raise UsageError(exc.reason) from None


async def cmd_suppress(args: argparse.Namespace, settings: Settings) -> int:
    from .store import suppressions  # here, not at import: the command line's start stays light

    actor = os.environ.get("USER") or "operator"
    if args.action == "add":
        emails = _addresses(args.addresses)
        async with open_store(settings.db) as db:
            n = await suppressions.add(db, [(e, args.reason) for e in emails], source=f"operator {actor}",
                                      now=await db_now(db))
        print(f"suppressed {n} address(es) ({args.reason})")
    elif args.action == "remove":
        emails = _addresses(args.addresses)
        async with open_store(settings.db) as db:
            n = await suppressions.remove(db, emails)
        print(f"removed {n} of {len(emails)} address(es) from the suppression list")
    elif args.action == "import":
        entries = suppressions.read_csv(args.file, args.reason)
        async with open_store(settings.db) as db:
            n = await suppressions.add(db, entries, source=f"import {os.path.basename(args.file)}",
                                      now=await db_now(db))
        print(f"suppressed {n} address(es) from {args.file}")
    else:
        async with open_store(settings.db, readonly=True) as db:
            rows = await suppressions.listing(db)
        if args.json:
            print(json.dumps([r.to_json() for r in rows]))
        else:
            for r in rows:
                when = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M")
                print(f"{r.email:<40} {r.reason:<12} {when}  {r.source}")
            print(f"{len(rows)} suppressed address(es)")
    return 0
