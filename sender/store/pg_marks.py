"""The start journal on PostgreSQL: marks in a table, committed asynchronously, trusted per server epoch.

Before a session sends ``MAIL FROM`` for a claim, the worker inserts ``(worker, row, token)`` into
``start_marks`` on a connection of its own with ``synchronous_commit = off``, and waits for the
server's answer: the mark is then committed and visible to every other session, though its WAL
may not be on disk yet. Marks asked for while one statement is on its way go together in the
next (one statement, one round trip), so the event loop never blocks and a session waits about
one round trip before its ``MAIL FROM``. A mark lives as long as its claim: the transaction that
records the claim's outcome deletes it (``settle_in``), a recoverer deletes a dead worker's.

An acknowledged asynchronous commit outlives the worker (the server has it), its connection and
its host. It may be lost only with the server's memory: a crash of the server or of any of its
processes (PostgreSQL then replays its WAL, and the last commits not yet flushed are gone), or a
failover to a standby. Each of those changes the *server epoch*: the postmaster's start time and
the time the server's statistics were last reset, which a crash restart resets while the
postmaster lives on (``pg_postmaster_start_time()`` alone stays the same then; measured on 15).
The worker records the epoch in its ``workers`` row when it opens its marks, before its first
claim; a recoverer trusts the absence of a mark only while the epoch is still the one recorded.
See docs/design.md, "The start journal".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import psycopg

from ..errors import StoreError
from ..journal import NOTHING, Proof, worker_of
from .engine import Store, Tx
from .pg_store import PgStore
from .sending import Outcome

log = logging.getLogger(__name__)

CLOSE_WAIT = 10.0  # seconds a stopping worker waits for its last marks' statement

# What changes whenever the server may have lost an acknowledged asynchronous commit.
EPOCH = ("concat_ws(' ', extract(epoch FROM pg_postmaster_start_time()), "
         "(SELECT extract(epoch FROM stats_reset) FROM pg_stat_bgwriter))")

_RECORD_EPOCH = f"UPDATE workers SET marks_epoch = {EPOCH} WHERE id = %s"

# Marks no recovery can need, as a worker killed after marking a claim that was already recovered
# leaves them: a claim token is never reused, so a mark matching no ``sending`` row never will.
_ORPHANS = """
DELETE FROM start_marks AS s
 WHERE NOT EXISTS (SELECT 1 FROM messages AS m
                    WHERE m.id = s.row_id AND m.claim_token = s.token AND m.state = 'sending')
"""

_WRITE = """
INSERT INTO start_marks(worker_id, row_id, token)
SELECT %s, CAST(e->>0 AS bigint), e->>1 FROM jsonb_array_elements(CAST(%s AS jsonb)) AS e
ON CONFLICT DO NOTHING
"""

# In the transaction that records outcomes: their claims' marks are no longer needed.
_SETTLED = """
DELETE FROM start_marks AS s USING jsonb_array_elements(CAST(? AS jsonb)) AS e
 WHERE s.worker_id = CAST(e->>0 AS bigint) AND s.row_id = CAST(e->>1 AS bigint) AND s.token = e->>2
