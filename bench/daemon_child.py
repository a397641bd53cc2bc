"""``python -m bench.daemon_child``: the real ``Daemon`` with null sessions, in its own process.

Used by the memory benchmark, so the parent can read this process's own peak RSS (``wait4``).
It works through the queue until it is empty or ``--seconds`` have passed (then it stops the
daemon the way SIGTERM does), samples its resident set while it runs and prints one JSON line
with its peak (``VmHWM``, see ``bench.peak``).
``--log`` sends the daemon's INFO lines to a file, as the command line does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path

from sender.config import Settings
from sender.daemon import Daemon
from sender.delivery import NullSession
from sender.store.db import open_db

from .peak import peak_mb


def rss_mb() -> float:
    """The current resident set, from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


async def main(db_path: str, seconds: float, concurrency: int) -> dict[str, float]:
    settings = Settings(db=db_path, worker="bench-memory", concurrency=concurrency)
    samples: list[float] = []
    async with open_db(db_path) as db:
        daemon = Daemon(db, settings, [NullSession() for _ in range(concurrency)])
        start_rss = rss_mb()

        async def watch() -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                samples.append(rss_mb())
                await asyncio.sleep(0.25)
            daemon.request_stop()

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        try:
            stats = await daemon.run(once=True)
        finally:
            watcher.cancel()
        elapsed = time.perf_counter() - started
    half = samples[len(samples) // 2] if samples else float("nan")
    return {"sent": stats.sent, "seconds": elapsed, "rss_start_mb": start_rss,
            "rss_half_mb": half, "rss_end_mb": rss_mb(),
            "peak_mb": peak_mb()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db", required=True)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--log", type=Path, help="write the daemon's INFO log here")
    args = p.parse_args()
    if args.log:
        logging.basicConfig(level=logging.INFO, filename=args.log,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(asyncio.run(main(args.db, args.seconds, args.concurrency))), flush=True)
