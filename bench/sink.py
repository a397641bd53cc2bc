"""The benchmark sink: ``python -m bench.sink``, a minimal aiosmtpd server: it counts and stores nothing.

It runs in its own process (as a real relay would), built with ``sender.sink.serve`` and a
handler that writes nothing, so every contender meets the same, cheapest possible server. It
counts messages and distinct Message-IDs (one ``bytes.find`` in the header block, no parsing),
so a run that delivered a message twice cannot pass for a fast one. It prints ``port N`` when it
listens, then answers each ``stats`` line on stdin with one JSON line (messages accepted,
distinct Message-IDs, and the monotonic times of the first and last, which Linux shares between
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


def message_id(data: bytes) -> bytes:
    """The Message-ID header's value, or ``b""``: a search of the header block, nothing parsed."""
    head = b"\n" + data[:data.find(b"\r\n\r\n") + 2 or len(data)]
    at = head.find(b"\nMessage-ID:")
    if at < 0:
        at = head.find(b"\nmessage-id:")
    if at < 0:
        return b""
    end = head.find(b"\r\n", at + 12)
    return head[at + 12:end if end >= 0 else len(head)].strip()


class CountingHandler:
    """Accepts every message; remembers how many, their Message-IDs and when."""

    def __init__(self) -> None:
        self.count = 0
        self.mids: set[bytes] = set()
        self.first = 0.0
        self.last = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1
        self.mids.add(message_id(envelope.original_content or b""))
        return "250 OK"

    def take(self) -> dict[str, float]:
        out = {"count": self.count, "mids": len(self.mids), "first": self.first, "last": self.last}
        self.count, self.first, self.last = 0, 0.0, 0.0
        self.mids = set()
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
