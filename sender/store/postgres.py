"""PostgreSQL, the second engine: its parts of the seam in ``engine.py``.

The connection (psycopg 3 on one thread, mirroring aiosqlite) is ``pg_store.py``, imported when
a queue is opened, so a command on an SQLite file never loads the driver; the schema is
``pg_schema.py``; the listening side of its wake-ups is ``pg_listen.py``; the claim and outcome
writes are SQLite's own (``claims.py``, ``sending.py``), their few differing statements picked by
``dialect.pick``. A target is ``postgresql://user@host:port/dbname`` (or ``postgres://``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ..errors import StoreError
from ..policy import Policy
from . import claims, sending
from .claims import Claim
from .engine import Store, Tx
from .pg_schema import COMPACT_COUNTS, LOCK, SCHEMA_VERSION

SCHEMES = ("postgresql://", "postgres://")
COMPACT_EVERY = 200  # claims between two foldings of the state counters (pg_schema.COMPACT_COUNTS)



class Postgres:
    """PostgreSQL 13+ (transition-table triggers, trusted ``citext`` and ``pg_trgm``)."""

    name = "postgres"
    schema_version = SCHEMA_VERSION
    local_clock = False

    def __init__(self) -> None:
        self._claims = 0

    def accepts(self, target: str) -> bool:
        return target.startswith(SCHEMES)

    def open(self, path: str, *, readonly: bool = False, create: bool = False,
             mode: int | None = None) -> AbstractAsyncContextManager[Store]:
        from .pg_store import open_pg

        return open_pg(path, readonly=readonly, create=create)

    def claim(self, tx: Tx, policy: Policy | None, *, worker: str, worker_id: int, limit: int,
              lease: float, now: float) -> list[Claim]:
        got = claims.claim(tx, policy, worker=worker, worker_id=worker_id, limit=limit, lease=lease, now=now)
        self._claims += 1
        if self._claims % COMPACT_EVERY == 0:
            self.compact_counts(tx)
        return got

    def compact_counts(self, tx: Tx) -> None:
        """Fold the state counters' deltas, unless another session is doing it right now."""
        got = tx.fetchone("SELECT pg_try_advisory_xact_lock(?)", (LOCK + 1,))
        if got is not None and got[0]:
            tx.execute(COMPACT_COUNTS)

    def record(self, tx: Tx, outcomes: Sequence[sending.Outcome], now: float) -> None:
        """The outcomes, and the deletion of their claims' start marks (``pg_marks``)."""
        from .pg_marks import settle_in

        sending.record_in(tx, outcomes, now)
        settle_in(tx, outcomes)

    async def now(self, db: Store) -> float:
        """The server's clock, in epoch seconds (database time: every host judges by one clock)."""
        row = await db.fetchone("SELECT CAST(extract(epoch FROM clock_timestamp()) AS double precision)")
        assert row is not None
        return float(row[0])

    @asynccontextmanager
    async def wakeups(self, db: Store, wake: Callable[[], None], poll: float) -> AsyncIterator[bool]:
        """A ``LISTEN`` connection beside the queue's own (``pg_listen.py``), for the block."""
        from .pg_listen import listening
        from .pg_store import PgStore

        assert isinstance(db, PgStore)
        async with listening(db, wake, poll):
            yield True

    def translate(self, exc: Exception, path: str) -> StoreError | None:
        if isinstance(exc, StoreError):
            return exc
        if type(exc).__module__.partition(".")[0] == "psycopg":
            from .pg_store import error

            return error(exc, path, "read failed")  # type: ignore[arg-type]
        return None


ENGINE = Postgres()
