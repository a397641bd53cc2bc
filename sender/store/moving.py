"""Moving a whole queue from one store to another (``python -m sender migrate``), row ids and
Message-IDs preserved: messages, bodies, attachments, SendLog, observations, audit, flags,
suppressions, soft bounces and workers.

The target must hold no queue rows yet (it is created or migrated first). Everything is written
in one transaction on the target, so a failed move leaves it empty. The target's own triggers
rebuild its state counters and shared pairs as the rows arrive; identity sequences are moved past
the copied ids afterwards (PostgreSQL). The source is opened read-only and never changed.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError
from . import dialect
from .engine import Store
from .pg_schema import COMPACT_COUNTS

CHUNK = 2000  # rows per read and per batched insert

# Parents before children (foreign keys), each with its columns in the order both schemas share.
TABLES: list[tuple[str, tuple[str, ...]]] = [
    ("campaigns", ("id", "name", "created_at", "paused")),
    ("recipients", ("id", "email", "name", "tz")),
    ("messages", ("id", "campaign_id", "recipient_id", "dedupe_key", "message_id", "state", "due_at",
                  "priority", "expires_at", "defer_reason", "attempts", "claim_token", "worker",
                  "lease_until", "last_reply", "created_at", "updated_at")),
    ("message_bodies", ("message_id", "from_addr", "from_name", "to_name", "subject", "body_text",
                        "body_html", "reply_to", "headers", "attachments")),
    ("attachments", ("sha256", "size", "bytes")),
    ("message_attachments", ("message_id", "position", "sha256", "filename", "content_type")),
    ("send_log", ("id", "message_id", "dedupe_key", "mid", "recipient", "campaign", "sender", "attempt",
                  "worker", "claim_token", "status", "claimed_at", "finished_at", "smtp_code", "smtp_reply")),
    ("workers", ("id", "name", "pid", "host", "started_at", "heartbeat_at", "stopped_at", "heartbeat_every")),
    ("audit", ("id", "at", "actor", "action", "message_id", "detail")),
    ("flags", ("key", "value", "set_at", "set_by")),
    ("observations", ("id", "mid", "recipient", "date", "at", "subject", "source", "observed_at",
                      "fingerprint", "copy", "row_id", "traced_by")),
    ("suppressions", ("email", "reason", "at", "source")),
    ("soft_bounces", ("fingerprint", "email", "row_id", "status", "at")),
]
_IDENTITY = ("campaigns", "recipients", "messages", "send_log", "workers", "audit", "observations")


async def _refuse_non_empty(target: Store) -> None:
    for table, _columns in TABLES:
        row = await target.fetchone(f"SELECT 1 FROM {table} LIMIT 1")
        if row is not None:
            raise UsageError(f"migrate: {target.path} already holds a queue ({table} is not empty); "
                             "move into an empty one")


async def move(source: Store, target: Store, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table of ``source`` into the empty ``target``; return the rows copied per table."""
    await _refuse_non_empty(target)
    copied: dict[str, int] = {}
    async with target.write():
        for table, columns in TABLES:
            copied[table] = await _copy(source, target, table, columns)
            if progress:
                progress(table, copied[table])
        if target.dialect == dialect.POSTGRES:
            await target.execute(COMPACT_COUNTS)  # one counter row per state, not one per row copied
            for table in _IDENTITY:
                await target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")
    return copied


async def _copy(source: Store, target: Store, table: str, columns: tuple[str, ...]) -> int:
    """One table in chunks, by its key: the first column, or (``message_attachments``) the pair."""
    names = ", ".join(columns)
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})"
    pair = table == "message_attachments"
    order = "message_id, position" if pair else columns[0]
    after = "(message_id > ? OR (message_id = ? AND position > ?))" if pair else f"{columns[0]} > ?"
    n = 0
    last: tuple[object, ...] | None = None
    while True:
        if last is None:
            rows = await source.fetchall(f"SELECT {names} FROM {table} ORDER BY {order} LIMIT ?", (CHUNK,))
        else:
            params = (last[0], last[0], last[1]) if pair else (last[0],)
            rows = await source.fetchall(f"SELECT {names} FROM {table} WHERE {after} ORDER BY {order} LIMIT ?",
                                         (*params, CHUNK))
        if not rows:
            return n
        await target.executemany(insert, [tuple(r) for r in rows])
        n += len(rows)
        last = (rows[-1][0], rows[-1][1])
