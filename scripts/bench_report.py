"""Time the duplicate report on a queue with a million SendLog rows.

    python scripts/bench_report.py [--rows 1000000] [--db /tmp/report-bench.db] [--keep]

Builds the file with raw SQL (recursive CTEs, one transaction): ``--rows`` messages, each with one
``sent`` SendLog row, spread evenly over 30 days ending now; a BCC archive's observations for the
last two days, with a few planted anomalies (two ghosts, a repeated Message-ID, a stale claim, an
unknown). Then it runs ``build_report`` on a read-only connection over 24 hours and over all 30
days, the way ``report`` and the monitor do, and prints the best and median of several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sender import report
from sender.store.db import open_db

DAY = 86400.0
SPAN = 30 * DAY

_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, state, due_at,
                     attempts, created_at, updated_at)
SELECT i, 1 + (i - 1) / :recipients, 1 + i % :recipients, 'k' || i,
       '<' || i || '.' || printf('%016x', i * 2654435761) || '@example.com>', 'sent',
       :start + i * :step, 1, :start, :start + i * :step + 0.3
  FROM n
"""

_LOG = """
INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, attempt, worker,
                     claim_token, status, claimed_at, finished_at, smtp_code, smtp_reply)
SELECT m.id, m.dedupe_key, m.message_id, 'r' || m.recipient_id || '@example.com',
       'campaign-' || m.campaign_id, 1, 'bench', '1.bench', 'sent', m.due_at, m.due_at + 0.3,
       250, 'Ok: queued'
  FROM messages m ORDER BY m.id
"""

_OBSERVE = """
INSERT INTO observations(mid, recipient, date, at, subject, source, observed_at, fingerprint,
                         copy, row_id, traced_by)
SELECT s.mid, s.recipient, round(s.claimed_at), round(s.claimed_at), 'hello', 'maildir:bench',
       :now, hex(randomblob(16)), 1, s.message_id, 'message-id'
  FROM send_log s WHERE s.claimed_at >= :since
"""


async def build(path: Path, rows: int, now: float) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    async with open_db(str(path), create=True):
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        recipients = max(1, rows // 5)
        campaigns = (rows - 1) // recipients + 1  # each recipient once per campaign, as dedupe wants
        conn.executemany("INSERT INTO campaigns(id, name, created_at) VALUES (?, ?, ?)",
                         [(i, f"campaign-{i}", now - SPAN) for i in range(1, campaigns + 1)])
        conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                     "INSERT INTO recipients(id, email) SELECT i, 'r' || i || '@example.com' FROM n",
                     (recipients,))
        conn.execute(_FILL, {"rows": rows, "recipients": recipients, "start": now - SPAN,
                             "step": SPAN / rows})
        conn.execute(_LOG)
        conn.execute(_OBSERVE, {"now": now, "since": now - 2 * DAY})
        _plant(conn, rows, now)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _plant(conn: sqlite3.Connection, rows: int, now: float) -> None:
    """Two ghosts for one row, one Message-ID seen twice, one stale claim, one unknown."""
    mid, rcpt, at = conn.execute("SELECT mid, recipient, claimed_at FROM send_log "
                                 "WHERE message_id = ?", (rows - 100,)).fetchone()
    for n, ghost in enumerate((f"<{rows - 100}.ghost1@example.com>",
                               f"<{rows - 100}.ghost2@example.com>", mid), start=1):
        conn.execute("INSERT INTO observations(mid, recipient, date, at, subject, source, "
                     "observed_at, fingerprint, copy, row_id, traced_by) VALUES "
                     "(?, ?, ?, ?, 'hello', 'maildir:bench', ?, ?, 1, ?, 'message-id')",
                     (ghost, rcpt, round(at), round(at), now, f"planted-{n}", rows - 100))
    conn.execute("UPDATE messages SET state = 'sending', claim_token = '1.stale', worker = 'bench', "
                 "lease_until = ? WHERE id = ?", (now - 600, rows - 50))
    conn.execute("UPDATE send_log SET status = 'sending', claim_token = '1.stale' "
                 "WHERE message_id = ?", (rows - 50,))
    conn.execute("UPDATE messages SET state = 'unknown' WHERE id = ?", (rows - 10,))
    conn.execute("UPDATE send_log SET status = 'unknown' WHERE message_id = ?", (rows - 10,))


async def measure(path: Path, since: float, now: float, runs: int) -> tuple[list[float], report.Report]:
    times: list[float] = []
    async with open_db(str(path), readonly=True) as db:
        for _ in range(runs):
            started = time.perf_counter()
            found = await report.build_report(db, report.Window(since, now), now, sources=["maildir:bench"])
            times.append(time.perf_counter() - started)
    return times, found


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/report-bench.db")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="time an existing --db, do not build")
    args = parser.parse_args(argv)
    path, now = Path(args.db), time.time()
    if not args.reuse:
        started = time.perf_counter()
        await build(path, args.rows, now)
        print(f"built {path}: {args.rows:,} SendLog rows in {time.perf_counter() - started:.1f}s, "
              f"{path.stat().st_size / 2**20:.0f} MiB")
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}")
    for label, since in (("24h", now - DAY), ("30d (every row)", now - SPAN - 1)):
        times, found = await measure(path, since, now, args.runs)
        print(f"report --since {label:<16} best {min(times) * 1000:7.1f} ms, median "
              f"{statistics.median(times) * 1000:7.1f} ms; found {found.counts}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
