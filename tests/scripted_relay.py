"""A scripted SMTP relay on 127.0.0.1 for fault tests: every phase (greeting, EHLO, STARTTLS, AUTH,
MAIL, RCPT, DATA, after the data) can answer with any line, drop the line, stall, or send garbage.

aiosmtpd cannot misbehave at the greeting or EHLO, nor answer 221 or garbage after the data; this
server can. It records every command line and every message it accepted, per connection.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

LOST = "LOST"        # close the connection instead of answering ("250-partial|LOST": a line, then close)
STALL = "STALL"      # answer nothing for ``stall`` seconds, then close

Fault = str | Callable[[int], str | None] | None  # a reply, LOST/STALL, or f(message number)


@dataclass
class ScriptedRelay:
    faults: dict[str, Fault] = field(default_factory=dict)
    size: int | None = None
    auth: tuple[str, ...] = ()
    password: str = "right"
    starttls: bool = False
    stall: float = 2.0
    port: int = 0
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    mails: int = 0

    def count(self, verb: str) -> int:
        return sum(1 for c in self.commands if c.upper().startswith(verb))

    def _fault(self, phase: str) -> str | None:
        fault = self.faults.get(phase)
        if callable(fault):
            return fault(self.mails)
        return fault

    async def _say(self, writer: asyncio.StreamWriter, phase: str, default: str) -> bool:
        """Answer ``phase``: the scripted fault, else ``default``. False: the line is gone."""
        fault = self._fault(phase)
        if fault and fault.endswith("|" + LOST):
            writer.write(fault.removesuffix("|" + LOST).encode() + b"\r\n")
            await writer.drain()
            fault = LOST
        if fault == LOST:
            writer.close()
            return False
        if fault == STALL:
            await asyncio.sleep(self.stall)
            writer.close()
            return False
        writer.write(((fault or default) + "\r\n").encode())
        await writer.drain()
        return True

    def _ehlo(self) -> str:
        lines = ["relay.test"]
        if self.size:
            lines.append(f"SIZE {self.size}")
        if self.auth:
            lines.append("AUTH " + " ".join(self.auth))
        if self.starttls:
            lines.append("STARTTLS")
        lines.append("8BITMIME")
        return "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await self._say(writer, "greeting", "220 relay.test ESMTP scripted"):
            return
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                ok = await self._say(writer, "ehlo", self._ehlo() if verb == "EHLO" else "250 relay.test")
            elif verb == "STARTTLS":
                ok = await self._say(writer, "tls", "454 4.7.0 TLS not available in this script")
            elif verb == "AUTH":
                ok = await self._auth(reader, writer, command)
            elif verb == "MAIL":
                self.mails += 1
                ok = await self._say(writer, "mail", "250 2.1.0 Ok")
            elif verb == "RCPT":
                ok = await self._say(writer, "rcpt", "250 2.1.5 Ok")
            elif verb == "DATA":
                ok = await self._say(writer, "data", "354 End data with <CR><LF>.<CR><LF>")
                if ok and (self._fault("data") or "354").startswith("354"):
                    ok = await self._message(reader, writer)
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:  # RSET, NOOP
                writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
                ok = True
            if not ok:
                return

    async def _auth(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str) -> bool:
        parts = command.split()
        mechanism = parts[1].upper() if len(parts) > 1 else ""
        self.logins.append(mechanism)
        if self._fault("auth") is not None:
            return await self._say(writer, "auth", "")
        password = ""
        if mechanism == "PLAIN":
            blob = parts[2] if len(parts) > 2 else ""
            if not blob:
                writer.write(b"334 \r\n")
                await writer.drain()
                blob = (await reader.readline()).decode().strip()
            password = base64.b64decode(blob).split(b"\0")[-1].decode()
        elif mechanism == "LOGIN":
            writer.write(b"334 VXNlcm5hbWU6\r\n")
            await writer.drain()
            await reader.readline()
            writer.write(b"334 UGFzc3dvcmQ6\r\n")
            await writer.drain()
            password = base64.b64decode((await reader.readline()).strip()).decode()
        reply = "235 2.7.0 Authentication successful" if password == self.password else \
            "535 5.7.8 Error: authentication failed: bad credentials"
        writer.write((reply + "\r\n").encode())
        await writer.drain()
        return True

    async def _message(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        data = bytearray()
        while (line := await reader.readline()) not in (b".\r\n", b""):
            data += line
        if not line:
            return False
        self.messages.append(bytes(data))
        return await self._say(writer, "dot", "250 2.0.0 Ok: queued")


@asynccontextmanager
async def scripted(relay: ScriptedRelay) -> AsyncIterator[ScriptedRelay]:
    """Serve ``relay`` on 127.0.0.1 in the running event loop."""
    server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        await server.wait_closed()
