"""PostgreSQL for tests: each test gets its own fresh database on the server ``SENDER_TEST_POSTGRES``
names (a URL, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards.

Without the variable a PostgreSQL test skips with one line; under ``CI`` it fails (``need``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support import need

ENV = "SENDER_TEST_POSTGRES"


def server() -> str:
    """The server's URL, or skip (fail under CI) when none is configured."""
    dsn = os.environ.get(ENV, "")
    need(None if dsn else f"PostgreSQL tests need {ENV} (a postgresql:// URL of a server to create databases on)")
    return dsn


def with_database(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database (its URL), dropped with ``WITH (FORCE)`` when the block ends."""
    import psycopg
    from psycopg import sql

    dsn = server()
    name = f"sender_test_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def absent_database() -> str:
    """The URL of a database the server does not have."""
    return with_database(server(), f"sender_absent_{secrets.token_hex(6)}")


def target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh queue target for ``engine``: a file path for SQLite, a new database for PostgreSQL."""
    if engine == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return str(tmp_path / "queue.db")


def query(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read the queue back with plain psycopg (the tests' second opinion)."""
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(statement, params).fetchall())


def one(url: str, statement: str, params: tuple[object, ...] = ()) -> dict[str, object]:
    """One row as a dict of its columns."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row
