"""The one connection wrapper: pragmas, explicit transactions, migrations, schema checks.

Every write goes through ``Database.write()``, which issues ``BEGIN IMMEDIATE`` itself (the
connection runs with ``isolation_level=None`` so Python never opens a deferred transaction
behind our back) and commits with ``synchronous=FULL``: when ``write()`` returns, the change
survives a crash or a power cut. Readers open ``mode=ro`` and cannot write by accident.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import aiosqlite

from ..errors import DamagedDatabase, NotOurDatabase, SchemaTooNew, StoreError
from ..queuefile import FILE_MODE, OpenedFile, create_private, is_sqlite, no_queue, require_queue_file
from .schema import APPLICATION_ID, MIGRATIONS, AddColumns, Rebuild

if TYPE_CHECKING:
    from .sqlite import SQLite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
SCHEMA_VERSION = len(MIGRATIONS)
BEGIN_DEADLINE = 60.0  # seconds a write keeps retrying a BEGIN that finds the file locked

SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


def damaged(path: str) -> DamagedDatabase:
    """The error for corrupt pages, naming the command that checks the file."""
    return DamagedDatabase(path, f"sqlite3 {path} 'PRAGMA integrity_check'")


def _damaged(exc: sqlite3.Error) -> bool:
    """SQLite's own verdict that pages are corrupt (``database disk image is malformed``)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "malformed" in str(exc)
    return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def store_error(exc: sqlite3.Error, path: str, what: str) -> StoreError:
    return damaged(path) if _damaged(exc) else StoreError(f"{path}: {what}: {exc}")


def _reraise(exc: sqlite3.Error, path: str) -> NoReturn:
    """A statement's error as the store's: corrupt pages are a ``DamagedDatabase``, a lock held
    too long or any other failure a ``StoreError`` naming the file and the cause."""
    if _damaged(exc):
        raise damaged(path) from exc
    text = str(exc)
    if "locked" in text or "busy" in text:
        raise StoreError(f"{path} is locked by another process ({text})") from exc
    raise StoreError(f"{path}: cannot read ({text})") from exc


class SyncTx:
    """The raw connection inside ``Database.transaction``: the same three calls as ``Database``,
    synchronous, on the database thread. Hot-path transactions are written against this."""

    dialect = "sqlite"
    IntegrityError = sqlite3.IntegrityError

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def execute(self, sql: str, params: Params = ()) -> int:
        return self.conn.execute(sql, params).rowcount


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """On the database thread: BEGIN IMMEDIATE, retried while another writer holds the file.

    ``busy_timeout`` already waits; a BEGIN that still finds the file locked is retried here,
    which is safe because nothing has happened yet."""
    deadline = time.monotonic() + BEGIN_DEADLINE
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            log.warning("database busy, waiting to write: %s", exc)
            time.sleep(0.05)


