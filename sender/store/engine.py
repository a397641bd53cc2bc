"""The engine seam: what the store needs from a database, and the engine-specific parts.

Every store function takes a ``Store`` (an open queue) and, inside a claim, a ``Tx`` (one
synchronous transaction). An ``Engine`` supplies the parts that differ between databases: opening
a connection with its pragmas and migrations, the claim statement, the set-based outcome writes,
and the translation of its errors into ``StoreError``. SQLite's is ``sender.store.sqlite``; a
second engine adds one module beside it, a line in ``engines()``, and passes
``tests/test_store_contract.py``. Commands open a queue with ``open_store(target)``, which asks
each engine whether it ``accepts`` the target (a PostgreSQL URL, say); a file path is SQLite's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..times import host_time

if TYPE_CHECKING:
    from ..errors import StoreError
    from ..policy import Policy
    from .claims import Claim
    from .sending import Outcome

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


class Tx(Protocol):
    """One open transaction, run synchronously (the claim and the outcome writes). ``dialect``
    picks statement variants (``dialect.pick``); ``IntegrityError`` is the driver's class for a
    refused unique index (the claim's savepoint fallback catches it)."""

    dialect: str

    @property
    def IntegrityError(self) -> type[Exception]: ...

    def fetchall(self, sql: str, params: Params = ()) -> Sequence[Any]: ...

    def fetchone(self, sql: str, params: Params = ()) -> Any | None: ...

    def execute(self, sql: str, params: Params = ()) -> int: ...


class Store(Protocol):
    """An open queue: statements, durable transactions, and the file it names."""

    path: str
    readonly: bool
    dialect: str

    @property
    def engine(self) -> Engine: ...

    async def fetchall(self, sql: str, params: Params = ()) -> Sequence[Any]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Any | None: ...

    async def execute(self, sql: str, params: Params = ()) -> int: ...

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        """Run one statement per row; return the number of rows they changed in all."""
        ...

    async def transaction(self, fn: Callable[[Tx], T]) -> T: ...

    def write(self) -> AbstractAsyncContextManager[Any]: ...

    def check_file(self) -> None: ...

    async def optimize(self, *, at_open: bool = False) -> None:
        """Refresh the planner's statistics where they are stale (after a large import, at start)."""
        ...


class Engine(Protocol):
    """The engine-specific parts, one object per database kind."""

    name: str
    schema_version: int  # migrations this engine applies
    local_clock: bool  # the database's clock is this host's (a file queue): nothing to measure

    def accepts(self, target: str) -> bool:
        """Whether ``target`` (a ``--db`` value) names a queue of this engine."""
        ...

    def open(self, path: str, *, readonly: bool = False, create: bool = False,
             mode: int | None = None) -> AbstractAsyncContextManager[Store]:
        """Connect with the engine's settings, check or migrate the schema, translate errors.
        ``mode`` is the permission of a queue file it creates, where the engine has files."""
        ...

    def claim(self, tx: Tx, policy: Policy | None, *, worker: str, worker_id: int, limit: int,
              lease: float, now: float) -> list[Claim]:
        """Move up to ``limit`` due rows to ``sending`` and log them, inside ``tx``."""
        ...

    def record(self, tx: Tx, outcomes: Sequence[Outcome], now: float) -> None:
        """Apply a batch of outcomes, fenced by claim token, inside ``tx``."""
        ...

    def translate(self, exc: Exception, path: str) -> StoreError | None:
        """The store's error for an engine exception, or None if it is not the engine's."""
        ...

    async def now(self, db: Store) -> float:
        """The database's clock, in epoch seconds (SQLite's is this host's)."""
        ...


class DbClock:
    """The queue's clock, read on this host: ``host_time()`` plus the measured offset of the
    database server's clock (none for a file queue, whose clock is this host's).

    Every time the sender writes or judges (a lease, a heartbeat, a due time, a policy window, a
    worker's liveness) comes from this clock, so hosts sharing one server agree on them whatever
    their own clocks say: a host minutes fast can neither expire another's claim early nor send
    early. The offset is measured at start and at every heartbeat, to within half a round trip
    (``sync``). A worker's own lease deadline is kept on its steady clock as well (the fence), so
    a step of this clock between two measurements cannot let it start a claim it no longer holds.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return host_time() + self.offset

    async def sync(self, db: Store) -> float:
        """Measure the database's clock against this host's; return the offset now in use."""
        if db.engine.local_clock:
            return self.offset
        before = host_time()
        server = await db.engine.now(db)
        after = host_time()
        self.offset = server - (before + after) / 2
        return self.offset


async def db_now(db: Store) -> float:
    """The queue's clock once, for a command (one round trip on a server, none on a file)."""
    return host_time() if db.engine.local_clock else await db.engine.now(db)


def engines() -> dict[str, Engine]:
    """Every engine present, by name (the contract tests run on each); SQLite, the default, last."""
    from .postgres import ENGINE as POSTGRES
    from .sqlite import ENGINE as SQLITE

    return {POSTGRES.name: POSTGRES, SQLITE.name: SQLITE}


def engine_for(target: str) -> Engine:
    """The engine whose queue ``target`` names (a URL this sender does not know is bad input)."""
    for engine in engines().values():
        if engine.accepts(target):
            return engine
    from ..errors import UsageError

    raise UsageError(f"--db {target}: not a queue file path, and no database engine for "
                     f"{target.split('://', 1)[0]}:// URLs")


def open_store(target: str, *, readonly: bool = False, create: bool = False,
               mode: int | None = None) -> AbstractAsyncContextManager[Store]:
    """Open the queue ``target`` names with its engine (see ``Engine.open``)."""
    return engine_for(target).open(target, readonly=readonly, create=create, mode=mode)
