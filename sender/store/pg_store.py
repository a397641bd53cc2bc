"""PostgreSQL's connection over psycopg 3 (the engine is ``postgres.py``, which imports this on open).

It mirrors SQLite's aiosqlite wrapper: one synchronous ``psycopg.Connection`` (autocommit off,
explicit transactions, ``synchronous_commit = on``) owned by a single-thread executor, and the
async ``Store`` methods submit to that thread. ``transaction(fn)`` runs ``fn(tx)`` there in one
transaction, so the claim and outcome writes of ``claims.py`` and ``sending.py`` run unchanged on
both engines. Statements arrive in SQLite's placeholders (``?``, ``:name``) and are translated
once each (``?`` -> ``%s``, ``:name`` -> ``%(name)s``, a literal ``%`` -> ``%%``); statements
whose text differs are picked per dialect in the store modules (``dialect.pick``).

A target is ``postgresql://user@host:port/dbname`` (or ``postgres://``); ``init`` creates the
database when the server has none of that name.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import conninfo, errors, sql

from ..errors import NoDatabase, NotOurDatabase, SchemaTooNew, StoreError
from .dialect import POSTGRES
from .engine import Params, Tx

if TYPE_CHECKING:
    from .postgres import Postgres
from .pg_schema import LOCK, MARK, MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

T = TypeVar("T")
CONNECT_TIMEOUT = 10  # seconds
RETRIES = 5  # a transaction PostgreSQL aborted as a deadlock or serialization failure is re-run

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|(?<![\w:]):([A-Za-z_]\w*)|\?|%")


def _token(match: re.Match[str]) -> str:
    text = match.group(0)
    if text[0] in "'\"":
        return text.replace("%", "%%")
    if match.group(1):
        return f"%({match.group(1)})s"
    return {"?": "%s", "%": "%%"}.get(text, text)


@functools.lru_cache(maxsize=2048)
def translate_sql(statement: str) -> str:
    """SQLite's placeholders as psycopg's (string literals and ``::`` casts left alone)."""
    return _TOKEN.sub(_token, statement)


def _params(params: Params) -> Params:
    return params if isinstance(params, dict) else tuple(params)


def display(target: str) -> str:
    """The target without its password, for messages and logs."""
    try:
        parts = conninfo.conninfo_to_dict(target)
    except psycopg.ProgrammingError:
        return target
    user = str(parts.get("user") or "")
    host, port, dbname = parts.get("host", "localhost"), parts.get("port"), parts.get("dbname", "")
    return f"postgresql://{user + '@' if user else ''}{host}{':' + str(port) if port else ''}/{dbname}"


def error(exc: psycopg.Error, where: str, what: str) -> StoreError:
    """A psycopg error as the store's, in one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return StoreError(f"{where}: opened read-only")
    if isinstance(exc, psycopg.OperationalError) and "refused" in text:
        return StoreError(f"{where}: cannot connect: connection refused ({text})")
    return StoreError(f"{where}: {what} ({text})")


class PgTx:
    """The connection inside ``PgStore.transaction``: the three calls of ``Tx``, on its thread."""

    dialect = POSTGRES
    IntegrityError = psycopg.IntegrityError

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def fetchall(self, statement: str, params: Params = ()) -> list[Any]:
        return self.conn.execute(translate_sql(statement), _params(params)).fetchall()

    def fetchone(self, statement: str, params: Params = ()) -> Any | None:
        return self.conn.execute(translate_sql(statement), _params(params)).fetchone()

    def execute(self, statement: str, params: Params = ()) -> int:
        return self.conn.execute(translate_sql(statement), _params(params)).rowcount


def _run_transaction(conn: psycopg.Connection[Any], fn: Callable[[PgTx], T]) -> T:
    """On the connection's thread: ``fn`` in one transaction, committed (rolled back if anything
    raises); re-run when PostgreSQL aborted it as a deadlock or a serialization failure."""
    for attempt in range(1, RETRIES + 1):
        try:
            result = fn(PgTx(conn))
            conn.commit()
            return result
        except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
            conn.rollback()
            if attempt == RETRIES:
                raise
            log.warning("transaction aborted by PostgreSQL, running it again: %s", exc)
            time.sleep(0.01 * attempt)
        except BaseException:
            conn.rollback()
            raise
    raise AssertionError("unreachable")