"""

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


class PgMarks:
    """One worker's marks, written by one task on the event loop, a batch per statement."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], connect: Connect, worker_id: int) -> None:
        self._conn = conn
        self._connect = connect
        self._worker = worker_id
        self._starts: list[tuple[int, str]] = []
        self._batch = _future()  # resolved when the marks in ``_starts`` are committed
        self._writer: asyncio.Task[None] | None = None

    async def started(self, row: int, token: str) -> None:
        """Return once the mark is committed; raise ``StoreError`` if it could not be (then the
        message must not start)."""
        self._starts.append((row, token))
        batch = self._batch
        self._wake()
        await asyncio.shield(batch)

    def delivered(self, row: int, token: str, code: int, reply: str) -> bool:
        """Not noted on this engine: a crash before the outcome is stored leaves the row ``unknown``."""
        return False

    def settled(self, rows: Iterable[int]) -> None:
        """Nothing left to do: the transaction that recorded the outcomes deleted their marks."""

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Send what has gathered, one statement at a time, until nothing is left."""
        while self._starts:
            starts, batch = self._starts, self._batch
            self._starts, self._batch = [], _future()
            try:
                if self._conn.closed:
                    self._conn = await self._reconnect()
                await self._conn.execute(_WRITE, (self._worker, json.dumps(starts)))
            except (psycopg.Error, StoreError) as exc:
                batch.set_exception(exc if isinstance(exc, StoreError)
                                    else StoreError(f"start marks: {exc}".strip()))
            except BaseException:  # cancelled, or a bug: no waiting session may start
                for waiting in (batch, self._batch):
                    waiting.set_exception(StoreError("start marks: the writer stopped"))
                self._starts, self._batch = [], _future()
                raise
            else:
                batch.set_result(None)

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        """A new connection after the old one broke. The recorded epoch stays: if the server
        restarted meanwhile, marks it held may be gone, and recording the new epoch would let
        a recoverer trust their absence."""
        conn = await self._connect()
        await conn.execute("SET synchronous_commit = off")
        log.warning("start marks: reconnected to the queue database")
        return conn

    async def close(self, *, clean: bool) -> None:
        """Let the last statement finish; with ``clean`` (every outcome stored) remove this
        worker's marks; close the connection."""
        try:
            if self._writer is not None:
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_WAIT)
            if clean and not self._conn.closed:
                await self._conn.execute("DELETE FROM start_marks WHERE worker_id = %s", (self._worker,))
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("start marks of worker %s could not be removed: %s", self._worker, exc)
        finally:
            await self._conn.close()


def _future() -> asyncio.Future[None]:
    """A batch's future; its exception counts as seen even when every waiter was cancelled."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


async def open_pg_marks(db: Store, worker_id: int) -> PgMarks:
    """Connect, record the server epoch in the worker's row (before its first claim), switch the
    connection to asynchronous commit, and delete the marks of claims that are over."""
    assert isinstance(db, PgStore)
    conn = await db.side_connection()
    try:
        await conn.execute("SET application_name = 'sender marks'")
        await conn.execute(_RECORD_EPOCH, (worker_id,))
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(_ORPHANS)
    except psycopg.Error as exc:
        await conn.close()
        raise StoreError(f"{db.path}: start marks: {exc}".strip()) from exc
    return PgMarks(conn, db.side_connection, worker_id)


def settle_in(tx: Tx, outcomes: Iterable[Outcome]) -> None:
    """Delete the marks of these outcomes' claims, inside the transaction recording them."""
    gone = [[worker_of(o.token), o.row, o.token] for o in outcomes]
    if gone:
        tx.execute(_SETTLED, (json.dumps(gone),))


class PgEvidence:
    """Reads a dead worker's marks inside the recoverer's transaction, if the server epoch is
    still the one the worker recorded; the host does not matter (the server holds the marks)."""

    def proof(self, tx: Tx, host: str | None, worker_id: int, claims: Sequence[tuple[int, str]]) -> Proof:
        row = tx.fetchone(f"SELECT marks_epoch, {EPOCH} FROM workers WHERE id = ?", (worker_id,))
        if row is None or row[0] is None or row[0] != row[1]:
            return NOTHING
        marked = {(r, t) for r, t in tx.fetchall("SELECT row_id, token FROM start_marks WHERE worker_id = ?",
                                                 (worker_id,))}
        return Proof({r for r, token in claims if (r, token) not in marked})

    def forget(self, tx: Tx, worker_id: int) -> None:
        """A dead worker's claims are all settled: its marks are no longer needed."""
        tx.execute("DELETE FROM start_marks WHERE worker_id = ?", (worker_id,))
