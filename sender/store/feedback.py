"""Bounces and complaints found in a mailbox, applied to the queue: a bounce moves its row to
``bounced`` (and settles an ``unknown`` attempt as sent), a complaint or a hard bounce
suppresses the address, repeated soft bounces suppress it past the rules' limit."""

from __future__ import annotations

from dataclasses import dataclass

from ..feedback import Report, Rules
from ..message import row_of
from .audit import audit
from .engine import Store
from .suppressions import UPSERT


@dataclass(frozen=True, slots=True)
class Found:
    report: Report
    fingerprint: str
    row: int | None


async def apply(db: Store, found: list[Found], rules: Rules, now: float, source: str) -> dict[str, int]:
    """Inside the caller's write: change rows and the suppression list; return counts by outcome."""
    counts = {"bounced": 0, "delayed": 0, "complaints": 0, "unmatched": 0}
    for f in found:
        target = await _target(db, f)
        if target is None:
            counts["unmatched"] += 1
            continue
        row, email_addr = target
        kind = f.report.kind
        if kind == "bounce":
            counts["bounced"] += 1
            reply = f"bounced: {f.report.status} {f.report.detail}".strip()[:500]
            changed = await db.execute(
                "UPDATE messages SET state = 'bounced', last_reply = ?, updated_at = ? "
                "WHERE id = ? AND state IN ('sent', 'unknown')", (reply, now, row))
            if changed:
                await db.execute("UPDATE send_log SET status = 'sent', finished_at = coalesce(finished_at, ?) "
                                 "WHERE message_id = ? AND status = 'unknown'", (now, row))
                await audit(db, now, "observe", "bounced", row, f"{reply} (in {source})")
            await db.execute(UPSERT, (email_addr, "bounced", now, f"dsn row {row}"))
        elif kind == "complaint":
            counts["complaints"] += 1
            await db.execute(UPSERT, (email_addr, "complained", now, f"arf row {row}"))
        else:
            counts["delayed"] += 1
            await db.execute("INSERT INTO soft_bounces(fingerprint, email, row_id, status, at) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO NOTHING",
                             (f.fingerprint, email_addr, row, f.report.status, now))
            n = await db.fetchone("SELECT count(*) FROM soft_bounces WHERE email = ? AND at > ?",
                                  (email_addr, now - rules.soft_window))
            if n is not None and n[0] >= rules.soft_limit:
                await db.execute(UPSERT, (email_addr, "bounced", now,
                                          f"{n[0]} soft bounces, last row {row}"))
    return counts


async def _target(db: Store, f: Found) -> tuple[int, str] | None:
    """(row, its recipient) for a report: by the original Message-ID, else by the VERP row."""
    sql = "SELECT m.id, r.email FROM messages m JOIN recipients r ON r.id = m.recipient_id WHERE "
    mid = f.report.original_mid
    hit = None
    if mid is not None and row_of(mid) is not None:
        hit = await db.fetchone(sql + "m.message_id = ?", (mid,))
    if hit is None and f.row is not None:
        hit = await db.fetchone(sql + "m.id = ?", (f.row,))
    return None if hit is None else (int(hit[0]), str(hit[1]).lower())
