"""Pauses and flags: every read and write of the global pause, campaign pauses and status flags.

The global pause is a row in ``flags`` (key ``paused``) that every claim transaction checks;
a campaign pause is ``campaigns.paused``. Other flags (a worker's pace, an insecure TLS setting)
are small status notes a worker shows the others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .audit import audit, audit_row
from .engine import Store, Tx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PauseState:
    paused: bool
    reason: str
    set_by: str
    set_at: float


async def set_paused(db: Store, paused: bool, *, actor: str, now: float, reason: str = "") -> None:
    """The global pause flag every daemon checks inside its claim transaction."""
    async with db.write():
        for sql, params in pause_flag_statements(paused, actor=actor, now=now, reason=reason):
            await db.execute(sql, params)
    log.warning("sending %s by %s%s", "paused" if paused else "resumed", actor, f": {reason}" if reason else "")


def pause_flag_statements(paused: bool, *, actor: str, now: float, reason: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Set or clear the flag, with its audit row (the daemon's auto-pause runs these in its claim)."""
    entry = audit_row(now, actor, "pause" if paused else "resume", None, reason)
    if paused:
        return [("INSERT INTO flags(key, value, set_at, set_by) VALUES ('paused', ?, ?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                 "set_at = excluded.set_at, set_by = excluded.set_by", (reason or "paused", now, actor)), entry]
    return [("DELETE FROM flags WHERE key = 'paused'", ()), entry]


async def set_campaign_paused(db: Store, campaign: str, paused: bool, *, actor: str, now: float,
                              reason: str = "") -> None:
    """Pause or resume one campaign; its messages stay queued and are skipped by every claim."""
    async with db.write():
        row = await db.fetchone("SELECT id FROM campaigns WHERE name = ?", (campaign,))
        if row is None:
            raise UsageError(f"no such campaign: {campaign!r}")
        await db.execute("UPDATE campaigns SET paused = ? WHERE id = ?",
                         ((reason or f"paused by {actor}") if paused else None, row[0]))
        await audit(db, now, actor, "pause-campaign" if paused else "resume-campaign", None,
                     f"{campaign}: {reason}" if reason else campaign)
    log.warning("campaign %s %s by %s%s", campaign, "paused" if paused else "resumed", actor,
                f": {reason}" if reason else "")


async def pause_state(db: Store) -> PauseState:
    row = await db.fetchone("SELECT value, set_by, set_at FROM flags WHERE key = 'paused'")
    if row is None:
        return PauseState(False, "", "", 0.0)
    return PauseState(True, row[0], row[1], row[2])


async def set_flag(db: Store, key: str, value: str | None, *, actor: str, now: float) -> None:
    """A small status flag a worker shows others (its pace, an insecure TLS setting); ``None``
    removes it if this actor set it. Never the pause flag: that one has its audit trail."""
    assert key != "paused"
    async with db.write():
        if value is None:
            await db.execute("DELETE FROM flags WHERE key = ? AND set_by = ?", (key, actor))
        else:
            await db.execute("INSERT INTO flags(key, value, set_at, set_by) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                             "set_at = excluded.set_at, set_by = excluded.set_by", (key, value, now, actor))


async def paused(db: Store) -> dict[str, object]:
    """The global pause flag (with its reason) and the paused campaigns."""
    flag = await db.fetchone("SELECT value, set_by, set_at FROM flags WHERE key = 'paused'")
    campaigns = {r[0]: r[1] for r in await db.fetchall(
        "SELECT name, paused FROM campaigns WHERE paused IS NOT NULL ORDER BY name")}
    return {"global": None if flag is None else {"reason": flag[0], "by": flag[1], "at": flag[2]},
            "campaigns": campaigns}


def globally_paused(tx: Tx) -> bool:
    return tx.fetchone("SELECT 1 FROM flags WHERE key = 'paused'") is not None


def paused_campaigns(tx: Tx) -> frozenset[str]:
    return frozenset(r[0] for r in tx.fetchall("SELECT name FROM campaigns WHERE paused IS NOT NULL"))


async def relay_flags(db: Store) -> dict[str, object]:
    """What running workers show about their relay: a slowed ``pace`` (throttling) and whether a
    worker runs with ``--tls-insecure``."""
    rows = {r[0]: (r[1], r[2]) for r in await db.fetchall(
        "SELECT key, value, set_by FROM flags WHERE key IN ('pace', 'tls_insecure')")}
    pace = rows.get("pace")
    insecure = rows.get("tls_insecure")
    return {"pace": json.loads(pace[0]) if pace else None, "tls_insecure": insecure[1] if insecure else None}


async def campaign_pauses(db: Store, limit: int = 100) -> dict[str, str]:
    """Paused campaigns (up to ``limit``, by name) and their reasons."""
    return {r[0]: r[1] for r in await db.fetchall(
        "SELECT name, paused FROM campaigns WHERE paused IS NOT NULL ORDER BY name LIMIT ?", (limit,))}


async def pace_flags(db: Store) -> dict[str, str]:
    """Every ``pace`` flag a worker has set, by key."""
    return {r[0]: r[1] for r in await db.fetchall(
        "SELECT key, value FROM flags WHERE key LIKE 'pace%' ORDER BY key LIMIT 20")}


async def flag_owner(db: Store, key: str) -> str | None:
    """Who set the flag ``key``, or None if it is not set."""
    row = await db.fetchone("SELECT set_by FROM flags WHERE key = ?", (key,))
    return None if row is None else str(row[0])
