"""Reading mailboxes: stream a maildir or an mbox one copy at a time and parse its headers.

Mailboxes are hostile input (exports, archives, hand-made files), so nothing inside a message is
fatal: a missing Message-ID, a malformed Date or a missing recipient comes back as ``None`` or
empty for the caller to count. Each copy's body is only hashed, never kept, and lines are read in
bounded pieces, so memory stays flat at any mailbox size. ``sender.observe`` stores the result.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from email.errors import HeaderParseError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path, PurePath
from typing import Any, Literal, Protocol

from .errors import UsageError

CHUNK = 64 * 1024
HEADER_LIMIT = 256 * 1024
REPORT_LIMIT = 512 * 1024  # a DSN or ARF report is kept whole up to this size for sender.feedback
_REPORT = re.compile(rb"(?im)^content-type:[ \t]*(?:\r?\n[ \t]+)?multipart/report")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ANGLE = re.compile(r"<[^<>\s]+>")
_FOLD = re.compile(r"\r?\n[ \t]*")


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One copy as read from the mailbox: its header block, a digest of all of it, and when
    the mailbox says it was delivered (maildir file time, mbox ``From_`` line), if it says."""

    head: bytes
    fingerprint: str
    delivered_at: float | None
    units: int
    report: bytes | None = None  # the whole copy (bounded), when it is a multipart/report (DSN, ARF)


@dataclass(frozen=True, slots=True)
class Parsed:
    mid: str | None
    recipients: tuple[str, ...]
    date: float | None
    date_problem: Literal["", "missing", "malformed"]
    subject: str


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A maildir or mbox to observe. Build it with ``open_mailbox``, which validates the path."""

    kind: Literal["maildir", "mbox"]
    path: Path

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.path}"

    def total(self) -> int:
        """Progress units: files for a maildir, bytes for an mbox."""
        if self.kind == "mbox":
            return self.path.stat().st_size
        return sum(1 for _ in _maildir_files(self.path))

    def messages(self) -> Iterator[RawMessage]:
        return read_maildir(self.path) if self.kind == "maildir" else read_mbox(self.path)


def open_mailbox(maildir: str | None, mbox: str | None) -> Mailbox:
    """Validate ``--maildir DIR`` or ``--mbox FILE``; raise ``UsageError`` with one clear line."""
    if bool(maildir) == bool(mbox):
        raise UsageError("give exactly one of --maildir DIR or --mbox FILE")
    if maildir:
        path = Path(maildir).resolve()
        if not path.is_dir():
            raise UsageError(f"--maildir {maildir}: no such directory")
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise UsageError(f"--maildir {maildir}: not a maildir (it has no cur/ or new/ folder)")
        return Mailbox("maildir", path)
    assert mbox is not None
    path = Path(mbox).resolve()
    if not path.is_file():
        raise UsageError(f"--mbox {mbox}: no such file")
    with path.open("rb") as fh:
        first = fh.read(CHUNK)
    if first and not first.startswith(b"From ") and b"\nFrom " not in first:
        raise UsageError(f"--mbox {mbox}: not an mbox file (no 'From ' separator line)")
    return Mailbox("mbox", path)


# --- reading ---------------------------------------------------------------------------------

class _Copy:
    """Accumulates one message: hashes everything, keeps the header block (bounded)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.in_head = True
        self.whole: bytearray | None = bytearray()  # kept only while it may be a report

    def feed(self, data: bytes) -> None:
        self.digest.update(data)
        if self.in_head:
            self._feed_head(data)
            if not self.in_head and not _REPORT.search(self.head):
                self.whole = None  # decided once the header block is complete: not a report
        if self.whole is not None:
            self.whole += data
            if len(self.whole) > REPORT_LIMIT:
                self.whole = None

    def _feed_head(self, data: bytes) -> None:
        start = max(0, len(self.head) - 3)
        self.head += data
        end = _HEADER_END.search(self.head, start)
        if end is not None:
            del self.head[end.start():]
            self.in_head = False
        elif len(self.head) > HEADER_LIMIT:
            del self.head[HEADER_LIMIT:]
            self.in_head = False

    def done(self, delivered_at: float | None, units: int) -> RawMessage:
        report = bytes(self.whole) if self.whole is not None and _REPORT.search(self.head) else None
        return RawMessage(bytes(self.head), self.digest.hexdigest(), delivered_at, units, report)


def copy_of(raw: bytes, delivered_at: float | None) -> RawMessage:
    """One whole copy already in memory (an IMAP fetch), read like a maildir file."""
    copy = _Copy()
    for start in range(0, len(raw), CHUNK):
        copy.feed(raw[start:start + CHUNK])
    return copy.done(delivered_at, 1)


