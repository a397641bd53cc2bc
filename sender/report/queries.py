"""The report's windows and its assembly from the store's six findings (``sender.store.reports``):
the whole report (``build_report``, each list up to a limit) or one page of it (``report_page``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import UsageError
from ..store import counts
from ..store import reports as found
from ..store.engine import Store
from .model import ANOMALIES, LIMIT, Report, Window, iso, parse_since, parse_time

WITHHELD = ("suppressed", "bounced")  # the report's ``withheld`` counts


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
    ``truncated`` names the lists that had more, and ``totals`` gives their true counts (the
    count queries run only for a list that was cut)."""
    readers = _readers(db, window, now, sources)
    lists = {name: await read(0, limit + 1) for name, read in readers.items()}
    truncated = [name for name, items in lists.items() if len(items) > limit]
    counters = _counters(db, window, now, sources)
    totals = {name: max(await counters[name](), len(items)) if name in truncated else len(items)
              for name, items in lists.items()}
    report = _report(window, now, sources, {name: items[:limit] for name, items in lists.items()}, totals)
    states = await counts.state_counts(db)
    return replace(report, withheld={state: states[state] for state in WITHHELD})


def _capped(totals: dict[str, int]) -> tuple[dict[str, int], tuple[str, ...]]:
    """A "missing" total past the count's cap is a lower bound: ``MISSING_COUNT_CAP``, marked."""
    if totals["missing"] <= found.MISSING_COUNT_CAP:
        return totals, ()
    return {**totals, "missing": found.MISSING_COUNT_CAP}, ("missing",)


async def report_totals(db: Store, window: Window, now: float, *,
                        sources: Sequence[str] = ()) -> dict[str, int]:
    """The true number of each of the six findings (``sender.store.reports.count_*``; "missing"
    stops counting past ``MISSING_COUNT_CAP``)."""
    return {name: await count() for name, count in _counters(db, window, now, sources).items()}


async def report_page(db: Store, window: Window, now: float, *, offset: int = 0,
                      limit: int = LIMIT, sources: Sequence[str] = ()) -> Report:
    """One page of the findings laid end to end (ghosts, then repeated Message-IDs, multi-sends,
    unknown, stale claims, missing; each in its own order): items ``offset`` to
    ``offset + limit`` of them all, with every kind's true total. An offset past the end (the
    findings shrank) becomes the last page. The monitor's Duplicates tab pages with this."""
    counted = await report_totals(db, window, now, sources=sources)
    totals = _capped(counted)[0]
    grand = sum(totals.values())
    offset = max(0, min(offset, (grand - 1) // limit * limit if grand else 0))
    lists: dict[str, list[Any]] = {}
    start = 0
    for name, read in _readers(db, window, now, sources).items():
        first, last = max(offset - start, 0), min(offset + limit - start, totals[name])
        lists[name] = await read(first, last - first) if last > first else []
        start += totals[name]
    return _report(window, now, sources, lists, counted, offset)


def _report(window: Window, now: float, sources: Sequence[str], lists: dict[str, list[Any]],
            counted: dict[str, int], offset: int = 0) -> Report:
    totals, capped = _capped(counted)
    return Report(capped=capped, window=window, now=now, ghosts=lists["ghosts"],
                  repeated_message_ids=lists["repeated_message_ids"],
                  multi_sends=lists["multi_sends"], unknown=lists["unknown"],
                  stale_claims=lists["stale_claims"], missing=lists["missing"],
                  missing_checked=bool(sources), totals=totals, offset=offset,
                  truncated=tuple(k for k in ANOMALIES if len(lists[k]) < totals[k]))


Reader = Callable[[int, int], Awaitable[list[Any]]]


def _readers(db: Store, window: Window, now: float, sources: Sequence[str]) -> dict[str, Reader]:
    """Each finding's list as ``read(offset, limit)``, in report order."""
    since, end = window.since, window.until
    return {
        "ghosts": lambda o, n: found.ghosts(db, since, end, limit=n, offset=o),
        "repeated_message_ids": lambda o, n: found.repeated_message_ids(db, since, end, limit=n,
                                                                        offset=o),
        "multi_sends": lambda o, n: found.multi_sends(db, since, end, limit=n, offset=o),
        "unknown": lambda o, n: found.unknown_messages(db, limit=n, offset=o),
        "stale_claims": lambda o, n: found.stale_claims(db, now, limit=n, offset=o),
        "missing": lambda o, n: found.missing(db, since, end, sources, limit=n, offset=o),
    }


def _counters(db: Store, window: Window, now: float,
              sources: Sequence[str]) -> dict[str, Callable[[], Awaitable[int]]]:
    since, end = window.since, window.until
    return {
        "ghosts": lambda: found.count_ghosts(db, since, end),
        "repeated_message_ids": lambda: found.count_repeated_message_ids(db, since, end),
        "multi_sends": lambda: found.count_multi_sends(db, since, end),
        "unknown": lambda: found.count_unknown(db),
        "stale_claims": lambda: found.count_stale_claims(db, now),
        "missing": lambda: found.count_missing(db, since, end, sources),
    }
