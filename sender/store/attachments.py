"""Attachment rows: each distinct file once in ``attachments`` (by SHA-256), one
``message_attachments`` link per row and file; written at enqueue, read by the claim."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..attachments import Attachment, Part
from ..errors import InputError
from . import dialect
from .engine import Store, Tx


async def store(db: Store, links: list[tuple[int, tuple[Attachment, ...]]]) -> None:
    """Inside the enqueue transaction: each new distinct file once, then one link per row and file."""
    wanted = {a.sha256: a for _row, files in links for a in files}
    if not wanted:
        return
    have = {r[0] for r in await db.fetchall(
        f"SELECT sha256 FROM attachments WHERE sha256 IN ({dialect.texts(db, '?')})",
        (json.dumps(sorted(wanted)),))}
    for sha, a in wanted.items():
        if sha in have:
            continue
        data = Path(a.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise InputError(f"attachments: {a.path} changed while it was being queued")
        await db.execute("INSERT INTO attachments(sha256, size, bytes) VALUES (?, ?, ?)", (sha, len(data), data))
    await db.executemany(
        "INSERT INTO message_attachments(message_id, position, sha256, filename, content_type) "
        "VALUES (?, ?, ?, ?, ?)",
        [(row, i, a.sha256, a.filename, a.content_type) for row, files in links for i, a in enumerate(files)])


def load(tx: Tx, ids: Iterable[int]) -> dict[int, tuple[Part, ...]]:
    """In the claim transaction: the parts of claimed rows that have attachments (the claim asks
    only for those; each distinct file is read once per batch)."""
    links = tx.fetchall("SELECT message_id, sha256, filename, content_type FROM message_attachments "
                        f"WHERE message_id IN ({dialect.ids(tx, '?')}) ORDER BY message_id, position",
                        (json.dumps(list(ids)),))
    if not links:
        return {}
    blobs = {r[0]: bytes(r[1]) for r in tx.fetchall(
        f"SELECT sha256, bytes FROM attachments WHERE sha256 IN ({dialect.texts(tx, '?')})",
        (json.dumps(sorted({r[1] for r in links})),))}
    out: dict[int, list[Part]] = {}
    for row, sha, filename, kind in links:
        out.setdefault(row, []).append(Part(filename, kind, blobs[sha]))
    return {row: tuple(parts) for row, parts in out.items()}
