"""Bounces and complaints found in a mailbox: delivery status notifications (RFC 3464) and abuse
reports (RFC 5965 ARF), both ``multipart/report``, parsed with the stdlib ``email`` package.

A report is matched to its queue row by the original Message-ID (ours embed the row) or, when
the report does not quote the original, by the VERP envelope sender it was returned to
(``--return-path 'bounces+{row}@example.org'``). Then:

* a permanent failure (``Status: 5.x.x``): the row becomes ``bounced``, the address suppressed;
* a temporary one (``4.x.x``): counted once per report; ``soft_limit`` of them within
  ``soft_window`` seconds suppress the address;
* a complaint (ARF): the address is suppressed at once.

Reports are never stored as observations: they are not copies of our messages, so the report
never shows them as ghosts.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from typing import Literal

from .mailreader import normalise_mid

Kind = Literal["bounce", "delay", "complaint"]
SOFT_LIMIT = 3
SOFT_WINDOW = 7 * 86400.0
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True, slots=True)
class Rules:
    """What ``observe`` needs to act on replies and reports (from ``Settings``)."""

    secret: str | None = None
    return_path: str | None = None
    soft_limit: int = SOFT_LIMIT
    soft_window: float = SOFT_WINDOW

    def verp_row(self, addresses: tuple[str, ...]) -> int | None:
        """The row a VERP address names (``bounces+17@example.org`` -> 17)."""
        if not self.return_path or "{row}" not in self.return_path:
            return None
        before, _, after = self.return_path.partition("{row}")
        pattern = re.compile(re.escape(before) + r"(\d+)" + re.escape(after), re.IGNORECASE)
        for addr in addresses:
            match = pattern.fullmatch(addr.strip().strip("<>"))
            if match:
                return int(match.group(1))
        return None


@dataclass(frozen=True, slots=True)
class Report:
    kind: Kind
    status: str            # the DSN status (5.1.1), or the ARF Feedback-Type
    recipient: str         # as the report names it (Final-Recipient / Original-Rcpt-To), may be ''
    original_mid: str | None
    detail: str


def parse(raw: bytes) -> Report | None:
    """A DSN or ARF report, or None for any other message (never raises on odd input)."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except (ValueError, TypeError, LookupError, IndexError):
        return None
    if msg.get_content_type() != "multipart/report" or not msg.is_multipart():
        return None
    report_type = (msg.get_param("report-type") or "").lower()  # type: ignore[union-attr]
    parts = [p for p in msg.walk() if p is not msg]
    original = _original_mid(parts)
    if report_type == "delivery-status":
        return _dsn(parts, original)
    if report_type == "feedback-report":
        return _arf(parts, original)
    return None


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a ``message/delivery-status`` or ``message/feedback-report`` part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(block + "\n") for block in re.split(r"\r?\n\r?\n", text) if block.strip()]


def _original_mid(parts: list[Message]) -> str | None:
    for part in parts:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(first, Message) and first.get("Message-ID"):
                return normalise_mid(str(first["Message-ID"]))
        elif kind in ("text/rfc822-headers", "text/global-headers"):
            text = part.get_payload(decode=True)
            headers = HeaderParser().parsestr(text.decode("utf-8", "replace") if isinstance(text, bytes) else "")
            if headers.get("Message-ID"):
                return normalise_mid(str(headers["Message-ID"]))
    return None


def _address(value: str | None) -> str:
    """``rfc822; lead@example.com`` -> ``lead@example.com``."""
    text = (value or "").partition(";")[2] or (value or "")
    return text.strip().strip("<>").lower()


def _dsn(parts: list[Message], original: str | None) -> Report | None:
    for part in parts:
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        for block in _blocks(part)[1:] or _blocks(part):
            action = str(block.get("Action", "")).strip().lower()
            match = _STATUS.search(str(block.get("Status", "")))
            if match is None or action in ("delivered", "relayed", "expanded"):
                continue
            recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
            detail = " ".join(str(block.get("Diagnostic-Code", "")).split())[:300]
            kind: Kind = "bounce" if match.group(1) == "5" else "delay"
            return Report(kind, match.group(0), recipient, original, detail)
    return None


def _arf(parts: list[Message], original: str | None) -> Report | None:
    for part in parts:
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = _blocks(part)
        if not fields:
            return None
        block = fields[0]
        feedback = str(block.get("Feedback-Type", "abuse")).strip().lower() or "abuse"
        recipient = _address(block.get("Original-Rcpt-To"))
        return Report("complaint", feedback, recipient, original, f"ARF {feedback}")
    return None


# --- acting on them --------------------------------------------------------------------------


