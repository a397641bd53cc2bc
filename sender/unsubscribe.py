"""One-click unsubscribe (RFC 8058): the token, the List-Unsubscribe header lines, and applying a
token to the suppression list.

The token is ``base64url(row.recipient) "." base64url(HMAC-SHA256(secret, ...)[:16])``: it names
the queue row and the address, so it can be checked with the secret alone (no lookup, nothing
stored per message), and cannot be forged or guessed without the secret (128-bit tag).

A web app calls ``unsubscribe(token, db=..., secret=...)`` from its one-click POST handler; the
command line calls the same through ``python -m sender unsubscribe TOKEN``; ``observe`` applies
tokens found in the Subject of replies to the mailto address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

from .errors import UsageError
from .store.engine import Store, db_now, open_store

_TAG_BYTES = 16
_CONTEXT = b"sender-unsubscribe-v1\x00"
TOKEN = re.compile(r"[A-Za-z0-9_-]{4,400}\.[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    row: int
    email: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), _CONTEXT + payload, hashlib.sha256).digest()[:_TAG_BYTES]


def make_token(secret: str, row: int, email: str) -> str:
    payload = f"{row}.{email.lower()}".encode()
    return f"{_b64(payload)}.{_b64(_tag(secret, payload))}"


def verify(secret: str, token: str) -> Unsubscribed | None:
    """The (row, address) a token names, or None if it was not made with ``secret``."""
    token = token.strip()
    if not TOKEN.fullmatch(token):
        return None
    body, _, tag = token.partition(".")
    try:
        payload, given = _unb64(body), _unb64(tag)
    except ValueError:
        return None
    if not hmac.compare_digest(_tag(secret, payload), given):
        return None
    row, _, email = payload.decode("utf-8", "replace").partition(".")
    if not row.isdigit() or "@" not in email:
        return None
    return Unsubscribed(int(row), email)


def header_lines(*, url: str | None, mailto: str | None, secret: str, row: int, email: str) -> list[str]:
    """``List-Unsubscribe`` (one URI per line: an encoder must never touch these) and, with an
    HTTPS URL, ``List-Unsubscribe-Post`` for one-click."""
    token = make_token(secret, row, email)
    uris = []
    if url:
        uris.append(f"<{url.replace('{token}', token)}>")
    if mailto:
        uris.append(f"<mailto:{mailto}?subject={quote('unsubscribe ' + token)}>")
    if not uris:
        return []
    lines = ["List-Unsubscribe: " + ",\r\n ".join(uris)]
    if url:
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return lines


async def apply(db: Store, secret: str, token: str, *, now: float, source: str = "unsubscribe token"
                ) -> Unsubscribed:
    """Suppress the address a valid token names; raise ``UsageError`` for any other token."""
    from .store import suppressions

    found = verify(secret, token)
    if found is None:
        raise UsageError("not a valid unsubscribe token")
    await suppressions.add(db, [(found.email, "unsubscribed")], source=f"{source} row {found.row}", now=now)
    return found


def unsubscribe(token: str, *, db: str, secret: str) -> str:
    """For a web app's one-click handler (synchronous): suppress and return the address.

    Raises ``sender.errors.UsageError`` for a token that does not verify (answer 400 then)."""

    async def run() -> str:
        async with open_store(db) as queue:
            return (await apply(queue, secret, token, now=await db_now(queue))).email

    return asyncio.run(run())


def check_settings(url: str | None, mailto: str | None, secret: str | None) -> None:
    if not (url or mailto):
        return
    if not secret:
        raise UsageError("unsubscribe: set SENDER_UNSUBSCRIBE_SECRET (or [unsubscribe] secret) to sign tokens")
    if len(secret) < 16:
        raise UsageError("unsubscribe: the secret must be at least 16 characters")
    if url is not None and ("{token}" not in url or not url.startswith(("https://", "http://"))):
        raise UsageError("unsubscribe: the URL must be http(s):// and contain {token}")
    if mailto is not None and ("@" not in mailto or any(c in mailto for c in "<>\r\n ?")):
        raise UsageError(f"unsubscribe: not a mailto address: {mailto!r}")
