"""The audit trail: one statement, written by every operator action and pause."""

from __future__ import annotations

from typing import Any

from .engine import Store, Tx

INSERT_AUDIT = "INSERT INTO audit(at, actor, action, message_id, detail) VALUES (?, ?, ?, ?, ?)"


def audit_row(now: float, actor: str, action: str, row: int | None, detail: str) -> tuple[str, tuple[Any, ...]]:
    """The audit insert as a statement and its parameters (for a caller's own transaction)."""
    return INSERT_AUDIT, (now, actor, action, row, detail)


async def audit(db: Store, now: float, actor: str, action: str, row: int | None, detail: str) -> None:
    """Write one audit row inside the caller's write transaction."""
    await db.execute(*audit_row(now, actor, action, row, detail))


def audit_in(tx: Tx, now: float, actor: str, action: str, row: int | None, detail: str) -> None:
    """Write one audit row inside a synchronous (claim) transaction."""
    tx.execute(*audit_row(now, actor, action, row, detail))
