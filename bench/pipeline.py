"""Pipeline without SMTP: the real ``Daemon`` (claim -> build -> record) with ``NullSession``.

In-process, on a fresh queue of due messages, with the default settings at concurrency 8, then
with ``--prefetch 2`` (claims made while the sessions work), and with 64 null sessions so that
each claim takes a full ``--batch`` of 64: it measures what the database and the message
building cost per message when sending is free.
Logging stays at the library default (nothing below WARNING is formatted); ``--log`` in
``bench.daemon_child`` shows what the command line's INFO line per message adds.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sender.config import Settings
from sender.daemon import Daemon
from sender.delivery import NullSession
from sender.store.db import open_db

from .common import Result, claims_per_transaction, copy_db, state_counts
from .common import template as common_template

CONCURRENCY = 8
WIDE = 64  # as many sessions as --batch allows: the claims get as big as they can
PREFETCH = 2  # as in the end-to-end benchmark's claim-ahead contender


async def drain(db_path: Path, concurrency: int = CONCURRENCY,
                **overrides: object) -> tuple[int, float]:
    """Run ``Daemon.run(once=True)`` with null sessions; return (messages sent, seconds)."""
    base = Settings(db=str(db_path), worker="bench", concurrency=concurrency)
    settings = replace(base, **overrides)  # type: ignore[arg-type]
    async with open_db(str(db_path)) as db:
        daemon = Daemon(db, settings, [NullSession() for _ in range(concurrency)])
        started = time.perf_counter()
        stats = await daemon.run(once=True)
        seconds = time.perf_counter() - started
    return stats.sent, seconds


def run(n: int, repeat: int, timeout: float) -> list[Result]:
    out: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        template = common_template(n)
        for concurrency, prefetch in ((CONCURRENCY, 0), (CONCURRENCY, PREFETCH), (WIDE, 0)):
            how = f"x{concurrency}" + (f" --prefetch {prefetch}" if prefetch else "")
            rate = Result("pipeline", f"claim->build->record, NullSession {how}", "msg/s")
            batch = Result("pipeline", f"messages per claim transaction, {how}", "msg")
            for i in range(repeat):
                db = copy_db(template, Path(tmp) / f"queue{i}.db")
                sent, seconds = asyncio.run(asyncio.wait_for(drain(db, concurrency, prefetch=prefetch), timeout))
                if sent != n or state_counts(db) != {"sent": n}:
                    raise RuntimeError(f"pipeline sent {sent} of {n}: {state_counts(db)}")
                rate.runs.append(n / seconds)
                batch.runs.append(claims_per_transaction(db))
                db.unlink()
            out += [rate, batch]
    out[0].note = f"{n:,} messages"
    return out
