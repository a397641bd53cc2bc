"""DKIM signing (RFC 6376) with dkimpy: relaxed/relaxed, over the headers a receiver judges.

Configured by ``[dkim] domain, selector, key_file`` or ``SENDER_DKIM_*``. The key is read once
per process; signing prepends the ``DKIM-Signature`` header to the finished bytes, so the message
builder (and its byte-identical fast path) is untouched.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dkim

from .errors import UsageError

SIGNED = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"List-Unsubscribe",
          b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type")


class Signer:
    def __init__(self, domain: str, selector: str, key: bytes) -> None:
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")
        self.key = key

    def sign(self, data: bytes) -> bytes:
        """``data`` with a DKIM-Signature header in front; ``ValueError`` if it cannot be signed."""
        try:
            signature = dkim.sign(data, self.selector, self.domain, self.key,
                                  canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED))
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM signing failed: {exc}") from exc
        return bytes(signature) + data


@lru_cache(maxsize=4)
def signer(domain: str | None, selector: str | None, key_file: str | None) -> Signer | None:
    """The process's signer (None when DKIM is not configured); bad settings are exit 2."""
    given = [v for v in (domain, selector, key_file) if v]
    if not given:
        return None
    if len(given) != 3 or domain is None or selector is None or key_file is None:
        raise UsageError("dkim: set all of domain, selector and key_file (SENDER_DKIM_DOMAIN, "
                         "SENDER_DKIM_SELECTOR, SENDER_DKIM_KEY_FILE)")
    if not (domain.isascii() and selector.isascii()) or any(c in domain + selector for c in " ;=\r\n"):
        raise UsageError(f"dkim: bad domain or selector: {domain!r}, {selector!r}")
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise UsageError(f"dkim: cannot read key_file {key_file}: {exc.strerror}") from exc
    if b"PRIVATE KEY" not in key:
        raise UsageError(f"dkim: {key_file} is not a PEM private key")
    made = Signer(domain, selector, key)
    try:
        made.sign(b"From: a@example.org\r\nSubject: check\r\n\r\nkey check\r\n")
    except ValueError as exc:
        raise UsageError(f"dkim: {key_file}: {exc}") from exc
    return made
