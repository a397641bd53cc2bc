"""Extra headers a message may carry (``reply_to`` and ``headers`` at enqueue), and the ones the
sender owns.

Checked at enqueue, like every other header value (``intake.check_header``): no CR/LF or other
line breaks, printable-ASCII names (RFC 5322 ``ftext``), no header twice, and none of the headers
the sender writes itself, since a second ``From`` or ``Message-ID`` would break tracing, DKIM and
the unsubscribe promise.
"""

from __future__ import annotations

import json
import re

from .errors import InputError

# Written by the sender (or by the receiving side): never taken from input.
OWNED = frozenset({
    "message-id", "from", "to", "cc", "bcc", "date", "subject", "mime-version", "sender", "reply-to",
    "return-path", "received", "list-unsubscribe", "list-unsubscribe-post", "dkim-signature",
})
MAX_EXTRA = 20
_NAME = re.compile(r"[!-9;-~]{1,76}")  # printable ASCII but the colon


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        shown = name if len(name) < 40 else name[:40] + "..."
        raise InputError(f"headers: {shown!r} is not a header name (printable ASCII, no colon or space)")
    lowered = name.lower()
    if lowered in OWNED or lowered.startswith("content-"):
        hint = " (use the reply_to column)" if lowered == "reply-to" else ""
        raise InputError(f"headers: {name} is written by the sender and cannot be set{hint}")
    return name


def parse_json(text: str) -> tuple[tuple[str, str], ...]:
    """The ``headers`` column: a JSON object of name -> string value."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"headers: not a JSON object ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError('headers: expected a JSON object of strings, like {"X-Campaign": "spring"}')
    return checked(list(data.items()))


def parse_flag(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``--header 'Name: value'`` (repeatable)."""
    pairs = []
    for value in values:
        name, colon, rest = value.partition(":")
        if not colon:
            raise InputError(f"--header: expected 'Name: value', got {value!r}")
        pairs.append((name.strip(), rest.strip()))
    return checked(pairs)


def checked(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    from .intake import check_header

    if len(pairs) > MAX_EXTRA:
        raise InputError(f"headers: at most {MAX_EXTRA} extra headers")
    seen: set[str] = set()
    out = []
    for name, value in pairs:
        check_name(name)
        if name.lower() in seen:
            raise InputError(f"headers: {name} given twice")
        seen.add(name.lower())
        out.append((name, check_header(f"headers: {name}", value).strip()))
    return tuple(out)


def to_json(pairs: tuple[tuple[str, str], ...]) -> str | None:
    return json.dumps([list(p) for p in pairs]) if pairs else None


def from_json(text: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(n), str(v)) for n, v in json.loads(text)) if text else ()
