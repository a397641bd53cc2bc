"""The suppression list: addresses that must never be mailed again (invariant 10).

One global list, not one per From domain (docs/deliverability.md says why): an unsubscribe, a
complaint or a hard bounce is about the person's mailbox, whichever brand of the team writes.
The claim transaction reads it (``sender.store.claims``); this module is how rows get on and off it:
the ``suppress`` command, unsubscribe tokens, and DSN/ARF reports found by ``observe``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UsageError
from ..intake import check_address
from .engine import Store, Tx
from .states import SUPPRESSION_REASONS

# A newer reason wins over an older one except that ``manual`` never hides a stronger one.
UPSERT = """
INSERT INTO suppressions(email, reason, at, source) VALUES (?, ?, ?, ?)
ON CONFLICT(email) DO UPDATE SET reason = excluded.reason, at = excluded.at, source = excluded.source
 WHERE excluded.reason <> 'manual' OR suppressions.reason = 'manual'
"""


@dataclass(frozen=True, slots=True)
class Suppression:
    email: str
    reason: str
    at: float
    source: str

    def to_json(self) -> dict[str, object]:
        return {"email": self.email, "reason": self.reason, "at": self.at, "source": self.source}


def normalise(value: str, field: str = "address") -> str:
    """A suppressed address as stored: validated like a recipient, lower-cased."""
    return check_address(field, value).lower()


def check_reason(reason: str) -> str:
    if reason not in SUPPRESSION_REASONS:
        raise UsageError(f"reason: expected one of {', '.join(SUPPRESSION_REASONS)}, got {reason!r}")
    return reason


def add_in(tx: Tx, entries: Iterable[tuple[str, str]], *, source: str, now: float) -> int:
    """Inside a caller's transaction: suppress each (address, reason); return how many rows."""
    rows = [(email, check_reason(reason), now, source) for email, reason in entries]
    for row in rows:
        tx.execute(UPSERT, row)
    return len(rows)


async def add_within(db: Store, entries: Iterable[tuple[str, str]], *, source: str, now: float) -> int:
    """Inside the caller's write: suppress each (address, reason); return how many rows."""
    rows = [(email, check_reason(reason), now, source) for email, reason in entries]
    await db.executemany(UPSERT, rows)
    return len(rows)


async def add(db: Store, entries: Iterable[tuple[str, str]], *, source: str, now: float) -> int:
    items = list(entries)
    return await db.transaction(lambda tx: add_in(tx, items, source=source, now=now))


async def remove(db: Store, emails: Iterable[str]) -> int:
    items = list(emails)

    def work(tx: Tx) -> int:
        return sum(tx.execute("DELETE FROM suppressions WHERE email = ?", (e,)) for e in items)

    return await db.transaction(work)


async def listing(db: Store) -> list[Suppression]:
    return [Suppression(*r) for r in await db.fetchall(
        "SELECT email, reason, at, source FROM suppressions ORDER BY email")]


def read_csv(path: str, default_reason: str) -> list[tuple[str, str]]:
    """Every (address, reason) of a CSV with an ``email`` (or ``address``) column and an optional
    ``reason`` column; the whole file is checked first, so a bad line imports nothing."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    out: list[tuple[str, str]] = []
    try:
        with file.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            names = [n.strip().lower() for n in reader.fieldnames or ()]
            column = next((n for n in ("email", "address") if n in names), None)
            if column is None:
                raise UsageError(f"{path}: line 1: expected a header with an email column "
                                 "(email[,reason])")
            reader.fieldnames = names
            for row in reader:
                line = reader.line_num
                try:
                    email = normalise((row.get(column) or "").strip(), column)
                    reason = (row.get("reason") or "").strip().lower() or default_reason
                    if reason not in SUPPRESSION_REASONS:
                        raise InputError(f"reason: expected one of {', '.join(SUPPRESSION_REASONS)}, "
                                         f"got {reason!r}")
                except InputError as exc:
                    raise UsageError(f"{path}: line {line}: {exc.reason} (nothing was imported)") from None
                out.append((email, reason))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise UsageError(f"{path}: {exc}") from exc
    return out