class PgStore:
    """An open PostgreSQL queue. Use ``ENGINE.open``; do not construct directly."""

    dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Any], path: str, readonly: bool,
                 thread: ThreadPoolExecutor, target: str) -> None:
        self.conn = conn
        self.path = path
        self.target = target  # as given, password included: for a second connection, never shown
        self.readonly = readonly
        self._thread = thread
        self._lock = asyncio.Lock()
        self._in_write = False

    @property
    def engine(self) -> Postgres:
        from .postgres import ENGINE

        return ENGINE

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _statement(self, statement: str, params: Params, how: str) -> Any:
        """On the connection's thread: one statement; outside ``write()`` its own transaction."""
        try:
            cursor = self.conn.execute(translate_sql(statement), _params(params))
            result = cursor.fetchall() if how == "all" else cursor.fetchone() if how == "one" else cursor.rowcount
            if not self._in_write:
                self.conn.commit()
            return result
        except psycopg.Error as exc:
            if not self._in_write:
                self.conn.rollback()
            raise error(exc, self.path, "statement failed") from exc

    def _many(self, statement: str, rows: list[Params]) -> int:
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(translate_sql(statement), [_params(r) for r in rows])
                changed = cursor.rowcount  # psycopg sums it over the rows
            if not self._in_write:
                self.conn.commit()
            return changed
        except psycopg.Error as exc:
            if not self._in_write:
                self.conn.rollback()
            raise error(exc, self.path, "statement failed") from exc

    async def fetchall(self, statement: str, params: Params = ()) -> list[Any]:
        return await self._call(self._statement, statement, params, "all")

    async def fetchone(self, statement: str, params: Params = ()) -> Any | None:
        return await self._call(self._statement, statement, params, "one")

    async def execute(self, statement: str, params: Params = ()) -> int:
        return await self._call(self._statement, statement, params, "count")

    async def executemany(self, statement: str, rows: Iterable[Params]) -> int:
        return await self._call(self._many, statement, list(rows))

    async def transaction(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` inside one durable transaction, in a single trip to the connection's thread."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        async with self._lock:
            try:
                return await self._call(_run_transaction, self.conn, fn)
            except psycopg.Error as exc:
                raise error(exc, self.path, "write failed") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[PgStore]:
        """One durable transaction over many statements; rolled back if the block raises."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        async with self._lock:
            self._in_write = True
            try:
                yield self
            except BaseException:
                self._in_write = False
                await self._call(self.conn.rollback)
                raise
            self._in_write = False
            try:
                await self._call(self.conn.commit)
            except psycopg.Error as exc:
                await self._call(self.conn.rollback)
                raise error(exc, self.path, "commit failed") from exc

    async def side_connection(self) -> psycopg.AsyncConnection[Any]:
        """Another connection to this database, on the event loop and in autocommit, for small
        writes that must not queue behind this one's transactions (the start marks)."""
        try:
            return await psycopg.AsyncConnection.connect(self.target, autocommit=True,
                                                         connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise error(exc, self.path, "cannot connect") from exc

    def check_file(self) -> None:
        """Nothing to check: a server's database has no file that can be replaced under us."""

    async def optimize(self, *, at_open: bool = False) -> None:
        """Nothing to do: PostgreSQL's autovacuum keeps the planner's statistics."""


# --- connecting and migrating ----------------------------------------------------------------

def _connect(target: str, where: str, create: bool) -> psycopg.Connection[Any]:
    try:
        return _session(psycopg.connect(target, autocommit=False, connect_timeout=CONNECT_TIMEOUT))
    except errors.InvalidCatalogName:
        if not create:
            raise NoDatabase(f"no queue database at {where} (the server has no such database; create it with: "
                             f"python -m sender init --db {where})") from None
    except psycopg.OperationalError as exc:
        if 'does not exist' in str(exc) and "database" in str(exc):
            if not create:
                raise NoDatabase(f"no queue database at {where} (the server has no such database; create "
                                 f"it with: python -m sender init --db {where})") from None
        else:
            raise error(exc, where, "cannot connect") from exc
    _create_database(target, where)
    try:
        return _session(psycopg.connect(target, autocommit=False, connect_timeout=CONNECT_TIMEOUT))
    except psycopg.Error as exc:
        raise error(exc, where, "cannot connect") from exc


def _session(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("SET synchronous_commit = on")
    conn.execute("SET application_name = 'sender'")
    conn.commit()
    return conn


def _create_database(target: str, where: str) -> None:
    """``init`` on a server without the database: create it from the maintenance database."""
    parts = conninfo.conninfo_to_dict(target)
    name = str(parts.get("dbname") or "")
    try:
        with psycopg.connect(conninfo.make_conninfo(target, dbname="postgres"), autocommit=True,
                             connect_timeout=CONNECT_TIMEOUT) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except errors.DuplicateDatabase:
        return
    except psycopg.Error as exc:
        raise error(exc, where, f"cannot create database {name}") from exc
    log.info("created database %s", where)


def _version(conn: psycopg.Connection[Any], where: str, *, create: bool) -> int:
    """The schema version of the queue in this database (0: an empty database, ours to create)."""
    row = conn.execute("SELECT obj_description(to_regclass('schema_migrations'), 'pg_class'), "
                       "to_regclass('schema_migrations') IS NOT NULL").fetchone()
    assert row is not None
    mark, exists = row
    if not exists:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()
        if tables is not None and tables[0]:
            raise NotOurDatabase(f"{where} is a PostgreSQL database but not a sender queue")
        if not create:
            raise NoDatabase(f"no queue database at {where} (an empty database; create it with: "
                             f"python -m sender init --db {where})")
        return 0
    if mark != MARK:
        raise NotOurDatabase(f"{where} is a PostgreSQL database but not a sender queue")
    version = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(version[0]) if version else 0


def _check_or_migrate(conn: psycopg.Connection[Any], where: str, *, readonly: bool, create: bool) -> None:
    try:
        version = _version(conn, where, create=create)
        conn.commit()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(f"{where} has schema version {version}, newer than this sender "
                               f"({SCHEMA_VERSION}); upgrade the sender")
        if version == SCHEMA_VERSION:
            return
        if readonly:
            raise StoreError(f"{where} has schema version {version}; run `python -m sender init` to upgrade")
        for number, (name, script) in enumerate(MIGRATIONS, start=1):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at double precision NOT NULL)")
            conn.execute(sql.SQL("COMMENT ON TABLE schema_migrations IS {}").format(sql.Literal(MARK)))
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (number,)).fetchone()
            if done is None:  # else another process applied it meanwhile
                conn.execute(script.encode())
                conn.execute("INSERT INTO schema_migrations(version, name, applied_at) VALUES (%s, %s, %s)",
                             (number, name, time.time()))
                log.info("applied migration %s to %s", name, where)
            conn.commit()
    except psycopg.Error as exc:
        conn.rollback()
        raise error(exc, where, "cannot read the schema") from exc
    except BaseException:
        conn.rollback()
        raise


@asynccontextmanager
async def open_pg(target: str, *, readonly: bool = False, create: bool = False) -> AsyncIterator[PgStore]:
    """Connect to the queue at ``target`` (with ``create``, create or migrate it)."""
    where = display(target)
    thread = ThreadPoolExecutor(1, thread_name_prefix="sender-pg")
    loop = asyncio.get_running_loop()
    try:
        conn = await loop.run_in_executor(thread, _connect, target, where, create)
        try:
            await loop.run_in_executor(
                thread, functools.partial(_check_or_migrate, conn, where, readonly=readonly, create=create))
            if readonly:
                conn.read_only = True
            yield PgStore(conn, where, readonly, thread, target)
        finally:
            await loop.run_in_executor(thread, conn.close)
    finally:
        thread.shutdown(wait=True)
