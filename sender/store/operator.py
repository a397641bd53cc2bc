"""Operator actions: resolve ``unknown``, cancel, retry, pause. Each writes an audit row.

Shared by the command line and the monitor so both change rows the same way. Every action is
all-or-nothing: if any id is not in a state the action applies to, nothing changes and
``UsageError`` names the offenders.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from . import dialect
from .audit import audit
from .engine import Store
from .selection import Selection, where

log = logging.getLogger(__name__)

Resolution = Literal["sent", "failed", "requeue"]

# What a requeue risks: the one window the lease fence cannot close (docs/design.md, "The lease
# fence"). The command prints it after a requeue; the monitor's resolve dialog shows it too.
REQUEUE_RISK = ("note: unknown means the end of the data may have reached the relay (its worker froze "
                "or lost the line after the final dot); requeue sends it again, so requeue only what "
                "reconcile did not find in the mailbox")


async def _rows_in(db: Store, ids: Sequence[int], state: str, action: str) -> list[tuple[int, str, str | None]]:
    if not ids:
        raise UsageError(f"{action}: no message ids given")
    rows = await db.fetchall(
        f"SELECT id, state, message_id, claim_token FROM messages WHERE id IN ({dialect.ids(db, '?')})",
        (json.dumps(list(ids)),))
    found = {r[0]: r for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(f"{action}: no such message id(s): {', '.join(map(str, missing))}")
    wrong = [f"{i} is {found[i][1]}" for i in ids if found[i][1] != state]
    if wrong:
        raise UsageError(f"{action}: only {state} messages qualify; {'; '.join(wrong)}")
    return [(r[0], r[2], r[3]) for r in (found[i] for i in dict.fromkeys(ids))]


async def resolve(db: Store, ids: Sequence[int], as_: Resolution, *, actor: str, now: float,
                  reason: str = "") -> int:
    """Settle ``unknown`` messages. ``requeue`` keeps the Message-ID, so a copy that did arrive
    and a resend share one id and the report can tell them apart from a real duplicate."""
    if as_ not in ("sent", "failed", "requeue"):
        raise UsageError(f"resolve: --as must be sent, failed or requeue, not {as_!r}")
    to_state = {"sent": "sent", "failed": "failed", "requeue": "scheduled"}[as_]
    log_status = {"sent": "sent", "failed": "failed", "requeue": "requeued"}[as_]
    detail = f"unknown -> {to_state}" + (f": {reason}" if reason else "")
    async with db.write():
        rows = await _rows_in(db, ids, "unknown", "resolve")
        for row_id, mid, _token in rows:
            await db.execute(
                "UPDATE messages SET state = ?, last_reply = ?, updated_at = ?, "
                "due_at = CASE WHEN ? = 'scheduled' THEN ? ELSE due_at END, "
                "claim_token = CASE WHEN ? = 'scheduled' THEN NULL ELSE claim_token END "
                "WHERE id = ? AND state = 'unknown'",
                (to_state, f"resolved by {actor}: {detail}", now, to_state, now, to_state, row_id))
            await db.execute(
                "UPDATE send_log SET status = ?, finished_at = coalesce(finished_at, ?), "
                "smtp_reply = coalesce(smtp_reply || '; ', '') || ? "
                "WHERE message_id = ? AND status = 'unknown'",
                (log_status, now, f"resolved by {actor}: {as_}", row_id))
            await audit(db, now, actor, f"resolve-{as_}", row_id, detail)
            log.info("row=%s mid=%s worker=%s unknown->%s reason=operator %s", row_id, mid, actor,
                     to_state, reason or as_)
    return len(rows)


async def cancel(db: Store, ids: Sequence[int], *, actor: str, now: float, reason: str = "") -> int:
    """``scheduled -> cancelled``: it will never be claimed."""
    async with db.write():
        rows = await _rows_in(db, ids, "scheduled", "cancel")
        for row_id, mid, _token in rows:
            await db.execute("UPDATE messages SET state = 'cancelled', updated_at = ?, last_reply = ? "
                             "WHERE id = ? AND state = 'scheduled'",
                             (now, f"cancelled by {actor}" + (f": {reason}" if reason else ""), row_id))
            await audit(db, now, actor, "cancel", row_id, reason or "scheduled -> cancelled")
            log.info("row=%s mid=%s worker=%s scheduled->cancelled reason=operator", row_id, mid, actor)
    return len(rows)


async def retry(db: Store, ids: Sequence[int], *, actor: str, now: float) -> int:
    """``failed -> scheduled`` with the same Message-ID and a fresh attempt budget."""
    async with db.write():
        rows = await _rows_in(db, ids, "failed", "retry")
        for row_id, mid, _token in rows:
            await db.execute("UPDATE messages SET state = 'scheduled', attempts = 0, due_at = ?, "
                             "claim_token = NULL, updated_at = ? WHERE id = ? AND state = 'failed'",
                             (now, now, row_id))
            await audit(db, now, actor, "retry", row_id, "failed -> scheduled")
            log.info("row=%s mid=%s worker=%s failed->scheduled reason=operator retry", row_id, mid, actor)
    return len(rows)


async def mark_found(db: Store, mids: Iterable[str], *, actor: str, now: float, source: str) -> list[int]:
    """Reconciliation: ``unknown`` messages whose Message-ID was seen in a mailbox are ``sent``."""
    found = sorted(set(mids))
    changed: list[int] = []
    async with db.write():
        for start in range(0, len(found), 500):
            chunk = json.dumps(found[start:start + 500])
            rows = await db.fetchall(
                "SELECT id FROM messages WHERE state = 'unknown' "
                f"AND message_id IN ({dialect.texts(db, '?')})", (chunk,))
            changed.extend(r[0] for r in rows)
        for row_id in changed:
            await db.execute("UPDATE messages SET state = 'sent', updated_at = ?, last_reply = ? "
                             "WHERE id = ? AND state = 'unknown'",
                             (now, f"reconciled: Message-ID found in {source}", row_id))
            await db.execute("UPDATE send_log SET status = 'sent', finished_at = coalesce(finished_at, ?), "
                             "smtp_reply = coalesce(smtp_reply || '; ', '') || ? "
                             "WHERE message_id = ? AND status = 'unknown'",
                             (now, f"reconciled: found in {source}", row_id))
            await audit(db, now, actor, "reconcile-sent", row_id, f"Message-ID found in {source}")
            log.info("row=%s worker=%s unknown->sent reason=Message-ID found in %s", row_id, actor, source)
    return changed


# --- bulk actions: one statement over a Selection, one audit row ---------------------------

BulkKind = Literal["retry", "cancel", "resolve-sent", "resolve-failed", "resolve-requeue"]

# The states each bulk action moves messages out of; the first is the default.
BULK_FROM: dict[str, tuple[str, ...]] = {
    "retry": ("failed", "expired"),
    "cancel": ("scheduled",),
    "resolve-sent": ("unknown",),
    "resolve-failed": ("unknown",),
    "resolve-requeue": ("unknown",),
}
BULK_TO = {"retry": "scheduled", "cancel": "cancelled", "resolve-sent": "sent",
           "resolve-failed": "failed", "resolve-requeue": "scheduled"}


@dataclass(frozen=True, slots=True)
class BulkResult:
    kind: str
    count: int
    filter: str  # the selection in words, as written in the audit row
    done: bool   # False for a dry run


def bulk_selection(kind: BulkKind, sel: Selection) -> Selection:
    """``sel`` restricted to the states ``kind`` applies to (its default state when none given)."""
    allowed = BULK_FROM[kind]
    wrong = [s for s in sel.states if s not in allowed]
    if wrong:
        raise UsageError(f"{kind} applies to {' or '.join(allowed)} messages, not {', '.join(wrong)}")
    return sel.with_states(sel.states or allowed[:1])


async def _check_names(db: Store, sel: Selection) -> None:
    if sel.campaign is not None and await db.fetchone(
            "SELECT 1 FROM campaigns WHERE name = ?", (sel.campaign,)) is None:
        raise UsageError(f"no such campaign: {sel.campaign!r}")
    if sel.rows:
        found = {r[0] for r in await db.fetchall(
            f"SELECT id FROM messages WHERE id IN ({dialect.ids(db, '?')})",
            (json.dumps(list(sel.rows)),))}
        missing = [str(r) for r in sel.rows if r not in found]
        if missing:
            raise UsageError(f"no such message id(s): {', '.join(missing)}")


async def count_selected(db: Store, sel: Selection) -> int:
    cond, params = where(sel, db)
    row = await db.fetchone(f"SELECT count(*) FROM messages m WHERE {cond}", params)
    return row[0] if row else 0


async def bulk(db: Store, kind: BulkKind, sel: Selection, *, actor: str, now: float,
               yes: bool, reason: str = "") -> BulkResult:
    """Count (``yes=False``) or act on every message ``sel`` matches, in one transaction.

    The update is conditional on the source state, so a row that changed since it was counted
    (claimed, resolved by someone else) is left alone; the count returned is what changed.
    One audit row records the action, the count and the filter.
    """
    sel = bulk_selection(kind, sel)
    text = sel.describe()
    if not yes:
        await _check_names(db, sel)
        return BulkResult(kind, await count_selected(db, sel), text, False)
    async with db.write():
        await _check_names(db, sel)
        ids = await _bulk_update(db, kind, sel, actor=actor, now=now, reason=reason)
        detail = f"{len(ids)} message(s) -> {BULK_TO[kind]}; filter: {text}"
        if reason:
            detail += f"; reason: {reason}"
        await audit(db, now, actor, f"bulk-{kind}", ids[0] if len(ids) == 1 else None, detail)
    log.info("bulk %s by %s: %s", kind, actor, detail)
    return BulkResult(kind, len(ids), text, True)


async def _bulk_update(db: Store, kind: BulkKind, sel: Selection, *, actor: str, now: float,
                       reason: str) -> list[int]:
    cond, params = where(sel, db)
    params = {**params, "now": now, "note": f"{kind} by {actor}" + (f": {reason}" if reason else "")}
    if kind == "retry":
        sql = ("UPDATE messages AS m SET state = 'scheduled', attempts = 0, due_at = :now, "
               "claim_token = NULL, defer_reason = NULL, updated_at = :now, "
               "expires_at = CASE WHEN m.state = 'expired' THEN NULL ELSE m.expires_at END ")
    elif kind == "cancel":
        sql = "UPDATE messages AS m SET state = 'cancelled', updated_at = :now, last_reply = :note "
    else:
        to_state = BULK_TO[kind]
        params["to"] = to_state
        sql = ("UPDATE messages AS m SET state = :to, updated_at = :now, last_reply = :note, "
               "due_at = CASE WHEN :to = 'scheduled' THEN :now ELSE m.due_at END, "
               "claim_token = CASE WHEN :to = 'scheduled' THEN NULL ELSE m.claim_token END ")
    rows = await db.fetchall(sql + f"WHERE {cond} RETURNING id", params)
    ids = sorted(r[0] for r in rows)
    if kind.startswith("resolve-") and ids:
        as_ = kind.removeprefix("resolve-")
        await db.execute(
            "UPDATE send_log SET status = :status, finished_at = coalesce(finished_at, :now), "
            "smtp_reply = coalesce(smtp_reply || '; ', '') || :note "
            f"WHERE status = 'unknown' AND message_id IN ({dialect.ids(db, ':ids')})",
            {"status": {"sent": "sent", "failed": "failed", "requeue": "requeued"}[as_],
             "now": now, "note": f"resolved by {actor}: {as_}", "ids": json.dumps(ids)})
    return ids