class MailSource(Protocol):
    """What ``observe`` reads: a maildir, an mbox, an IMAP folder (``sender.imap``)."""

    @property
    def kind(self) -> str: ...

    @property
    def path(self) -> PurePath: ...

    @property
    def source(self) -> str: ...

    def total(self) -> int: ...

    def messages(self) -> Iterator[RawMessage]: ...


def _maildir_files(path: Path) -> Iterator[os.DirEntry[str]]:
    for sub in ("new", "cur"):
        folder = path / sub
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file():
                    yield entry


def read_maildir(path: Path) -> Iterator[RawMessage]:
    """Stream a maildir's ``new/`` and ``cur/`` files (``os.scandir``, so even the list of
    names is never held in memory, unlike ``mailbox.Maildir``'s table of contents)."""
    for entry in _maildir_files(path):
        copy = _Copy()
        try:
            with open(entry.path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    copy.feed(chunk)
            delivered = entry.stat().st_mtime
        except FileNotFoundError:
            continue  # moved by a mail client while we read; it will be seen under its new name
        yield copy.done(delivered, 1)


def read_mbox(path: Path) -> Iterator[RawMessage]:
    """Stream an mbox: a message starts at each line beginning with ``From `` (the rule of
    ``mailbox.mbox``); the blank line before the next separator is not part of the message."""
    copy: _Copy | None = None
    delivered: float | None = None
    units = 0
    pending = b""
    at_line_start = True
    with path.open("rb") as fh:
        while line := fh.readline(CHUNK):
            units += len(line)
            if at_line_start and line.startswith(b"From "):
                if copy is not None:
                    if pending not in (b"\n", b"\r\n"):
                        copy.feed(pending)
                    yield copy.done(delivered, units - len(line))
                    units = len(line)
                copy, delivered, pending = _Copy(), _from_line_date(line), b""
            elif copy is not None:
                copy.feed(pending)
                pending = line
            at_line_start = line.endswith(b"\n")
    if copy is not None:
        if pending not in (b"\n", b"\r\n"):
            copy.feed(pending)
        yield copy.done(delivered, units)


def _from_line_date(line: bytes) -> float | None:
    """``From sender Mon Mar  9 07:46:00 2025`` -> Unix seconds (mbox dates are UTC)."""
    words = line.decode("ascii", "replace").split()
    try:
        return float(calendar.timegm(time.strptime(" ".join(words[-5:]), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return None


# --- parsing ---------------------------------------------------------------------------------

def _text(value: Any) -> str:
    """A header value as clean one-line text, whatever the parser handed back."""
    if value is None:
        return ""
    if isinstance(value, Header):
        try:
            value = str(value)
        except (UnicodeError, LookupError, HeaderParseError):
            value = value.encode()
    return _clean(_FOLD.sub(" ", str(value)).strip())


def _clean(text: str) -> str:
    """No lone surrogates (SQLite refuses them): undecodable bytes become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def normalise_mid(value: str) -> str | None:
    """``  <a@b> (comment)`` -> ``<a@b>``; a bare ``a@b`` gets its angle brackets; empty -> None."""
    match = _ANGLE.search(value)
    if match:
        return match.group(0)
    token = value.split()[0].strip("<>") if value.split() else ""
    return f"<{token}>" if token else None


def parse_date(value: str) -> float | None:
    """An RFC 5322 date in any time zone -> Unix seconds; None if it cannot be read.

    A date without a zone (``-0000`` or none) is taken as UTC."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        stamp = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if 0 <= stamp < 253402300800 else None


def _addresses(msg: Message, *names: str) -> list[str]:
    values = [_text(v) for name in names for v in (msg.get_all(name) or [])]
    out: list[str] = []
    try:
        pairs = getaddresses(values)
    except (ValueError, IndexError, TypeError, HeaderParseError):
        return []
    seen: set[str] = set()
    for _name, addr in pairs:
        addr = addr.strip()
        if "@" in addr and addr.lower() not in seen:
            seen.add(addr.lower())
            out.append(addr)
    return out


def parse_head(head: bytes) -> Parsed:
    """Read what the report needs from a header block; never raises on odd input."""
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(head)
    except (HeaderParseError, ValueError, UnicodeError, LookupError, IndexError, TypeError):
        return Parsed(None, (), None, "missing", "")
    mid = normalise_mid(_text(msg.get("Message-ID")))
    recipients = _addresses(msg, "Delivered-To") or _addresses(msg, "To", "Cc", "Bcc")
    raw_date = _text(msg.get("Date"))
    date = parse_date(raw_date) if raw_date else None
    problem: Literal["", "missing", "malformed"] = (
        "missing" if not raw_date else "malformed" if date is None else "")
    raw_subject = _text(msg.get("Subject"))
    try:
        subject = _clean(str(make_header(decode_header(raw_subject))))
    except (HeaderParseError, UnicodeError, LookupError, ValueError):
        subject = raw_subject
    return Parsed(mid, tuple(recipients), date, problem, _FOLD.sub(" ", subject)[:300])
