"""PostgreSQL's wake-ups: a ``LISTEN`` connection that wakes an idle daemon when rows become due.

The triggers of migration ``0002_notify`` (``pg_schema.py``) notify ``CHANNEL`` whenever a row
becomes ``scheduled`` (enqueue, retry, requeue, a claim handed back or retried later) or a pause
is lifted; PostgreSQL delivers the identical notifications of one transaction once. This is the
listening side: a second connection (autocommit, asyncio, on the daemon's own loop) whose every
notification calls ``wake``, which sets the daemon's event: notifications that arrive together cost
one turn, and a storm of separate commits wakes a daemon at most every ``SPACING`` seconds.

The listener never stops the daemon: a connection that cannot be made or is lost is said once at
warning level, the daemon polls meanwhile, and the listener reconnects with backoff and wakes the
daemon once it listens again (what was notified while it was away is not redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg

from .pg_schema import CHANNEL
from .pg_store import CONNECT_TIMEOUT, PgStore, error

log = logging.getLogger(__name__)

APPLICATION = "sender-listen"  # the listening connection's application_name (pg_stat_activity)
RETRY_MAX = 30.0  # seconds between two reconnection attempts, at most
SPACING = 0.05  # seconds between two wake-ups at least: a storm of commits wakes a daemon 20 times a second


class Listener:
    """One ``LISTEN`` connection and the task that reads it, reconnecting when it drops."""

    def __init__(self, db: PgStore, wake: Callable[[], None], poll: float) -> None:
        self.db = db
        self.wake = wake
        self.poll = poll  # how often the daemon looks anyway: named in the warning
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._woken = float("-inf")  # the loop's time of the last wake-up
        self._later: asyncio.TimerHandle | None = None  # the next one, when notifications come fast

    async def run(self) -> None:
        """Listen until cancelled: connect, wake the daemon, pass each notification on; again
        after a pause when the connection is lost or cannot be made."""
        delay, down = 1.0, False
        while True:
            try:
                await self._connect()
                if down:
                    log.info("wake-ups back: listening on %s again", CHANNEL)
                delay, down = 1.0, False
                self.wake()  # rows made due before LISTEN took effect, or while it was down
                await self._receive()
            except (psycopg.Error, OSError) as exc:
                if not down:
                    reason = error(exc, self.db.path, "LISTEN failed") if isinstance(exc, psycopg.Error) else exc
                    log.warning("no wake-ups from PostgreSQL (%s): polling every %gs until the listener "
                                "reconnects", reason, self.poll)
                    down = True
            finally:
                await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def stop(self) -> None:
        """Drop a wake-up still to come (the task is cancelled apart)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None

    async def _connect(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(
            self.db.target, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
            application_name=APPLICATION,
            # a server that vanished without closing the line (a cut network) is noticed in a minute
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        await self._conn.execute(f"LISTEN {CHANNEL}")

    async def _receive(self) -> None:
        assert self._conn is not None
        async for _note in self._conn.notifies():
            self._soon()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    def _soon(self) -> None:
        """Wake the daemon now, or ``SPACING`` after the last wake-up if that was too recent (one
        wake-up then stands for every notification until it fires)."""
        if self._later is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._woken + SPACING - loop.time()
        if wait > 0:
            self._later = loop.call_later(wait, self._wake_now)
        else:
            self._wake_now()

    def _wake_now(self) -> None:
        self._later = None
        self._woken = asyncio.get_running_loop().time()
        self.wake()


def _failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the wake-up listener stopped: the daemon polls from now on", exc_info=task.exception())


@contextlib.asynccontextmanager
async def listening(db: PgStore, wake: Callable[[], None], poll: float) -> AsyncIterator[None]:
    """A ``Listener`` running for the block; stopped (task cancelled, connection closed) after it."""
    listener = Listener(db, wake, poll)
    task = asyncio.create_task(listener.run(), name="sender-listen")
    task.add_done_callback(_failed)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
        listener.stop()