def _run_transaction(conn: sqlite3.Connection, fn: Callable[[SyncTx], T]) -> T:
    """On the database thread: BEGIN IMMEDIATE, ``fn``, COMMIT (ROLLBACK if anything raises)."""
    _begin_immediate(conn)
    try:
        result = fn(SyncTx(conn))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class Database:
    """An open queue file. Use ``open_db``; do not construct directly."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self._lock = asyncio.Lock()
        self.opened: OpenedFile | None = None  # set for writers: the file this connection holds

    @property
    def engine(self) -> SQLite:
        from .sqlite import ENGINE

        return ENGINE

    async def optimize(self, *, at_open: bool = False) -> None:
        """``PRAGMA optimize``, its sampling bounded (``analysis_limit``: about 130 ms on a queue
        of a million rows the first time, nothing while the statistics are fresh). ``at_open``
        asks SQLite to look at every table (``0x10002``: SQLite 3.42 and later; older versions
        only look at tables this connection has queried, so there it is a no-op and the call at
        close does the work). The plans that matter do not depend on it: the claim stays pinned
        to its index, since measured at 1M rows the planner still prefers a worse index with
        statistics (docs/performance.md). Busy or read-only: skipped, it is only statistics."""
        try:
            await self.conn.execute("PRAGMA analysis_limit = 400")
            await self.conn.execute("PRAGMA optimize = 0x10002" if at_open else "PRAGMA optimize")
        except sqlite3.DatabaseError as exc:  # busy, read-only: the next real statement will say
            log.debug("%s: PRAGMA optimize skipped (%s)", self.path, exc)

    def check_file(self) -> None:
        """Raise ``QueueFileChanged`` unless the path still names the file opened (see ``queuefile``)."""
        if self.opened is not None:
            self.opened.check()

    # One round trip to aiosqlite's thread per statement: the claim transaction is a handful of
    # statements, and each extra hop was measured to cost more than SQLite's own work.
    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(await self.conn.execute_fetchall(sql, params))
        except sqlite3.DatabaseError as exc:
            _reraise(exc, self.path)

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        try:
            rows = await self.conn.execute_fetchall(sql, params)
        except sqlite3.DatabaseError as exc:
            _reraise(exc, self.path)
        return next(iter(rows), None)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        try:
            cursor = await self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            _reraise(exc, self.path)
        return cursor.rowcount  # the cursor holds no statement open once a write has run

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        """One statement per row; the rows changed in all (sqlite3 sums ``rowcount`` over them)."""
        try:
            cursor = await self.conn.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            _reraise(exc, self.path)
        return cursor.rowcount

    async def transaction(self, fn: Callable[[SyncTx], T]) -> T:
        """Run ``fn`` inside one durable ``BEGIN IMMEDIATE`` transaction in a single trip to
        aiosqlite's thread (``_execute`` is how aiosqlite runs every call there). Under load each
        trip waits for a busy event loop, so the claim transaction (measured: 8 trips, 4.7 ms)
        is one trip here. ``write()`` is the many-trip form for cold paths."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        async with self._lock:
            try:
                return await self.conn._execute(_run_transaction, self.conn._conn, fn)
            except sqlite3.Error as exc:
                raise store_error(exc, self.path, "write failed") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Database]:
        """One durable ``BEGIN IMMEDIATE`` transaction; rolled back if the block raises."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        async with self._lock:
            try:
                await self.conn._execute(_begin_immediate, self.conn._conn)
            except sqlite3.Error as exc:
                raise store_error(exc, self.path, "cannot start a write") from exc
            try:
                yield self
            except BaseException as exc:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise store_error(exc, self.path, "write failed") from exc
                raise
            try:
                await self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise store_error(exc, self.path, "commit failed") from exc

def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@asynccontextmanager
async def open_db(path: str, *, readonly: bool = False, create: bool = False,
                  mode: int = FILE_MODE) -> AsyncIterator[Database]:
    """Open (and with ``create``, initialise or migrate) the queue at ``path``.

    Only ``create`` makes a new queue (from no file, a 0-byte file or an empty SQLite file),
    created with ``mode``; without it those are ``NoDatabase``."""
    file = Path(path)
    if not create:
        require_queue_file(path)
    else:
        create_private(path, mode)
    if readonly:
        target, uri = file.resolve().as_uri() + "?mode=ro", True
    else:
        target, uri = str(file), False
    try:
        conn = await aiosqlite.connect(target, uri=uri, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        db = Database(conn, path, readonly)
        try:
            wal = await _configure(db)
            await _check_or_migrate(db, migrate=not readonly, create=create)
        except DamagedDatabase as exc:
            if not is_sqlite(path):
                raise NotOurDatabase(f"{path} is not a sender queue database ({exc.__cause__})") from exc
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: {exc}") from exc
        if not readonly:
            db.opened = OpenedFile.of(path, wal)
        yield db
    finally:
        await conn.close()


async def _configure(db: Database) -> bool:
    """Set the pragmas; True when the file is in WAL mode (so its ``-wal`` must exist while open)."""
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await db.execute("PRAGMA foreign_keys = ON")
    wal = False
    if not db.readonly:
        row = await db.fetchone("PRAGMA journal_mode = WAL")
        wal = bool(row) and str(row[0]).lower() == "wal"  # type: ignore[index]
    await db.execute("PRAGMA synchronous = FULL")
    # Savepoint journals and the json_each/ORDER BY scratch tables of the claim stay in memory
    # (they never need to survive a crash; the WAL does). Record-and-claim of 4 rows: system time
    # per message 79 -> 41 us, 4,000 -> 4,600 messages/s.
    await db.execute("PRAGMA temp_store = MEMORY")
    return wal


async def _header(db: Database) -> tuple[int, int, int]:
    app = (await db.fetchone("PRAGMA application_id"))[0]  # type: ignore[index]
    version = (await db.fetchone("PRAGMA user_version"))[0]  # type: ignore[index]
    tables = (await db.fetchone("SELECT count(*) FROM sqlite_master"))[0]  # type: ignore[index]
    return app, version, tables


async def _check_or_migrate(db: Database, *, migrate: bool, create: bool = True) -> None:
    app, version, tables = await _header(db)
    fresh = app == 0 and tables == 0
    if fresh and not create:
        raise no_queue(db.path, "an empty SQLite file; ")
    if not fresh and app != APPLICATION_ID:
        raise NotOurDatabase(f"{db.path} is an SQLite file but not a sender queue database")
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{db.path} has schema version {version}, newer than this sender ({SCHEMA_VERSION}); "
            "upgrade the sender"
        )
    if version == SCHEMA_VERSION:
        return
    if not migrate:
        if fresh:
            raise NotOurDatabase(f"{db.path} is empty, not a sender queue database")
        raise StoreError(f"{db.path} has schema version {version}; run `python -m sender init` to upgrade")
    for number, (name, step) in enumerate(MIGRATIONS, start=1):
        if isinstance(step, Rebuild):
            # Outside any transaction (inside one the pragma is a no-op): a DROP TABLE with
            # foreign keys on would cascade-delete every message body.
            await db.execute("PRAGMA foreign_keys = OFF")
        try:
            async with db.write():
                current = (await db.fetchone("PRAGMA user_version"))[0]  # type: ignore[index]
                if current >= number:
                    continue  # another process applied it meanwhile
                if isinstance(step, Rebuild):
                    await _rebuild(db, step)
                    script = step.then
                elif isinstance(step, AddColumns):
                    await _add_columns(db, step)
                    script = ""
                else:
                    script = step
                for statement in _statements(script):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (number, name, time.time()),
                )
                await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                await db.execute(f"PRAGMA user_version = {number}")
        finally:
            if isinstance(step, Rebuild):
                await db.execute("PRAGMA foreign_keys = ON")
        log.info("applied migration %s to %s", name, db.path)


async def _add_columns(db: Database, step: AddColumns) -> None:
    have = {r[1] for r in await db.fetchall(f'PRAGMA table_info("{step.table}")')}
    for name, kind in step.columns:
        if name not in have:
            await db.execute(f'ALTER TABLE "{step.table}" ADD COLUMN "{name}" {kind}')


async def _rebuild(db: Database, step: Rebuild) -> None:
    """The 12-step table rebuild (see ``schema.Rebuild``), inside the caller's transaction."""
    table = step.table
    row = await db.fetchone("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    if row is not None and step.new in str(row[0]):
        return  # already rebuilt (a file whose user_version was wound back): nothing to do
    if row is None or str(row[0]).count(step.old) != 1:
        raise StoreError(f"{db.path}: cannot migrate table {table}: its definition is not the expected one")
    keep = [r[0] for r in await db.fetchall(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY rowid", (table,))]
    _create, _, rest = str(row[0]).replace(step.old, step.new).partition("(")
    await db.execute(f'CREATE TABLE "{table}_new" (' + rest)
    columns = ", ".join(f'"{r[1]}"' for r in await db.fetchall(f'PRAGMA table_info("{table}")'))
    await db.execute(f'INSERT INTO "{table}_new" ({columns}) SELECT {columns} FROM "{table}"')
    await db.execute(f'DROP TABLE "{table}"')
    await db.execute(f'ALTER TABLE "{table}_new" RENAME TO "{table}"')
    for sql in keep:
        await db.execute(sql)
    broken = await db.fetchall("PRAGMA foreign_key_check")
    if broken:
        raise StoreError(f"{db.path}: migrating {table} would break {len(broken)} foreign key(s)")


def _statements(script: str) -> list[str]:
    """Split a script into statements (trigger bodies contain semicolons)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
