"""``enqueue``: validate a whole CSV (or one message from flags) first, then queue it idempotently."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cli_commands import check_db_dir
from .config import Settings
from .errors import InputError, UsageError
from .headers import parse_flag as parse_header_flags
from .intake import MAX_BODY_BYTES, NewMessage, make_message, read_csv
from .store.engine import db_now, open_store
from .store.enqueue import enqueue
from .templates import Templates

LARGE_IMPORT = 10_000  # rows queued by one enqueue after which the statistics are refreshed


def _flag_row(args: argparse.Namespace) -> dict[str, str | None]:
    return {"to": args.to, "subject": args.subject, "body": args.body, "html": args.html,
            "name": args.name, "campaign": args.campaign, "send_at": args.send_at,
            "dedupe_key": args.dedupe_key, "priority": args.priority, "expires_at": args.expires_at,
            "reply_to": args.reply_to, "headers": _header_flags(args.header),
            "attachments": ";".join(args.attach) if args.attach else None}


def _header_flags(values: list[str] | None) -> str | None:
    """``--header 'Name: value'`` (repeatable) as the ``headers`` column's JSON object."""
    if not values:
        return None
    try:
        pairs = parse_header_flags(values)
    except InputError as exc:
        raise UsageError(exc.reason) from None
    return json.dumps(dict(pairs))


def _read_text_flags(args: argparse.Namespace) -> None:
    for flag, attr in (("--body-file", "body"), ("--html-file", "html")):
        path = getattr(args, f"{attr}_file")
        if path is None:
            continue
        if getattr(args, attr) is not None:
            raise UsageError(f"give --{attr} or {flag}, not both")
        setattr(args, attr, _read_bounded(flag, path))


def _read_bounded(flag: str, path: str) -> str:
    """A UTF-8 file of at most ``MAX_BODY_BYTES``: ``/dev/zero`` or a huge file is refused, not read whole."""
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_BODY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_BODY_BYTES:
        raise UsageError(f"{flag} {path}: larger than the {MAX_BODY_BYTES} byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


async def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    default_from = args.sender_from or settings.sender_from
    from_addr = from_name = None
    if default_from:
        from .intake import parse_from
        try:
            from_addr, from_name = parse_from(default_from)
        except InputError as exc:
            raise UsageError(f"--from/SENDER_FROM: {exc.reason.removeprefix('from: ')}") from None
    _read_text_flags(args)
    templates = Templates(args.subject, args.body, args.html) if args.template else None
    if templates is not None:
        try:
            templates.check()
        except InputError as exc:
            raise UsageError(exc.reason) from None
    if args.csv and args.to is not None:
        raise UsageError("give either --csv or --to, not both")
    if args.csv and templates is None and (args.subject is not None or args.body is not None):
        raise UsageError("--subject/--body with --csv need --template (they apply to every row)")
    if args.csv:
        rows, total = _validated_csv(args.csv, args.skip_invalid, has_default_from=from_addr is not None,
                                     templates=templates)
    elif args.to is not None or args.subject is not None or args.body is not None:
        flags = _flag_row(args)
        if templates is not None:
            flags = {**flags, "subject": None, "body": None, "html": None}
        one = make_message(flags, default_campaign=args.campaign, templates=templates)
        if one.from_addr is None and from_addr is None:
            raise UsageError("no From address: pass --from ADDR or set SENDER_FROM")
        rows, total = iter([one]), 1
    else:
        raise UsageError("nothing to enqueue: give --csv FILE or --to, --subject and --body")
    started = time.monotonic()
    check_db_dir(settings.db)
    async with open_store(settings.db, create=True) as db:
        with _progress(total) as advance:
            result = await enqueue(db, rows, from_addr=from_addr, from_name=from_name,
                                         domain=settings.domain, now=await db_now(db), progress=advance)
        if result.queued >= LARGE_IMPORT:
            await db.optimize()  # the table grew a lot: fresh statistics for the planner
    print(f"queued {result.queued}, skipped {result.skipped} already queued "
          f"({time.monotonic() - started:.1f}s)")
    return 0


def _validated_csv(path: str, skip_invalid: bool, *, has_default_from: bool,
                   templates: Templates | None = None) -> tuple[Iterator[NewMessage], int]:
    """Pass 1 reads the whole file and checks every row; pass 2 (the iterator) streams the good ones."""
    bad: list[InputError] = []
    good = 0
    for item in read_csv(path, templates):
        if isinstance(item, NewMessage) and item.from_addr is None and not has_default_from:
            item = InputError("from: empty, and no default (pass --from ADDR or set SENDER_FROM)", item.line)
        if isinstance(item, InputError):
            bad.append(item)
            if not skip_invalid and len(bad) > 100:
                break
        else:
            good += 1
    if bad and not skip_invalid:
        over = "at least " if len(bad) > 100 else ""
        more = f" (and {over}{len(bad) - 1} more bad rows; nothing was queued)" if len(bad) > 1 \
            else " (nothing was queued)"
        raise UsageError(f"{path}: {bad[0]}{more}")
    for err in bad:
        print(f"skipped invalid {path}: {err}", file=sys.stderr)

    def good_rows() -> Iterator[NewMessage]:
        for item in read_csv(path, templates):
            if isinstance(item, NewMessage) and (item.from_addr or has_default_from):
                yield item
    return good_rows(), good


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A rich progress bar on a terminal for large imports; silent otherwise."""
    if total < 5000 or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("enqueue", total=total)
        yield lambda n: bar.advance(task, n)
