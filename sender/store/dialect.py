"""Per-engine statement variants: the one mechanism for SQL whose dialect differs.

Statements are written once, in SQLite's dialect and placeholders (``?``, ``:name``); the
PostgreSQL store translates placeholders itself. Where the text itself must differ (``json_each``,
``INDEXED BY``, the unary ``+``, ``FOR UPDATE SKIP LOCKED``, FTS5), the store module names both
variants with ``pick(db, sqlite=..., postgres=...)`` at the call site, and the open ``Store`` or
``Tx`` says which dialect it speaks (its ``dialect`` attribute).

``ids(db, param)``, ``texts(db, param)`` and ``each(db, param)`` are the commonest variant, a JSON array parameter as
a set of rows: ``json_each`` on SQLite, ``json_array_elements_text`` on PostgreSQL (the callers
pass the same JSON text to both).
"""

from __future__ import annotations

from typing import Protocol

SQLITE, POSTGRES = "sqlite", "postgres"


class Speaks(Protocol):
    dialect: str


class _As:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect


# For statements built once at import in both forms: ``ids(AS_POSTGRES, ":ids")``.
AS_SQLITE, AS_POSTGRES = _As(SQLITE), _As(POSTGRES)


def pick(db: Speaks, *, sqlite: str, postgres: str) -> str:
    """The variant of a statement (or fragment) for the dialect ``db`` speaks."""
    return postgres if db.dialect == POSTGRES else sqlite


def indexed(db: Speaks, index: str) -> str:
    """SQLite's ``INDEXED BY index`` (a plan pinned where its planner, without statistics, picks
    a worse one); nothing on PostgreSQL, whose planner has autovacuum's statistics."""
    return pick(db, sqlite=f"INDEXED BY {index}", postgres="")


def ids(db: Speaks, param: str) -> str:
    """``SELECT`` of the integers in the JSON array bound to ``param`` (``?`` or ``:name``).

    PostgreSQL reads it as an array literal (``[1, 2]`` -> ``{1, 2}``): the planner then knows
    how many ids there are and probes the index, where a JSON set-returning function (estimated
    at 100 rows) made it hash-join a sequential scan of the table."""
    return pick(db, sqlite=f"SELECT value FROM json_each({param})",
                postgres=f"SELECT unnest(CAST(translate({param}, '[]', '{{}}') AS bigint[]))")


def texts(db: Speaks, param: str) -> str:
    """``SELECT`` of the strings in the JSON array bound to ``param``."""
    return pick(db, sqlite=f"SELECT value FROM json_each({param})",
                postgres=f"SELECT value FROM json_array_elements_text(CAST({param} AS json))")


def each(db: Speaks, param: str) -> str:
    """A table function over the JSON array of strings bound to ``param``, one ``value`` column."""
    return pick(db, sqlite=f"json_each({param})",
                postgres=f"json_array_elements_text(CAST({param} AS json))")


def arrays(db: Speaks, param: str) -> str:
    """A table function over the JSON array of arrays bound to ``param``, one ``value`` column;
    ``json_extract(value, '$[0]')`` reads an item's field on both (PostgreSQL's from
    ``pg_schema``, as text)."""
    return pick(db, sqlite=f"json_each({param})", postgres=f"jsonb_array_elements(CAST({param} AS jsonb))")
