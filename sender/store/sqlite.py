"""SQLite over aiosqlite, the engine today: its parts of the seam in ``engine.py``.

The connection wrapper, pragmas and migrations are ``db.py``; the claim statement is
``claims.py``; the outcome writes are ``sending.py``. This module names them as one ``Engine``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from ..errors import StoreError
from ..policy import Policy
from ..times import host_time
from . import claims, db, sending
from .claims import Claim
from .engine import Store, Tx


class SQLite:
    """SQLite with WAL, ``synchronous=FULL`` and explicit ``BEGIN IMMEDIATE`` (see ``db.py``)."""

    name = "sqlite"
    schema_version = db.SCHEMA_VERSION
    local_clock = True

    def accepts(self, target: str) -> bool:
        return "://" not in target  # a file path (every other engine names a URL)

    def open(self, path: str, *, readonly: bool = False, create: bool = False,
             mode: int | None = None) -> AbstractAsyncContextManager[Store]:
        if mode is None:
            return db.open_db(path, readonly=readonly, create=create)
        return db.open_db(path, readonly=readonly, create=create, mode=mode)

    def claim(self, tx: Tx, policy: Policy | None, *, worker: str, worker_id: int, limit: int,
              lease: float, now: float) -> list[Claim]:
        return claims.claim(tx, policy, worker=worker, worker_id=worker_id, limit=limit, lease=lease,
                            now=now)

    def record(self, tx: Tx, outcomes: Sequence[sending.Outcome], now: float) -> None:
        sending.record_in(tx, outcomes, now)

    async def now(self, db: Store) -> float:
        return host_time()

    def translate(self, exc: Exception, path: str) -> StoreError | None:
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, sqlite3.Error):
            return db.store_error(exc, path, "read failed")
        return None


ENGINE = SQLite()
