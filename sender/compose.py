"""From a claim to the envelope the daemon sends: the message (``sender.message``) plus what
deliverability adds around it: Reply-To and enqueued headers, List-Unsubscribe, the VERP return
path, the DKIM signature and attachments. One function, so the daemon has one line for it."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .config import Settings
from .store.claims import Claim

if TYPE_CHECKING:
    from .message import Envelope


def envelope(claim: Claim, settings: Settings, now: float) -> Envelope:
    """Raises ``ValueError`` (or an ``email`` error) when the message cannot be built.

    ``sender.message`` (the ``email`` package) is imported at the first message, so an empty
    ``run --once`` does not pay for it; dkimpy (with dnspython: about 1 s of CPU to import) only
    when DKIM is configured."""
    from .message import build

    extra: list[tuple[str, str]] = []
    if claim.reply_to:
        extra.append(("Reply-To", claim.reply_to))
    extra.extend(claim.headers)
    raw: list[str] = []
    if settings.unsubscribe_secret and (settings.unsubscribe_url or settings.unsubscribe_mailto):
        from . import unsubscribe

        raw = unsubscribe.header_lines(url=settings.unsubscribe_url, mailto=settings.unsubscribe_mailto,
                                       secret=settings.unsubscribe_secret, row=claim.row, email=claim.recipient)
    built = build(mid=claim.mid, from_addr=claim.from_addr, from_name=claim.from_name,
                  to=claim.recipient, to_name=claim.to_name, subject=claim.subject,
                  body_text=claim.body_text, body_html=claim.body_html, date=now, extra=extra,
                  raw_headers=raw, sender=return_path(settings, claim.row), attachments=claim.attachments)
    if not (settings.dkim_domain or settings.dkim_selector or settings.dkim_key_file):
        return built
    from . import dkim_sign

    sign = dkim_sign.signer(settings.dkim_domain, settings.dkim_selector, settings.dkim_key_file)
    return built if sign is None else replace(built, data=sign.sign(built.data))


def return_path(settings: Settings, row: int) -> str | None:
    """The VERP envelope sender for ``row`` (``bounces+{row}@example.org``), if configured."""
    return settings.return_path.replace("{row}", str(row)) if settings.return_path else None
