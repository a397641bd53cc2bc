"""Validating enqueue input (CSV rows or flags) into ``NewMessage`` values.

Everything a header could be built from is checked here, before anything is written: address
syntax (stdlib ``email``), no CR/LF in any header value (no header injection, no smuggled
recipient), required fields, parseable ``send_at``, bounded sizes. A row that passes here can
always be turned into a message later.
"""

from __future__ import annotations

import csv
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from pathlib import Path

from .attachments import Attachment
from .attachments import check as check_attachments
from .errors import InputError, UsageError
from .headers import parse_json as parse_headers
from .store.states import PRIORITIES
from .templates import Templates
from .times import parse_iso

COLUMNS_REQUIRED = ("to", "subject", "body")
COLUMNS_OPTIONAL = ("name", "campaign", "send_at", "from", "dedupe_key", "html", "priority", "expires_at",
                    "reply_to", "headers", "attachments")
PRIORITY_WORDS = {**PRIORITIES, **{str(n): n for n in PRIORITIES.values()}}
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_HEADER_CHARS = 998
MAX_LOCAL_PART = 64  # octets, RFC 5321 4.5.3.1.1
DEFAULT_CAMPAIGN = "default"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)+[A-Za-z]{{2,63}}$|"
                     rf"^(?=.{{1,253}}$)({_LABEL}\.)+xn--[A-Za-z0-9-]+$")

# The common address shape (dot-atom local part, ASCII domain), checked without the stdlib
# parser, which is 10x slower and dominated a 100k-row import; anything else takes the full parse.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDR = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9.-]+")

_EXTRA = "\x00extra"

