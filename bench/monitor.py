"""Monitor queries: the time of each read function the monitor and ``status`` use, on a big queue.

The functions are found when the benchmark runs: every public coroutine function taking the
database first in ``sender.queries``, ``sender.monitor`` and ``sender.report`` (those that
exist). Arguments are filled by name (``now``, ``row_id``, ``since``...); a function needing an
argument this module cannot guess is listed as skipped, never silently dropped. A ``text``
filter is timed empty, with an exact recipient and with a fragment (the slow path).

The database is a busy queue (mostly sent, every state present, SendLog rows) opened
read-only, as the monitor opens it. Each figure is the median of several warm calls.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sender.db import open_db

from .common import Result, template

MODULES = ("sender.queries", "sender.monitor", "sender.report")
CALLS = 5


def _cases(fn: Callable[..., Awaitable[Any]], size: int, now: float
           ) -> list[tuple[str, dict[str, Any]]] | str:
    """Keyword arguments for each timed call of ``fn``, or why it is skipped."""
    values: dict[str, Any] = {"now": now, "row_id": size // 2, "message_id": size // 2,
                              "id": size // 2, "since": now - 86400.0, "window": 86400.0,
                              "until": now, "limit": 100}
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "db":
        return "first argument is not the database"
    kwargs: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in values and p.default is inspect.Parameter.empty:
            kwargs[p.name] = values[p.name]
        elif p.default is inspect.Parameter.empty:
            return f"needs {p.name}"
    cases = [("", kwargs)]
    if "text" in {p.name for p in params}:
        row = size // 2 + 1
        cases += [("text=recipient", {**kwargs, "text": f"user{row}@example.com"}),
                  ("text=fragment", {**kwargs, "text": "user12"})]
    return cases


def discover() -> list[tuple[str, Callable[..., Awaitable[Any]]]]:
    found = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for attr, fn in vars(module).items():
            if (not attr.startswith("_") and inspect.iscoroutinefunction(fn)
                    and fn.__module__ == name):
                found.append((f"{name.removeprefix('sender.')}.{attr}", fn))
    return found


async def _time_all(path: Path, size: int) -> tuple[dict[str, float], dict[str, str]]:
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    async with open_db(str(path), readonly=True) as db:
        for label, fn in discover():
            cases = _cases(fn, size, time.time())
            if isinstance(cases, str):
                skipped[label] = cases
                continue
            for suffix, kwargs in cases:
                await fn(db, **kwargs)  # warm the page cache, as a refreshing monitor has it
                calls = []
                for _ in range(CALLS):
                    started = time.perf_counter()
                    await fn(db, **kwargs)
                    calls.append(time.perf_counter() - started)
                timings[f"{label}({suffix})"] = statistics.median(calls) * 1000.0
    return timings, skipped


def run(size: int, repeat: int, timeout: float) -> list[Result]:
    source = template(size, mixed=True)
    results: dict[str, Result] = {}
    skipped: dict[str, str] = {}
    for _ in range(repeat):
        timings, skipped = asyncio.run(asyncio.wait_for(_time_all(source, size), timeout))
        for label, ms in timings.items():
            results.setdefault(label, Result("monitor", label, "ms")).runs.append(ms)
    out = list(results.values())
    if out:
        out[0].note = f"{size:,} messages"
    out += [Result("monitor", f"{label}: skipped, {why}", "-") for label, why in skipped.items()]
    return out
