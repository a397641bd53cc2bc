"""The report's windows and its assembly from the store's six findings (``sender.store.reports``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..store import reports as found
from ..store.engine import Store
from .model import LIMIT, Report, Window, iso, parse_since, parse_time


async def window_for(db: Store, span: float, now: float) -> Window:
    """The last ``span`` seconds; if nothing happened in them but something happened before,
    the ``span`` ending at the newest activity instead (``anchored``), so an idle queue (or
    sample.db) still shows its latest anomalies. Cron alerting wants a fixed end: use
    ``Window(now - span, now)``."""
    newest = await found.newest_activity(db)
    if newest is None or newest >= now - span:
        return Window(now - span, now)
    return Window(newest - span, newest, anchored=True)


async def resolve_window(db: Store, since: str, until: str | None, now: float, *,
                         fixed_end: bool = False) -> Window:
    """The command line's window: ``--since`` a span or a time, ``--until`` a time or ``now``.

    With neither ``--until`` nor ``fixed_end`` (cron's ``--fail-on-anomaly``), a span ending now
    that saw no activity moves to end at the newest activity (see ``window_for``)."""
    start, span = parse_since(since, now)
    if until is not None and until.strip().lower() != "now":
        end = parse_time(until, "--until")
        start = end - span if span is not None else start
    elif until is None and span is not None and not fixed_end:
        return await window_for(db, span, now)
    else:
        end = now
    if start < 0:
        raise UsageError(f"--since {since!r}: the window would start before 1970")
    if start > end:
        raise UsageError(f"the window starts after it ends ({iso(start)} > {iso(end)})")
    return Window(start, end)


async def build_report(db: Store, window: Window, now: float, *, sources: Sequence[str] = (),
                       limit: int = LIMIT) -> Report:
    """All six findings in ``window`` (kept as given, ``anchored`` included); ``now`` is the
    present, against which leases are judged. Each list holds at most ``limit`` items;
    ``truncated`` names the lists that had more."""
    since, end = window.since, window.until
    lists: dict[str, list[Any]] = {
        "ghosts": await found.ghosts(db, since, end, limit=limit + 1),
        "repeated_message_ids": await found.repeated_message_ids(db, since, end, limit=limit + 1),
        "multi_sends": await found.multi_sends(db, since, end, limit=limit + 1),
        "unknown": await found.unknown_messages(db, limit=limit + 1),
        "stale_claims": await found.stale_claims(db, now, limit=limit + 1),
        "missing": await found.missing(db, since, end, sources, limit=limit + 1),
    }
    truncated = tuple(name for name, items in lists.items() if len(items) > limit)
    trimmed = {name: items[:limit] for name, items in lists.items()}
    return Report(window=window, now=now, missing_checked=bool(sources), truncated=truncated, **trimmed)
