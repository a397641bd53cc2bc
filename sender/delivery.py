"""SMTP delivery with aiosmtplib: reusable sessions and the one place SMTP errors are classified.

Each ``Session`` keeps one connection open and sends many messages over it. Every failure is
translated here, and only here, into a ``DeliveryError`` whose ``kind`` drives the state machine:

* ``transient``: provably not delivered (a 4xx reply, or the line broke before the message data
  was handed over). Retry with backoff.
* ``permanent``: a 5xx reply, or a message that cannot be built. Failed, reason stored.
* ``ambiguous``: the connection died or timed out after the message data and its end marker
  were handed over (phase ``dot``), so the server may have accepted the message. ``unknown``,
  never resent automatically. A loss before the server's 354 (phase ``data``) is definite.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from typing import Protocol

import aiosmtplib

from .config import Settings
from .errors import DeliveryError, Kind
from .fence import FenceCheck, Fenced
from .message import Envelope

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What the daemon needs from a session; the null transport in benchmarks also fits."""

    async def send(self, envelope: Envelope, fence: FenceCheck | None = None) -> tuple[int, str]: ...

    async def close(self) -> None: ...


def classify(exc: BaseException, phase: str) -> DeliveryError:
    """Translate an aiosmtplib/OS exception raised during ``phase`` into a ``DeliveryError``."""
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return DeliveryError("transient", "greeting", exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DeliveryError("transient", "auth", exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if phase in ("connect", "auth"):
            return DeliveryError("transient", phase, exc.code, exc.message)
        kind: Kind = "transient" if 400 <= exc.code < 500 else "permanent"
        return DeliveryError(kind, phase, exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return DeliveryError("transient", "connect", None, str(exc))
    if isinstance(exc, OSError | TimeoutError | aiosmtplib.SMTPException | asyncio.TimeoutError):
        what = "timed out" if isinstance(exc, TimeoutError | asyncio.TimeoutError) else "connection lost"
        if phase == "dot":
            return DeliveryError("ambiguous", phase, None, f"{what} after the message data was sent: {exc}")
        return DeliveryError("transient", phase, None, f"{what}: {exc}")
    if isinstance(exc, ValueError):
        return DeliveryError("permanent", phase, None, f"refused by client: {exc}")
    raise TypeError(f"unclassified delivery exception: {exc!r}") from exc


END_OF_DATA = b".\r\n"
_LEADING_DOT = re.compile(rb"(?m)^\.")
_LINE_END = re.compile(rb"\r?\n|\r")


def _dot_stuff(data: bytes) -> bytes:
    """RFC 5321 transparency: CRLF line ends, leading dots doubled, then the end-of-data marker.
    The counts skip both rewrites for the usual message (already CRLF, no line starting with a dot)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_END.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data + END_OF_DATA


async def _unfenced(point: str) -> None:
    return None


class Session:
    """One reusable SMTP connection (opened lazily, reopened after a failure)."""

    def __init__(self, settings: Settings, hostname: str | None = None) -> None:
        self._settings = settings
        self._hostname = hostname or socket.gethostname()
        self._smtp: aiosmtplib.SMTP | None = None
        self.phase = "idle"

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, timeout=s.smtp_timeout,
            use_tls=s.smtp_tls, start_tls=bool(s.smtp_starttls),
            local_hostname=self._hostname,
            tls_context=ssl.create_default_context() if (s.smtp_tls or s.smtp_starttls) else None,
        )
        await smtp.connect()
        if s.smtp_user:
            try:
                await smtp.login(s.smtp_user, s.smtp_password or "")
            except BaseException:
                smtp.close()
                raise
        return smtp

    async def send(self, envelope: Envelope, fence: FenceCheck | None = None) -> tuple[int, str]:
        """Send one message; return the server's final (code, reply) or raise ``DeliveryError``.

        ``fence`` is asked before ``MAIL FROM``, before each later command and right before the
        end-of-data marker; when it raises ``Fenced`` the message is not started, or the line is
        cut before the final dot."""
        ask = fence or _unfenced
        self.phase = "connect"
        try:
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = None
                self._smtp = await self._connect()
            smtp = self._smtp
            await ask("mail")
            self.phase = "mail"
            await smtp.mail(envelope.sender)
            await ask("rcpt")
            self.phase = "rcpt"
            await smtp.rcpt(envelope.recipient)
            await ask("data")
            self.phase = "data"
            response = await self._data(smtp, envelope.data, ask)
        except Fenced:
            if self.phase != "connect":
                self._abort()  # a transaction begun: closing the line cancels it, even inside DATA
            self.phase = "idle"
            raise
        except asyncio.CancelledError:
            self._abort()  # mid-command: the line is in an unknown state, never reuse it
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            error = classify(exc, self.phase)
            self.phase = "idle"
            await self._recover(error)
            raise error from exc
        # On cancellation ``phase`` is left as it was, so the caller can tell whether the
        # data may have left (see Daemon._deliver).
        self.phase = "idle"
        return response.code, response.message

    async def _data(self, smtp: aiosmtplib.SMTP, data: bytes, fence: FenceCheck) -> aiosmtplib.SMTPResponse:
        """DATA in two phases, so a failure is only ambiguous once the message may be out.

        Until the end-of-data marker is written nothing can be delivered (``data``: definite):
        the message text goes first and is flushed to the kernel, the fence is asked, and only
        then the marker, in one small write the kernel takes at once. From there on (``dot``), a
        lost line or a timeout means the server may have accepted it.
        """
        start = await smtp.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the message data")
        protocol.write(_dot_stuff(data)[:-len(END_OF_DATA)])  # raises (definite) if the line is gone
        await self._flushed(smtp)
        await fence("dot")
        protocol.write(END_OF_DATA)  # the point of no return
        self.phase = "dot"
        response = await protocol.read_response(timeout=self._settings.smtp_timeout)
        if response.code != 250:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

    async def _flushed(self, smtp: aiosmtplib.SMTP) -> None:
        """Wait until the transport has handed every byte written so far to the kernel, so the
        marker written next leaves at once and cannot wait in our buffer through a freeze."""
        transport = smtp.transport
        if not isinstance(transport, asyncio.WriteTransport):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.smtp_timeout
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("connection lost during the message data")
            if loop.time() > deadline:
                raise TimeoutError("the message data was not accepted in time")
            await asyncio.sleep(0.002)

    async def _recover(self, error: DeliveryError) -> None:
        """Leave the session usable: RSET after a refused transaction, else drop the line."""
        smtp = self._smtp
        if smtp is None:
            return
        if error.code is not None and error.phase in ("mail", "rcpt", "data", "dot") and smtp.is_connected:
            try:
                await smtp.rset()
                return
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
        smtp.close()
        self._smtp = None

    def _abort(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()


class NullSession:
    """Accepts everything without a network: for pipeline benchmarks."""

    async def send(self, envelope: Envelope, fence: FenceCheck | None = None) -> tuple[int, str]:
        if fence is not None:
            for point in ("mail", "rcpt", "data", "dot"):
                await fence(point)
        return 250, "OK (null transport)"

    async def close(self) -> None:
        return None
