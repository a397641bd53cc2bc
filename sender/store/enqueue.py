"""Enqueue: validated messages become ``scheduled`` rows, idempotently by dedupe key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..headers import to_json as headers_json
from ..intake import NewMessage
from ..message import make_mid
from . import dialect
from .attachments import store as store_attachments
from .engine import Store


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    queued: int
    skipped: int


async def enqueue(db: Store, rows: Iterable[NewMessage], *, from_addr: str | None,
                  from_name: str | None, domain: str | None, now: float, chunk: int = 2000,
                  progress: Callable[[int], None] | None = None) -> EnqueueResult:
    """Queue validated messages idempotently (a repeated dedupe key is skipped, not queued).

    Commits every ``chunk`` rows so a long import never holds the write lock for long; a
    re-run after a crash skips what was already committed.
    """
    queued = skipped = 0
    batch: list[NewMessage] = []
    campaigns: dict[str, int] = {}

    async def flush() -> None:
        nonlocal queued, skipped
        async with db.write():
            q, s = await _enqueue_chunk(db, batch, campaigns, from_addr, from_name, domain, now)
        queued, skipped = queued + q, skipped + s
        if progress:
            progress(len(batch))
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            await flush()
    if batch:
        await flush()
    return EnqueueResult(queued, skipped)


async def _enqueue_chunk(db: Store, rows: list[NewMessage], campaigns: dict[str, int],
                         from_addr: str | None, from_name: str | None, domain: str | None,
                         now: float) -> tuple[int, int]:
    keys = json.dumps([r.key for r in rows])
    seen = {r[0] for r in await db.fetchall(
        f"SELECT dedupe_key FROM messages WHERE dedupe_key IN ({dialect.texts(db, '?')})", (keys,))}
    fresh: list[NewMessage] = []
    for r in rows:
        if r.key not in seen:
            seen.add(r.key)
            fresh.append(r)
    if not fresh:
        return 0, len(rows)

    for name in {r.campaign for r in fresh} - campaigns.keys():
        await db.execute("INSERT INTO campaigns(name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                         (name, now))
        campaigns[name] = (await db.fetchone("SELECT id FROM campaigns WHERE name = ?", (name,)))[0]  # type: ignore[index]

    await db.executemany(
        "INSERT INTO recipients(email, name) VALUES (?, ?) "
        "ON CONFLICT(email) DO UPDATE SET name = coalesce(excluded.name, recipients.name)",
        [(r.to, r.name) for r in fresh])
    recipient_ids = {row[1].lower(): row[0] for row in await db.fetchall(
        f"SELECT id, email FROM recipients WHERE email IN ({dialect.texts(db, '?')})",
        (json.dumps([r.to for r in fresh]),))}

    base = (await db.fetchone("SELECT coalesce(max(id), 0) FROM messages"))[0]  # type: ignore[index]
    messages, bodies = [], []
    for offset, r in enumerate(fresh, start=1):
        row_id = base + offset
        sender = r.from_addr or from_addr
        if sender is None:
            raise ValueError("enqueue: no From address (validated earlier)")
        mid = make_mid(row_id, domain or sender.rpartition("@")[2])
        messages.append((row_id, campaigns[r.campaign], recipient_ids[r.to.lower()], r.key, mid,
                         r.send_at if r.send_at is not None else now, r.priority, r.expires_at, now, now))
        bodies.append((row_id, sender, r.from_name if r.from_addr else from_name, r.name, r.subject,
                       r.body, r.html, r.reply_to, headers_json(r.headers), len(r.attachments)))
    await db.executemany(
        "INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, due_at, priority, "
        "expires_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", messages)
    await db.executemany(
        "INSERT INTO message_bodies(message_id, from_addr, from_name, to_name, subject, body_text, "
        "body_html, reply_to, headers, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", bodies)
    await store_attachments(db, [(base + n, r.attachments) for n, r in enumerate(fresh, start=1) if r.attachments])
    return len(fresh), len(rows) - len(fresh)