csv.field_size_limit(MAX_BODY_BYTES + 1)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One validated message to queue. ``send_at`` is Unix seconds or None for now."""

    to: str
    subject: str
    body: str
    name: str | None = None
    campaign: str = DEFAULT_CAMPAIGN
    send_at: float | None = None
    from_addr: str | None = None
    from_name: str | None = None
    dedupe_key: str | None = None
    html: str | None = None
    priority: int = 1
    expires_at: float | None = None
    line: int = 0
    reply_to: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()

    @property
    def key(self) -> str:
        """The idempotency key: explicit, else campaign + recipient."""
        return self.dedupe_key or f"{self.campaign}\x1f{self.to.lower()}"


def check_header(field: str, value: str) -> str:
    """Refuse anything that could end a header line or that the message builder would reject.

    Not only CR/LF: the stdlib ``email`` package also breaks lines at VT, FF, the file, group
    and record separators, NEL, U+2028 and U+2029, and refuses such a value at send time, which
    would land the message in ``failed`` instead of being refused here. So: no control
    characters but TAB, no line or paragraph separators, nothing that is not valid UTF-8.
    """
    if "\r" in value or "\n" in value:
        raise InputError(f"{field}: contains a line break (CR/LF), "
                         "refused to prevent header injection")
    bad = _REFUSED.search(value)
    if bad is not None:
        raise InputError(f"{field}: contains the control character {bad.group()!r}, refused to "
                         "prevent header injection")
    if len(value) > MAX_HEADER_CHARS:
        raise InputError(f"{field}: longer than {MAX_HEADER_CHARS} characters")
    return value


# Unicode categories Cc (but TAB), Zl, Zp and Cs (lone surrogates, from undecodable argv).
_REFUSED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def check_text(field: str, value: str) -> str:
    """A body: any text, but it must be storable and sendable (UTF-8, no NUL)."""
    if "\x00" in value:
        raise InputError(f"{field}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{field}: not valid UTF-8 text (at character {exc.start})") from None
    return value


def check_address(field: str, value: str) -> str:
    """Return the normalised addr-spec or raise ``InputError`` with a reason."""
    check_header(field, value)
    value = value.strip()
    if not value:
        raise InputError(f"{field}: empty address")
    if "\t" in value:
        raise InputError(f"{field}: a TAB is not allowed in an address (SMTP refuses it), in {value!r}")
    if _SIMPLE_ADDR.fullmatch(value):
        local, _, domain = value.rpartition("@")
    else:
        local, domain = parse_addr_spec(field, value)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise InputError(f"{field}: the part before the @ is longer than {MAX_LOCAL_PART} characters "
                         f"(SMTP limit), in {value[:80]!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InputError(f"{field}: invalid domain in {value!r}") from exc
    if not _DOMAIN.match(domain):
        raise InputError(f"{field}: invalid domain in address {value!r}")
    return f"{local}@{domain}"


def parse_addr_spec(field: str, value: str) -> tuple[str, str]:
    """The full RFC 5322 parse (stdlib): (local part as it must be written, domain)."""
    local, at, domain = value.rpartition("@")
    if not at:
        raise InputError(f"{field}: invalid address {value!r} (no @)")
    if not domain.strip():
        raise InputError(f"{field}: invalid address {value!r} (nothing after the @)")
    if not local.strip():
        raise InputError(f"{field}: invalid address {value!r} (nothing before the @)")
    try:
        addr = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        reason = str(exc) if isinstance(exc, ValueError | HeaderParseError) else "not an address"
        raise InputError(f"{field}: invalid address {value!r} ({reason})") from exc
    return addr.addr_spec.rpartition("@")[0], addr.domain


def parse_from(value: str) -> tuple[str, str | None]:
    """Accept exactly one ``addr`` or ``Name <addr>``; return (addr, name).

    Parsed by the stdlib's strict header parser: ``parseaddr`` would quietly keep the first of
    ``a@x.org, b@y.org`` and ignore a stray ``>``.
    """
    check_header("from", value)
    try:
        header = policy.default.header_factory("From", value)
        addresses, defects, groups = header.addresses, header.defects, header.groups
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise InputError(f"from: invalid address {value!r} ({exc})") from exc
    if len(addresses) != 1 or defects or any(g.display_name is not None for g in groups):
        raise InputError(f"from: expected one address, as addr or Name <addr>, got {value!r}")
    return check_address("from", addresses[0].addr_spec), (addresses[0].display_name or None)


def parse_when(value: str, field: str = "send_at") -> float:
    """ISO 8601 to Unix seconds; a time without an offset is taken as UTC."""
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise InputError(f"{field}: not an ISO 8601 time: {value!r}") from exc


def make_message(raw: dict[str, str | None], *, line: int = 0, default_campaign: str | None = None,
                 templates: Templates | None = None) -> NewMessage:
    """Validate one input record (CSV row or flags), rendering templates first if enabled."""
    try:
        if templates is not None:
            raw = templates.render(raw)
        def get(key: str) -> str:
            value = raw.get(key) or ""
            return value if key in ("body", "html") else value.strip()

        for key in COLUMNS_REQUIRED:
            if not get(key).strip():
                raise InputError(f"{key}: required, but empty")
        to = check_address("to", get("to"))
        subject = check_header("subject", get("subject"))
        name = check_header("name", get("name")) or None
        campaign = check_header("campaign", get("campaign")) or default_campaign or DEFAULT_CAMPAIGN
        body = check_text("body", get("body"))
        html = check_text("html", get("html")) or None
        size = len(body.encode("utf-8")) + len((html or "").encode("utf-8"))
        if size > MAX_BODY_BYTES:
            raise InputError(f"body: {size} bytes, over the {MAX_BODY_BYTES} byte limit")
        from_addr, from_name = parse_from(get("from")) if get("from") else (None, None)
        send_at = parse_when(get("send_at")) if get("send_at") else None
        dedupe = check_header("dedupe_key", get("dedupe_key")) or None
        priority = PRIORITY_WORDS.get(get("priority").lower() or "normal")
        if priority is None:
            raise InputError(f"priority: expected high, normal or low, got {get('priority')!r}")
        expires_at = parse_when(get("expires_at"), "expires_at") if get("expires_at") else None
        reply_to = _reply_to(get("reply_to")) if get("reply_to") else None
        headers = parse_headers(get("headers")) if get("headers") else ()
        files = check_attachments(get("attachments")) if get("attachments") else ()
    except InputError as exc:
        raise InputError(exc.reason, line or None) from None
    return NewMessage(to=to, subject=subject, body=body, name=name, campaign=campaign,
                      send_at=send_at, from_addr=from_addr, from_name=from_name,
                      dedupe_key=dedupe, html=html, priority=priority, expires_at=expires_at, line=line,
                      reply_to=reply_to, headers=headers, attachments=files)


def _reply_to(value: str) -> str:
    """``addr`` or ``Name <addr>``, stored as the header value."""
    try:
        addr, name = parse_from(value)
    except InputError as exc:
        raise InputError("reply_to: " + exc.reason.removeprefix("from: ")) from None
    return str(Address(display_name=name or "", addr_spec=addr))


def read_csv(path: str, templates: Templates | None = None) -> Iterator[NewMessage | InputError]:
    """Stream a CSV file: yield a ``NewMessage`` per good row and an ``InputError`` per bad one.

    Raises ``UsageError`` for problems with the file as a whole (missing, not UTF-8, bad header).
    """
    file = Path(path)
    check_regular_file(path, "--csv")
    expected = f"{','.join(COLUMNS_REQUIRED)}[,{','.join(COLUMNS_OPTIONAL)}]"
    start = 1
    with file.open(encoding="utf-8-sig", newline="") as fh:
        try:
            reader = csv.DictReader(fh, restkey=_EXTRA)
            header = reader.fieldnames
            if not header:
                what = "empty file" if reader.line_num == 0 else "blank first line"
                raise UsageError(f"{path}: line 1: {what}, expected a header line ({expected})")
            names = [h.strip().lower() for h in header]
            given = templates.provided() if templates else set()
            missing = [c for c in COLUMNS_REQUIRED if c not in names and c not in given]
            if missing:
                raise UsageError(f"{path}: line 1: header lacks column(s) {', '.join(missing)} "
                                 f"(header: {expected})")
            unknown = [h for h in names if h not in COLUMNS_REQUIRED + COLUMNS_OPTIONAL]
            if unknown and templates is None:
                raise UsageError(f"{path}: line 1: unknown column(s) {', '.join(unknown)} "
                                 f"(allowed: {','.join(COLUMNS_REQUIRED + COLUMNS_OPTIONAL)}; "
                                 "other columns are template fields with --template)")
            if len(set(names)) != len(names):
                raise UsageError(f"{path}: line 1: a column appears twice in the header")
            reader.fieldnames = names
            start = reader.line_num + 1
            for row in reader:
                if _EXTRA in row:
                    extra = len(row[_EXTRA])
                    yield InputError(f"{len(header) + extra} fields, header has {len(header)}",
                                     start)
                elif any(v is None for v in row.values()):
                    yield InputError(f"fewer fields than the header's {len(header)}", start)
                else:
                    try:
                        yield make_message(row, line=start, templates=templates)
                    except InputError as exc:
                        yield exc
                start = reader.line_num + 1
        except UnicodeDecodeError as exc:
            line, column = _undecodable(file)
            raise UsageError(f"{path}: line {line}: not UTF-8 text ({exc.reason} at byte "
                             f"{column}); convert it, e.g. iconv -f LATIN1 -t UTF-8") from exc
        except csv.Error as exc:
            reason = str(exc)
            if "field larger" in reason:
                reason = f"a field is larger than the {MAX_BODY_BYTES} byte limit"
            raise UsageError(f"{path}: line {start}: {reason}") from exc


def check_regular_file(path: str, flag: str) -> None:
    """A CSV is read twice (check, then queue): a directory, FIFO or device cannot be."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        raise UsageError(f"{flag} {path}: not a regular file ({kind})")


def _undecodable(file: Path) -> tuple[int, int]:
    """(line, 1-based byte in that line) of the first bytes that are not UTF-8."""
    with file.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start + 1
    return 0, 0
