"""The monitor's search (``sender.store.selection`` + ``sender.store.search``) on a real queue: each
term selects exactly its rows, totals are true, an upgraded queue is searchable, bad terms are
refused with a sentence, and every term's plan uses an index (never a scan of ``messages``)."""

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest

from sender.errors import UsageError
from sender.store import search
from sender.store.db import open_db
from sender.store.selection import parse_search, resolve, where
from tests.support import query, seed


async def search_ids(db_path: str, text: str) -> tuple[list[int], int]:
    async with open_db(db_path, readonly=True) as db:
        page = await search.search(db, text, time.time(), order="id")
    return [m.row for m in page.rows], page.total


async def queue(db_path: str) -> None:
    """Rows 1-5 campaign a (r0..r4), 6-8 campaign b (q0..q2); 2 failed, 7 unknown."""
    await seed(db_path, 5, campaign="a", prefix="r")
    await seed(db_path, 3, campaign="b", prefix="q")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE messages SET state = 'failed', last_reply = '554 5.7.1 denied' WHERE id = 2")
        conn.execute("UPDATE messages SET state = 'unknown', last_reply = 'lost after data' WHERE id = 7")


async def test_each_term_selects_exactly(db_path: str) -> None:
    """Row, Message-ID, exact address, fragment, state, campaign, reply and their conjunction."""
    await queue(db_path)
    mid = query(db_path, "SELECT message_id FROM messages WHERE id = 4")[0][0]
    assert await search_ids(db_path, "#3") == ([3], 1)
    assert await search_ids(db_path, mid) == ([4], 1)
    assert await search_ids(db_path, mid.strip("<>")) == ([4], 1)
    assert await search_ids(db_path, "q1@example.com") == ([7], 1)
    assert await search_ids(db_path, "q1@EXAMPLE.com") == ([7], 1)
    assert await search_ids(db_path, "q1@") == ([7], 1)       # a fragment (trigram index)
    assert await search_ids(db_path, "r3") == ([4], 1)        # a short fragment (a LIKE)
    assert await search_ids(db_path, "example") == (list(range(1, 9)), 8)
    assert await search_ids(db_path, "failed") == ([2], 1)
    assert await search_ids(db_path, "b") == ([6, 7, 8], 3)   # a campaign's name
    assert await search_ids(db_path, "campaign:a scheduled") == ([1, 3, 4, 5], 4)
    assert await search_ids(db_path, 'reply:"5.7.1 denied"') == ([2], 1)
    assert await search_ids(db_path, "reply:lost") == ([], 0)  # among failed messages only
    assert await search_ids(db_path, "unknown reply:lost") == ([7], 1)
    assert await search_ids(db_path, "unknown reply:lost campaign:a") == ([], 0)
    assert await search_ids(db_path, "since:1h") == (list(range(1, 9)), 8)


async def test_pages_keep_the_true_total(db_path: str) -> None:
    """A page is bounded; the total counts every match."""
    await seed(db_path, 30)
    async with open_db(db_path, readonly=True) as db:
        page = await search.search(db, "scheduled", time.time(), limit=10, offset=20)
    assert (page.total, page.first, page.last, len(page.rows)) == (30, 21, 30, 10)


def test_bad_terms_are_refused() -> None:
    """An unknown state or a bad duration is a UsageError naming it (shown on screen)."""
    with pytest.raises(UsageError, match="no such state"):
        parse_search("state:lost")
    with pytest.raises(UsageError, match="since"):
        parse_search("since:soon")


async def test_upgraded_queue_is_searchable(db_path: str) -> None:
    """A queue from before the search migration gets its addresses indexed on upgrade."""
    await queue(db_path)
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.executescript(
            "DROP TABLE recipients_fts; DROP TRIGGER IF EXISTS recipients_fts_insert; "
            "DROP TRIGGER IF EXISTS recipients_fts_delete; DROP TRIGGER IF EXISTS recipients_fts_update; "
            "DROP INDEX messages_campaign; DROP INDEX observations_source_seen; "
            "DELETE FROM schema_migrations WHERE version >= 4; PRAGMA user_version = 3;")
    async with open_db(db_path, create=True):
        pass
    assert await search_ids(db_path, "q2@exa") == ([8], 1)


@pytest.mark.parametrize("text", ["#3", "<1.x@example.org>", "q1@example.com", "example", "failed",
                                  "campaign:a", "campaign:a failed", "reply:denied", "since:1h",
                                  "sent campaign:a"])
async def test_every_term_uses_an_index(db_path: str, text: str) -> None:
    """No search term makes SQLite scan the messages table (the plan says SEARCH, not SCAN)."""
    await queue(db_path)
    async with open_db(db_path, readonly=True) as db:
        names = await search.campaign_names(db)
        cond, params = where(resolve(parse_search(text, names), time.time()))
        plan = await db.fetchall(f"EXPLAIN QUERY PLAN SELECT count(*) FROM messages m WHERE {cond}",
                                 params)
    details = [r[3] for r in plan]
    assert not any(d.startswith("SCAN m") for d in details), details
