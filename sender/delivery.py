"""SMTP delivery with aiosmtplib: reusable sessions and the one place SMTP errors are classified.

Each ``Session`` keeps one connection open and sends many messages over it. Every failure is
translated here, and only here, into a ``DeliveryError`` whose ``kind`` is the action the table in
``sender.classify`` gives for the phase and the reply (see ``docs/failures.md``). A loss before the
server's 354 (phase ``data``) is definite; from the write of the data on (phase ``dot``) it is not.

The sessions of one process share a ``Relay``: the TLS context, and the one login outcome, so a
wrong password costs one failed login per process, not one per session and mechanism.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from typing import TYPE_CHECKING, Protocol

from .classify import decide, reply_class
from .config import Settings
from .errors import DeliveryError, Kind, UsageError
from .fence import FenceCheck, Fenced

if TYPE_CHECKING:
    import aiosmtplib

    from .message import Envelope
else:
    aiosmtplib = None  # imported by ``_load_smtp`` when a session first sends or classifies

log = logging.getLogger(__name__)

TOO_BIG = "message too big for the relay: "


class Transport(Protocol):
    """What the daemon needs from a session; the null transport in benchmarks also fits.

    ``phase`` is where a send stands (``idle``, ``connect`` … ``dot``): when a send is cancelled,
    it tells whether the data may have left."""

    phase: str

    async def send(self, envelope: Envelope, fence: FenceCheck | None = None) -> tuple[int, str]: ...

    async def close(self) -> None: ...


_HINTS = {
    (530,): "the relay requires AUTH: set SENDER_SMTP_USER and SENDER_SMTP_PASSWORD",
    (535,): "check SENDER_SMTP_USER and SENDER_SMTP_PASSWORD",
    (538,): "the relay wants an encrypted connection: use --tls or --starttls",
}


def _load_smtp() -> None:
    """Import aiosmtplib (and the ``email`` package it pulls in) on first use: ``run --once`` on
    an empty queue never needs it, and that run is a cron line's whole cost."""
    global aiosmtplib
    if aiosmtplib is None:
        import aiosmtplib


def _hint(phase: str, code: int | None) -> str:
    for codes, text in _HINTS.items():
        if code in codes:
            return text
    if phase == "mail":
        return "the relay refuses this client or sender address: check its relay permissions or set credentials"
    if phase in ("greeting", "ehlo"):
        return "the relay refuses this client"
    if phase == "auth":
        return "check the credentials and the AUTH settings of the relay"
    return "check --smtp-host, --smtp-port and the TLS flags"


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 5:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _client_side(exc: BaseException, phase: str, host: str) -> DeliveryError | None:
    """Failures the client decides without a reply: DNS, certificates, TLS handshakes."""
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason or str(cause)
            return DeliveryError("stop", "tls", None,
                                 f"certificate verify failed for {host}: {why} (use --tls-ca FILE)")
        if isinstance(cause, ssl.SSLError):
            return DeliveryError("stop", "tls", None, f"TLS handshake with {host} failed: {cause.reason or cause}")
        if isinstance(cause, socket.gaierror):
            kind: Kind = "outage" if cause.errno == socket.EAI_AGAIN else "stop"
            return DeliveryError(kind, "connect", None, f"cannot resolve relay host {host}: {cause.strerror} "
                                                        "(check --smtp-host)")
        if isinstance(cause, UnicodeError):
            return DeliveryError("stop", "connect", None, f"relay host {host!r} is not a valid host name: {cause}")
    return None


