"""A local capture SMTP server (aiosmtpd) that stores every message in a maildir.

For testing and the demo only: it accepts anything on loopback and writes each message, with
``Return-Path`` and one ``Delivered-To`` per envelope recipient prepended the way an MTA does,
so what arrived can later be observed and compared with the SendLog.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)


class CaptureHandler:
    """aiosmtpd handler: one maildir file per accepted message."""

    def __init__(self, maildir: str | Path) -> None:
        self.maildir = mailbox.Maildir(str(maildir), create=True)
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        prefix = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode()
        for rcpt in envelope.rcpt_tos:
            prefix += f"Delivered-To: {rcpt}\r\n".encode()
        key = self.maildir.add(prefix + content)
        self.count += 1
        headers = BytesHeaderParser(policy=compat32).parsebytes(content, headersonly=True)
        log.info("sink: accepted %s from=%s to=%s message-id=%s", key, envelope.mail_from,
                 ",".join(envelope.rcpt_tos), headers.get("Message-ID", "-"))
        return f"250 OK queued as {key}"


async def serve(host: str, port: int, maildir: str | Path, handler: Any = None,
                smtp_class: type[SMTP] = SMTP) -> asyncio.Server:
    """Start the capture server on the running loop; the caller closes it."""
    handler = handler or CaptureHandler(maildir)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: smtp_class(handler, hostname="sink.local", ident="sender-sink", data_size_limit=32 * 2**20),
        host=host, port=port)


async def run_forever(host: str, port: int, maildir: str, stop: asyncio.Event) -> None:
    server = await serve(host, port, maildir)
    bound = server.sockets[0].getsockname()
    print(f"sink listening on {bound[0]}:{bound[1]}, writing to {maildir}", flush=True)
    started = time.monotonic()
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        log.info("sink stopped after %.0fs", time.monotonic() - started)
