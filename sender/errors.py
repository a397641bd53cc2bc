"""One error tree for the whole sender.

::

    SenderError
    ├── UsageError              bad flags, bad config, bad input (exit 2)
    │   └── InputError          a row of enqueue input that cannot be queued
    ├── StoreError              the SQLite queue (exit 1 unless noted)
    │   ├── NoDatabase          no queue file at that path (exit 2)
    │   ├── NotOurDatabase      file is not a sender queue (exit 2)
    │   ├── SchemaTooNew        file was written by a newer sender (exit 2)
    │   └── QueueUnusable       stop at once, never retry (exit 1)
    │       ├── DamagedDatabase   SQLite reports the file corrupt (malformed pages)
    │       └── QueueFileChanged  the file on disk is not the one opened (replaced, deleted, WAL gone)
    ├── MailboxError            a mailbox (IMAP) could not be read (exit 1)
    ├── DeliveryError           one SMTP attempt; carries code, phase and kind
    │   kinds (the actions of ``sender.classify``): "retry" (provably not delivered, attempt
    │   counted), "failed" (permanent), "unknown" (the data may have reached the server),
    │   "stop" (the client or account was refused), "outage" (the relay is not there),
    │   "throttle" (the relay asks us to slow down); the last three count no attempt
    └── fence.Fenced            the lease fence stopped a message (not started, or cut before
                                the final dot): provably not delivered

Library exceptions (aiosmtplib, sqlite3) are translated in exactly one place each:
``delivery.classify`` and ``db``.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["retry", "failed", "unknown", "stop", "outage", "throttle"]


class SenderError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class UsageError(SenderError):
    """The user asked for something impossible; nothing was changed."""

    exit_code = 2


class InputError(UsageError):
    """One input row is invalid; ``line`` is its 1-based line in the source."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class StoreError(SenderError):
    """The queue database could not do what was asked."""


class NoDatabase(StoreError):
    exit_code = 2


class NotOurDatabase(StoreError):
    exit_code = 2


class SchemaTooNew(StoreError):
    exit_code = 2


class QueueUnusable(StoreError):
    """Writing on would lose or split the truth: the daemon stops claiming instead of retrying."""


class DamagedDatabase(QueueUnusable):
    """SQLite found corrupt pages; the message says how to check and what to do."""

    def __init__(self, path: str, check: str) -> None:
        self.path = path
        super().__init__(f"the queue file is damaged: run `{check}`; restore from backup")


class QueueFileChanged(QueueUnusable):
    """The queue file at the path is no longer the file this process opened."""


class MailboxError(SenderError):
    """A mailbox server could not be reached, logged in to or read; never carries a password."""


class DeliveryError(SenderError):
    """One failed SMTP attempt, already classified."""

    def __init__(self, kind: Kind, phase: str, code: int | None, reply: str) -> None:
        self.kind: Kind = kind
        self.phase = phase
        self.code = code
        self.reply = reply
        super().__init__(f"{kind} at {phase}: {code or '-'} {reply}".rstrip())

    @property
    def session_level(self) -> bool:
        """True when the reply is about the session, not the message: no attempt is counted."""
        return self.kind in ("stop", "outage", "throttle")
