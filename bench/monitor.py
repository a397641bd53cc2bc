"""Monitor queries: the time of each read function the monitor and ``status`` use, on a big queue.

The functions are found when the benchmark runs: every public coroutine function taking the
database first in ``sender.store``'s read modules and ``sender.report`` (those that
exist). Required arguments are filled by name and annotation (``now``, ``row_id``, ``since`` as
a time or as ``"24h"``...); optional ones keep their defaults. A function needing an argument
this module cannot guess is listed as skipped, and one that raises as FAILED, never dropped. A ``text``
filter is timed empty, with an exact recipient and with a fragment (the slow path); a function
with an ``offset`` (a page) is timed on its first page and on its last.

The database is a busy queue (mostly sent, every state present, SendLog rows) opened
read-only, as the monitor opens it; the report's functions are timed again (``observed``) on a
copy holding an hour of observed copies with 10,000 ghosts, multi-sends and repeated
Message-IDs. Each figure is the median of several warm calls.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sender.store.db import open_db

from .common import Result, copy_db, template

MODULES = ("sender.store.counts", "sender.store.flags", "sender.store.views", "sender.store.search",
           "sender.store.health", "sender.store.reports", "sender.report.queries")
CALLS = 5
# What an operator types into the Queue's ``/`` (``sender.store.search.search``), timed each.
SEARCHES = ("failed", "unknown", "scheduled", "sent", "user12", "user{row}", "user{row}@example.com",
            "#{row}", "campaign:bench", "campaign:bench failed", "reply:5.7.1", "since:1h",
            "failed since:1h")
# The deepest page timed for a paged function: the bench queue holds 10,000 unknown messages and
# 10,000 stale claims, so the report's pages (the six kinds end to end) run to 20,000.
DEEP_OFFSETS = {"report_page": 19_900}


def _value(name: str, annotation: str, size: int, now: float) -> Any:
    """A realistic argument for a parameter, by name and annotation (or ``_MISSING``)."""
    kind = annotation.replace(" ", "").split("|")[0]
    if name == "now":
        return now
    if name in ("row_id", "message_id", "id"):
        return size // 2
    if name in ("since", "until", "start", "end"):
        if kind == "str":
            return "24h" if name == "since" else "now"
        return now - 86400.0 if name in ("since", "start") else now
    if name == "window" and kind == "Window":
        from sender.report import Window
        return Window(now - 86400.0, now)
    if name in ("span", "window"):
        return 86400.0
    if name == "limit":
        return 100
    if name == "text":
        return "failed"
    if name == "mid":
        return "<absent@bench>"
    if name == "rate":
        return (100, 3600.0)
    if name == "daily_cap":
        return 10_000
    if name == "sources":
        return ["maildir:bench"]
    return _MISSING


_MISSING = object()


def _cases(fn: Callable[..., Awaitable[Any]], size: int, now: float
           ) -> list[tuple[str, dict[str, Any]]] | str:
    """Keyword arguments for each timed call of ``fn``, or why it is skipped."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "db":
        return "first argument is not the database"
    kwargs: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not inspect.Parameter.empty:
            continue
        value = _value(p.name, str(p.annotation), size, now)
        if value is _MISSING:
            return f"needs {p.name}"
        kwargs[p.name] = value
    cases = [("", kwargs)]
    if "offset" in {p.name for p in params}:  # the last page of a list of 10,000 (of 20,000 findings)
        deep = DEEP_OFFSETS.get(fn.__name__, 9_900)
        cases.append((f"offset={deep}", {**kwargs, "offset": deep}))
    if fn.__name__ == "search":
        row = size - 10
        return [(f"text={t.format(row=row)}", {**kwargs, "text": t.format(row=row)}) for t in SEARCHES]
    if "text" in {p.name for p in params}:
        row = size // 2 + 1
        cases += [("text=recipient", {**kwargs, "text": f"user{row}@example.com"}),
                  ("text=fragment", {**kwargs, "text": "user12"})]
    return cases


def discover(modules: tuple[str, ...] = MODULES) -> list[tuple[str, Callable[..., Awaitable[Any]]]]:
    found = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for attr, fn in vars(module).items():
            if (not attr.startswith("_") and inspect.iscoroutinefunction(fn)
                    and fn.__module__ == name):
                found.append((f"{name.removeprefix('sender.')}.{attr}", fn))
    if modules == MODULES:
        found += _bulk_counts()
    return found


