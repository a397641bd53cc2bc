"""Reading a mailbox over IMAP (stdlib ``imaplib``): ``observe --imap imaps://user@host/INBOX``.

For bounce and unsubscribe mailboxes that live on a server. The folder is opened read-only
(``EXAMINE``; messages are fetched with ``BODY.PEEK[]`` so nothing is marked seen) and streamed in
batches, each copy handed to ``observe`` exactly like a maildir file. The password comes only from
``SENDER_IMAP_PASSWORD``; it never crosses an unencrypted connection: ``imaps://`` is TLS from
the start, ``imap://`` must offer STARTTLS. Certificates are verified (``--imap-ca FILE`` trusts a
private CA).
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from .errors import MailboxError, UsageError
from .mailreader import RawMessage, copy_of

BATCH = 100
TIMEOUT = 30.0
_FETCHED = re.compile(rb"UID (\d+).*?INTERNALDATE \"([^\"]+)\"", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ImapMailbox:
    """An IMAP folder to observe; build it with ``open_imap``, which validates the URL."""

    url: str
    host: str
    port: int
    user: str
    folder: str
    tls: bool
    password: str
    ca_file: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"ImapMailbox({self.source!r})"

    @property
    def kind(self) -> str:
        return "imap"

    @property
    def path(self) -> PurePosixPath:
        return PurePosixPath(self.folder)

    @property
    def source(self) -> str:
        return f"imap:{'imaps' if self.tls else 'imap'}://{self.user}@{self.host}:{self.port}/{self.folder}"

    def total(self) -> int:
        with self._session() as conn:
            return len(self._uids(conn))

    def messages(self) -> Iterator[RawMessage]:
        with self._session() as conn:
            uids = self._uids(conn)
            for start in range(0, len(uids), BATCH):
                chunk = b",".join(uids[start:start + BATCH]).decode("ascii")
                status, data = conn.uid("FETCH", chunk, "(INTERNALDATE BODY.PEEK[])")
                if status != "OK":
                    raise MailboxError(f"{self.source}: FETCH failed: {_text(data)}")
                for item in data:
                    if isinstance(item, tuple) and len(item) == 2:
                        yield copy_of(item[1], _internal_date(item[0]))

    def _uids(self, conn: imaplib.IMAP4) -> list[bytes]:
        status, data = conn.uid("SEARCH", None, "ALL")  # type: ignore[arg-type]
        if status != "OK":
            raise MailboxError(f"{self.source}: SEARCH failed: {_text(data)}")
        return data[0].split() if data and data[0] else []

    def _session(self) -> _Session:
        return _Session(self)


class _Session:
    """One logged-in, read-only IMAP connection (a context manager that always logs out)."""

    def __init__(self, box: ImapMailbox) -> None:
        self.box = box
        self.conn: imaplib.IMAP4 | None = None

    def __enter__(self) -> imaplib.IMAP4:
        box = self.box
        context = ssl.create_default_context(cafile=box.ca_file)
        try:
            if box.tls:
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(box.host, box.port, ssl_context=context, timeout=TIMEOUT)
            else:
                conn = imaplib.IMAP4(box.host, box.port, timeout=TIMEOUT)
                if "STARTTLS" not in conn.capabilities:
                    conn.shutdown()
                    raise MailboxError(f"{box.source}: server offers no STARTTLS; refusing to send the "
                                       "password in clear (use imaps://)")
                conn.starttls(ssl_context=context)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{box.source}: cannot connect: {exc}") from exc
        self.conn = conn
        try:
            conn.login(box.user, box.password)
        except imaplib.IMAP4.error as exc:
            conn.shutdown()
            raise MailboxError(f"{box.source}: login failed for {box.user}") from exc
        status, data = conn.select(_quote(box.folder), readonly=True)
        if status != "OK":
            conn.logout()
            raise MailboxError(f"{box.source}: cannot open folder {box.folder}: {_text(data)}")
        return conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                self.conn.logout()


def open_imap(url: str, password: str | None, ca_file: str | None = None) -> ImapMailbox:
    """Validate ``imaps://user@host[:port]/FOLDER``; raise ``UsageError`` with one clear line."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise UsageError(f"--imap {url}: expected imaps://user@host/FOLDER (or imap:// with STARTTLS)")
    if not parts.hostname or not parts.username:
        raise UsageError(f"--imap {url}: needs a user and a host, as in imaps://user@host/INBOX")
    if parts.password:
        raise UsageError("--imap: do not put the password in the URL; set SENDER_IMAP_PASSWORD")
    if not password:
        raise UsageError("--imap: set SENDER_IMAP_PASSWORD to the mailbox password")
    try:
        port = parts.port or (993 if parts.scheme == "imaps" else 143)
    except ValueError as exc:
        raise UsageError(f"--imap {url}: bad port") from exc
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapMailbox(url, parts.hostname, port, unquote(parts.username), folder, parts.scheme == "imaps",
                       password, ca_file)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _internal_date(meta: bytes) -> float | None:
    match = _FETCHED.search(meta) or re.search(rb'INTERNALDATE "([^"]+)"', meta)
    if match is None:
        return None
    raw = match.group(match.lastindex or 1).decode("ascii", "replace")
    try:
        day, clock, zone = raw.split()
        d, mon, year = day.split("-")
        return parsedate_to_datetime(f"{d} {mon} {year} {clock} {zone}").timestamp()
    except (ValueError, TypeError):
        return None


def _text(data: object) -> str:
    if isinstance(data, list) and data and isinstance(data[0], bytes):
        return data[0].decode("utf-8", "replace")
    return str(data)
