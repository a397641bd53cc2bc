"""A failure storm, built through the real write path at fixed times: the queue behind the
monitor's incident tests, its snapshot and ``docs/monitor.svg``.

Twenty-five quiet minutes of sends, then the relay starts refusing the client: the last five
minutes are mostly ``554 5.7.1`` failures and ``421`` retries (the daemon slowed down: its pace
flag), a worker died holding claims, and the daemon paused sending itself with the relay's
reply as the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from sender.intake import NewMessage
from sender.store import flags, sending
from sender.store.db import open_db
from sender.store.enqueue import enqueue
from sender.store.sending import Outcome

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
DENIED = "5.7.1 Client host rejected: Access denied"
CAMPAIGNS = ("spring-webinar", "welcome", "renewal")


async def build(path: Path, quiet_minutes: int = 25, storm_minutes: int = 5) -> str:
    """Write the storm to ``path``; returns the path as a string."""
    per_minute = 6
    total = (quiet_minutes + storm_minutes) * per_minute + 40
    async with open_db(str(path), create=True) as db:
        rows = [NewMessage(to=f"lead.{i:05d}@example.com", subject=f"Your material {i}", body="Hi.",
                           campaign=CAMPAIGNS[i % 3], send_at=T0 - 3600, name=f"Lead {i}")
                for i in range(total)]
        await enqueue(db, rows, from_addr="team@example.org", from_name="Team",
                            domain="example.org", now=T0 - 4000)
        w1 = await sending.register_worker(db, "mail-1", 4101, "mx-a", T0 - 3000)
        w2 = await sending.register_worker(db, "mail-2", 4202, "mx-b", T0 - 3000)
        minutes = quiet_minutes + storm_minutes
        for m in range(minutes):
            at = T0 - (minutes - m) * 60 + 5
            claims = await sending.claim(db, worker="mail-1", worker_id=w1, limit=per_minute,
                                       lease=300, now=at)
            storm = m >= quiet_minutes
            outcomes = []
            for k, c in enumerate(claims):
                if not storm:
                    outcomes.append(Outcome(c.row, c.token, "sent", 250, "2.0.0 queued"))
                elif k % 3 == 2:
                    outcomes.append(Outcome(c.row, c.token, "retry", 421, "4.7.0 try again later",
                                            due_at=T0 + 600))
                else:
                    outcomes.append(Outcome(c.row, c.token, "failed", 554, DENIED))
            await sending.record(db, outcomes, at + 2)
        await sending.claim(db, worker="mail-2", worker_id=w2, limit=3, lease=60, now=T0 - 200)
        async with db.write():
            await db.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (T0 - 2, w1))
            await db.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (T0 - 190, w2))
        await flags.set_flag(db, "pace", json.dumps(
            {"worker": "mail-1", "sessions": 1, "of": 4, "spacing_s": 2.0, "throttles": 3,
             "last": "421 4.7.0 try again later"}), actor="mail-1", now=T0 - 60)
        await flags.set_paused(db, True, actor="mail-1", now=T0 - 30,
                               reason=f"auto-paused by mail-1 after 8 consecutive relay errors: 554 {DENIED}")
    return str(path)