def _bulk_counts() -> list[tuple[str, Callable[..., Awaitable[Any]]]]:
    """The dry runs of ``retry`` / ``cancel`` and of the monitor's ``A`` (a count, no write)."""
    from sender.store import operator
    from sender.store.selection import Selection

    async def retry_all(db: Any) -> Any:
        return await operator.bulk(db, "retry", Selection(), actor="bench", now=0.0, yes=False)

    async def cancel_campaign(db: Any) -> Any:
        return await operator.bulk(db, "cancel", Selection(campaign="bench"), actor="bench", now=0.0,
                                yes=False)

    async def retry_reply(db: Any) -> Any:
        return await operator.bulk(db, "retry", Selection(reply_match="550"), actor="bench", now=0.0,
                                yes=False)
    return [("operator.bulk(retry, dry run)", retry_all),
            ("operator.bulk(cancel --campaign, dry run)", cancel_campaign),
            ("operator.bulk(retry --reply-match, dry run)", retry_reply)]


async def _time_all(path: Path, size: int, modules: tuple[str, ...] = MODULES,
                    tag: str = "") -> tuple[dict[str, float], dict[str, str]]:
    """Median milliseconds per call, and the functions not timed with the reason."""
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    async with open_db(str(path), readonly=True) as db:
        for label, fn in discover(modules):
            cases = _cases(fn, size, time.time())
            if isinstance(cases, str):
                skipped[label] = f"skipped, {cases}"
                continue
            for suffix, kwargs in cases:
                name = f"{label}({suffix}){tag}"
                try:
                    await fn(db, **kwargs)  # warm the page cache, as a refreshing monitor has it
                except Exception as exc:  # one broken query must not hide the others' figures
                    skipped[name] = f"FAILED: {type(exc).__name__}: {exc}"[:100]
                    continue
                calls = []
                for _ in range(CALLS):
                    started = time.perf_counter()
                    await fn(db, **kwargs)
                    calls.append(time.perf_counter() - started)
                timings[name] = statistics.median(calls) * 1000.0
    return timings, skipped


REPORT_MODULES = ("sender.store.reports", "sender.report.queries")
FINDINGS = 10_000  # ghosts (each also a multi-sends) and repeated Message-IDs in the observed copy
OBSERVED = 3600.0  # the archive holds the sends of the last hour (about 28,000 at a million rows)
_OBSERVE = """
INSERT INTO observations(mid, recipient, date, at, subject, source, observed_at, fingerprint,
                         copy, row_id, traced_by)
SELECT {mid}, recipient, claimed_at, claimed_at, 's', 'maildir:bench', :now, {fp} || id, 1,
       message_id, 'message-id'
  FROM send_log WHERE status = 'sent' AND claimed_at >= :since ORDER BY id {limit}
"""


def observed(source: Path, now: float) -> Path:
    """A copy of the queue with a BCC archive of its last ``OBSERVED`` seconds (every send then
    observed once), in which the report has ``FINDINGS`` of each kind to count and page: ghosts
    traced to a sent row whose Message-ID they do not carry (so each is a multi-send too) and
    Message-IDs held twice. Built once per process, beside the template."""
    path = source.with_name(source.stem + "-observed.db")
    if path.exists():
        return path
    copy_db(source, path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")
        params = {"now": now, "since": now - OBSERVED, "n": FINDINGS}
        conn.execute(_OBSERVE.format(mid="mid", fp="'fp'", limit=""), params)
        conn.execute(_OBSERVE.format(mid="'<ghost.' || id || '@bench>'", fp="'ghost'",
                                     limit="LIMIT :n"), params)
        conn.execute("INSERT INTO observations(mid, recipient, date, at, subject, source, "
                     "observed_at, fingerprint, copy, row_id, traced_by) "
                     "SELECT mid, recipient, date, at, subject, source, observed_at, fingerprint, "
                     "2, row_id, traced_by FROM observations WHERE fingerprint LIKE 'fp%' "
                     "ORDER BY id DESC LIMIT :n", params)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


def run(size: int, repeat: int, timeout: float) -> list[Result]:
    source = template(size, mixed=True)
    seen = observed(source, time.time())
    results: dict[str, Result] = {}
    skipped: dict[str, str] = {}
    for _ in range(repeat):
        timings, skipped = asyncio.run(asyncio.wait_for(_time_all(source, size), timeout))
        more, missed = asyncio.run(asyncio.wait_for(
            _time_all(seen, size, REPORT_MODULES, " observed"), timeout))
        timings.update(more)
        skipped.update(missed)
        for label, ms in timings.items():
            results.setdefault(label, Result("monitor", label, "ms")).runs.append(ms)
    out = list(results.values())
    if out:
        out[0].note = f"{size:,} messages"
    out += [Result("monitor", f"{label}: {why}", "-") for label, why in skipped.items()]
    return out
