"""The yardstick: ``python -m bench.bare``, a bare aiosmtplib loop with no database at all.

It sends the same, already built messages (a pickle of ``(from, to, bytes)`` written by
``bench.e2e``) over ``--concurrency`` sessions, each one connection reused for every message,
and prints one JSON line: messages sent and seconds from the first connect to the last reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib


async def _session(port: int, work: Iterator[tuple[str, str, bytes]]) -> int:
    sent = 0
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30,
                           local_hostname="bench.local")
    async with smtp:
        for sender, recipient, data in work:
            await smtp.sendmail(sender, [recipient], data)
            sent += 1
    return sent


async def main(port: int, messages: Path, concurrency: int) -> None:
    with messages.open("rb") as fh:
        work = iter(pickle.load(fh))
    started = time.perf_counter()
    sent = await asyncio.gather(*(_session(port, work) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    print(json.dumps({"sent": sum(sent), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--messages", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    asyncio.run(main(args.port, args.messages, args.concurrency))
