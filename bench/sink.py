"""The benchmark sink: ``python -m bench.sink``, an aiosmtpd server that only counts.

It runs in its own process (as a real relay would), built with ``sender.sink.serve`` and a
handler that writes nothing, so both contenders meet the same, cheapest possible server. It
prints ``port N`` when it listens, then answers each ``stats`` line on stdin with one JSON line
(messages accepted and the monotonic times of the first and last, which Linux shares between
processes) and starts counting afresh. It exits on ``quit``, at end of input, or after
``--lifetime`` seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from typing import Any

from sender.sink import serve


class CountingHandler:
    """Accepts every message; remembers only how many and when."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1
        return "250 OK"

    def take(self) -> dict[str, float]:
        out = {"count": self.count, "first": self.first, "last": self.last}
        self.count, self.first, self.last = 0, 0.0, 0.0
        return out


async def main(port: int, lifetime: float) -> None:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as unused:
        server = await serve("127.0.0.1", port, unused, handler)
        print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            async with asyncio.timeout(lifetime):
                while line := (await reader.readline()).strip():
                    if line == b"quit":
                        break
                    if line == b"stats":
                        print(json.dumps(handler.take()), flush=True)
        except TimeoutError:
            print("sink: lifetime over, exiting", file=sys.stderr)
        finally:
            server.close()
            await server.wait_closed()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=600.0)
    args = p.parse_args()
    asyncio.run(main(args.port, args.lifetime))
