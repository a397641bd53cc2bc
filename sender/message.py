"""Message-IDs and building the MIME message (stdlib ``email``).

The Message-ID is minted once, at enqueue, and embeds the queue row id, so any copy found in a
mailbox traces back to its row: ``<{row}.{random}@{domain}>``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

_MID = re.compile(r"<(\d+)\.[0-9a-f]+@[^>]+>")


def make_message_id(row: int, domain: str) -> str:
    return f"<{row}.{secrets.token_hex(8)}@{domain}>"


def row_of(message_id: str) -> int | None:
    """The queue row a Message-ID of ours points at, or None if it is not one of ours."""
    match = _MID.fullmatch(message_id.strip())
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Envelope:
    """What SMTP needs for one claimed message."""

    sender: str
    recipient: str
    data: bytes


def build(*, message_id: str, from_addr: str, from_name: str | None, to: str, to_name: str | None,
          subject: str, body_text: str, body_html: str | None, date: float) -> Envelope:
    """Build the wire bytes; raises ``ValueError`` (or an ``email`` error) if it cannot be built."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _address(from_name, from_addr)
    msg["To"] = _address(to_name, to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.fromtimestamp(date, UTC))
    msg["Message-ID"] = message_id
    msg.set_content(body_text, cte=_cte(body_text))
    if body_html:
        msg.add_alternative(body_html, subtype="html", cte=_cte(body_html))
    return Envelope(sender=from_addr, recipient=to, data=msg.as_bytes())


def _cte(text: str) -> str:
    # 7-bit safe for relays that do not offer 8BITMIME.
    return "7bit" if text.isascii() and all(len(x) <= 998 for x in text.splitlines()) else "quoted-printable"


def _address(name: str | None, addr: str) -> Address:
    return Address(display_name=name or "", addr_spec=addr)