def _at_greeting(exc: BaseException) -> bool:
    """aiosmtplib reports the greeting inside ``connect``: a non-220, a timeout or a loss while reading it."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # a non-220 or a malformed greeting
        return True
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        return "ready message" in str(exc)
    return isinstance(exc, aiosmtplib.SMTPConnectError) and isinstance(exc.__cause__,
                                                                       aiosmtplib.SMTPServerDisconnected)


def classify(exc: BaseException, phase: str, host: str = "the relay") -> DeliveryError:
    """Translate an aiosmtplib/OS exception raised during ``phase`` into a ``DeliveryError``."""
    if isinstance(exc, DeliveryError):
        return exc
    _load_smtp()
    if phase in ("connect", "tls") and (found := _client_side(exc, phase, host)) is not None:
        return found
    if phase == "connect":
        phase = "greeting" if _at_greeting(exc) else phase
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code: int | None = exc.code
        text = exc.message
        reply = reply_class(code)
        if code is not None and code < 0:
            code = None
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        code, text, reply = None, f"timed out: {exc}", "timeout"
    elif isinstance(exc, OSError | aiosmtplib.SMTPException):
        code, text, reply = None, f"connection lost: {exc}", "lost"
    elif isinstance(exc, ValueError):
        return DeliveryError("failed", phase, None, f"refused by client: {exc}")
    else:
        raise TypeError(f"unclassified delivery exception: {exc!r}") from exc
    action = decide(phase, reply, code, text)
    if action in ("ok", "sent"):  # a success code where it is not the expected reply
        action = decide(phase, "malformed")
    if action == "unknown" and reply in ("lost", "timeout"):
        text = text.replace(":", " after the message data was sent:", 1)
    if action == "stop":
        hint = _hint(phase, code)
        if phase == "auth" or code == 535:
            text, code = f"authentication failed: {(str(code) + ' ') if code else ''}{text}", None
        text = f"{text} ({hint})"
    return DeliveryError(action, phase, code, text)  # type: ignore[arg-type]


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The system store, plus ``--tls-ca`` for this relay only; no verification with ``--tls-insecure``."""
    context = ssl.create_default_context()
    if settings.smtp_tls_ca:
        try:
            context.load_verify_locations(cafile=settings.smtp_tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-ca {settings.smtp_tls_ca}: cannot load CA certificates ({exc})") from exc
    if settings.smtp_tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Relay:
    """What the sessions of one process share: the TLS context and the login outcome."""

    AUTH_PREFERENCE = ("cram-md5", "plain", "login")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        if settings.smtp_tls or settings.smtp_starttls or settings.smtp_tls_ca or settings.smtp_tls_insecure:
            self._context = tls_context(settings)  # TLS is asked for: a bad --tls-ca is an error at start
        self.logged_in = False
        self.auth_error: DeliveryError | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def context(self) -> ssl.SSLContext:
        """Made when first needed: loading the system store costs tens of milliseconds of CPU, which
        a plaintext loopback relay, or a run with nothing due, never needs."""
        if self._context is None:
            self._context = tls_context(self.settings)
        return self._context

    async def login(self, smtp: aiosmtplib.SMTP) -> None:
        """AUTH with one mechanism; after one refusal no session of this process tries again."""
        s = self.settings
        if self.auth_error is not None:
            raise self.auth_error
        if smtp.get_transport_info("sslcontext") is None and not s.smtp_allow_plaintext_auth:
            raise DeliveryError("stop", "auth", None,
                                f"refusing to send credentials over an unencrypted connection to "
                                f"{s.smtp_host}:{s.smtp_port}: the relay does not offer STARTTLS "
                                "(use --tls, or --allow-plaintext-auth for a loopback test relay)")
        offered = [m for m in self.AUTH_PREFERENCE if m in smtp.server_auth_methods]
        if not offered:
            raise DeliveryError("stop", "auth", None,
                                f"the relay offers no AUTH mechanism this sender supports "
                                f"(offered: {' '.join(smtp.server_auth_methods) or 'none'}; supported: "
                                f"{' '.join(self.AUTH_PREFERENCE)})")
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self.logged_in:
            await self._auth(smtp, offered[0])
            return
        async with self._lock:  # until one login succeeded, sessions log in one at a time
            if self.auth_error is not None:
                raise self.auth_error
            await self._auth(smtp, offered[0])
            self.logged_in = True

    async def _auth(self, smtp: aiosmtplib.SMTP, mechanism: str) -> None:
        s = self.settings
        try:
            await getattr(smtp, f"auth_{mechanism.replace('-', '')}")(s.smtp_user or "", s.smtp_password or "")
        except aiosmtplib.SMTPResponseException as exc:
            error = classify(exc, "auth")
            if error.kind == "stop":
                self.auth_error = error
                log.error("AUTH %s refused: %s; no session of this process logs in again", mechanism.upper(),
                          error.reply)
            raise error from exc


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

    def __init__(self, settings: Settings, hostname: str | None = None, relay: Relay | None = None) -> None:
        self._settings = settings
        self._hostname = hostname or socket.gethostname()
        self._relay = relay or Relay(settings)
        self._smtp: aiosmtplib.SMTP | None = None
        self.size_limit: int | None = None
        self.phase = "idle"

    async def _connect(self) -> aiosmtplib.SMTP:
        """Connect, EHLO, STARTTLS whenever offered (required with ``--starttls``), AUTH; each a phase."""
        s = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, timeout=s.smtp_timeout,
            use_tls=s.smtp_tls, start_tls=False, local_hostname=self._hostname,
            tls_context=self._relay.context if s.smtp_tls else None,
        )
        try:
            await smtp.connect()
            self.phase = "ehlo"
            await self._hello(smtp)
            if not s.smtp_tls and (s.smtp_starttls or smtp.supports_extension("starttls")):
                self.phase = "tls"
                if not smtp.supports_extension("starttls"):
                    raise DeliveryError("stop", "tls", None, "the relay does not offer STARTTLS (--starttls "
                                                             "requires it)")
                await smtp.starttls(tls_context=self._relay.context)
                self.phase = "ehlo"
                await self._hello(smtp)
            if s.smtp_user:
                self.phase = "auth"
                await self._relay.login(smtp)
        except BaseException:
            smtp.close()
            raise
        size = smtp.esmtp_extensions.get("size", "").strip()
        self.size_limit = int(size) if size.isdigit() and int(size) > 0 else None
        return smtp

    @staticmethod
    async def _hello(smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code not in (500, 502) or not smtp.is_connected:
                raise
            await smtp.helo()

    def _mail_options(self, smtp: aiosmtplib.SMTP, envelope: Envelope) -> list[str]:
        """``SIZE=n`` when the relay speaks SIZE; a message over its limit fails before MAIL FROM."""
        if not smtp.supports_extension("size"):
            return []
        size = len(envelope.data)
        if self.size_limit is not None and size > self.size_limit:
            raise DeliveryError("failed", "mail", None, f"{TOO_BIG}{size} bytes, over the relay's SIZE limit "
                                                        f"of {self.size_limit} bytes (not transmitted)")
        return [f"SIZE={size}"]

    async def send(self, envelope: Envelope, fence: FenceCheck | None = None) -> tuple[int, str]:
        """Send one message; return the server's final (code, reply) or raise ``DeliveryError``.

        ``fence`` is asked before ``MAIL FROM``, before each later command and right before the
        end-of-data marker; when it raises ``Fenced`` the message is not started, or the line is
        cut before the final dot."""
        ask = fence or _unfenced
        if aiosmtplib is None:
            _load_smtp()
        self.phase = "connect"
        try:
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = None
                self._smtp = await self._connect()
            smtp = self._smtp
            await ask("mail")
            self.phase = "mail"
            await smtp.mail(envelope.sender, options=self._mail_options(smtp, envelope))
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
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError, DeliveryError) as exc:
            error = classify(exc, self.phase, self._settings.smtp_host)
            self.phase = "idle"
            await self._recover(error)
            raise error from (None if error is exc else exc)
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
        if not 200 <= response.code < 300 or response.code == 221:
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
        if smtp is None or (error.code is None and error.kind == "failed"):
            return  # nothing reached the line (refused by the client): the session is still clean
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

    phase = "idle"

    async def send(self, envelope: Envelope, fence: FenceCheck | None = None) -> tuple[int, str]:
        if fence is not None:
            for point in ("mail", "rcpt", "data", "dot"):
                await fence(point)
        return 250, "OK (null transport)"

    async def close(self) -> None:
        return None


def pool(settings: Settings, n: int | None = None) -> list[Session]:
    """The sessions of one process, sharing one ``Relay`` (one TLS context, one login outcome)."""
    relay = Relay(settings)
    return [Session(settings, relay=relay) for _ in range(n or settings.concurrency)]
