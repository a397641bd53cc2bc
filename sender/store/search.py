"""The monitor's search: any message of the queue, by the terms of ``sender.store.selection``, paged.

``search`` returns one page and the true total ("N of M"): the total of a state alone comes from
the trigger-kept ``state_counts`` (O(1)); any other total is counted through the index of its
most selective term, up to ``TOTAL_CAP`` matches (then it says "50,000+", never less than the
truth). Sorting by another order than the index gives is done in SQL only up to ``SORT_CAP``
matches; beyond that the page keeps the index's order and says so, rather than sorting a
million rows per refresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from ..errors import UsageError
from . import counts, dialect
from .engine import Store
from .selection import FRAGMENT_CAP, FTS_MIN, REPLY_STATES, Selection, escape_like, parse_search, resolve, where

PAGE = 100
SORT_CAP = 20_000
TOTAL_CAP = 50_000  # a match larger than this (other than a state list) says "50,000+"
CAMPAIGN_NAMES = 1_000  # names a bare search word is compared with

# Column key -> SQL expression. Only a selection's natural order (``_natural_order``) is read
# from an index for any match size; another is sorted in SQL up to ``SORT_CAP`` matches.
ORDERS = {"id": "m.id", "recipient": "r.email", "campaign": "c.name", "state": "m.state",
          "due": "m.due_at", "updated": "m.updated_at", "attempts": "m.attempts"}


@dataclass(frozen=True, slots=True)
class Found:
    """One message in a search result."""

    row: int
    recipient: str
    campaign: str
    state: str
    due_at: float
    updated_at: float
    attempts: int
    priority: int
    note: str | None  # why a policy deferred it, else the last reply


@dataclass(frozen=True, slots=True)
class SearchPage:
    text: str
    selection: Selection
    total: int
    offset: int
    rows: list[Found]
    order: str          # the order used ("updated", "-id", ...)
    sort_note: str = ""  # why a requested order was not applied, if it was not
    capped: bool = False  # the total is a lower bound: at least ``total`` messages match

    @property
    def total_text(self) -> str:
        return f"{self.total:,}+" if self.capped else f"{self.total:,}"

    @property
    def first(self) -> int:
        return self.offset + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.offset + len(self.rows)


async def campaign_names(db: Store) -> frozenset[str]:
    return frozenset(r[0] for r in await db.fetchall(
        "SELECT name FROM campaigns ORDER BY id LIMIT ?", (CAMPAIGN_NAMES,)))


async def search(db: Store, text: str, now: float, *, offset: int = 0, limit: int = PAGE,
                 order: str = "") -> SearchPage:
    """One page of the messages ``text`` selects (see ``selection.parse_search``).

    An address that is no recipient's is a Message-ID typed without ``<>`` if there is one,
    else a fragment. ``order`` is a key of ``ORDERS``, prefixed with ``-`` for descending; empty means newest
    change first for a state list and newest row first otherwise.
    """
    sel = resolve(parse_search(text, await campaign_names(db)), now)
    if sel.recipient is not None and await db.fetchone(
            "SELECT 1 FROM recipients WHERE email = ?", (sel.recipient,)) is None:
        bare = next((t for t in text.split() if t.lower() == sel.recipient), sel.recipient)
        if await db.fetchone("SELECT 1 FROM messages WHERE message_id = ?", (f"<{bare}>",)):
            sel = replace(sel, recipient=None, mid=f"<{bare}>")  # a Message-ID without <>
        else:
            sel = replace(sel, recipient=None, fragment=sel.recipient)  # part of an address
    return await select(db, sel, text=text, offset=offset, limit=limit, order=order)


async def select(db: Store, sel: Selection, *, text: str = "", offset: int = 0,
                 limit: int = PAGE, order: str = "") -> SearchPage:
    """A state list reads its total from ``state_counts``; any other selection counts its
    matches in SQL up to ``TOTAL_CAP``. The page is read in the selection's natural order
    (an index walk that stops after the page), or sorted when the match is small."""
    natural = _natural_order(sel)
    order = order or natural
    key = order.removeprefix("-")
    if key not in ORDERS:
        raise UsageError(f"cannot sort by {key!r} (one of {', '.join(ORDERS)})")
    state_list = bool(sel.states) and sel.only_states()
    total = await _state_total(db, sel) if state_list else None
    note = ""
    if order != natural:
        many = total if total is not None else await _count_upto(db, sel, SORT_CAP + 1)
        if many > SORT_CAP:
            note = f"sorted by {key} only up to {SORT_CAP:,} matches: showing the index's order"
            order = natural
            key = order.removeprefix("-")
    direction = "DESC" if order.startswith("-") else "ASC"
    cond, params = where(sel, db)
    column = ORDERS[key]
    if sel.fragment is not None:
        # Keep the plan on the addresses' index: ordered by rowid, SQLite would walk the whole
        # table backwards looking for the few rows whose address matches.
        column = dialect.pick(db, sqlite="+" + column, postgres=column)
    ordering = f"ORDER BY {column} {direction}, m.id {direction}"
    # The page's ids first (an index walk, joining only what the order needs), then its rows:
    # sorting whole joined rows made SQLite read far more than a page.
    joins = dialect.pick(db, sqlite=_CROSS_JOINS, postgres=_JOINS) if key in ("recipient", "campaign") else ""
    page_sql = (f"SELECT m.id FROM messages m {joins} WHERE {cond} {ordering} "
                "LIMIT :limit OFFSET :offset")

    async def ids(at: int) -> list[int]:
        return [r[0] for r in await db.fetchall(page_sql, {**params, "limit": limit, "offset": at})]

    capped = False
    if total is not None:
        offset = max(0, min(offset, max(0, total - 1)))
        page = await ids(offset)
    else:
        page = await ids(max(0, offset))
        if len(page) < limit and (page or offset <= 0):
            offset = max(0, offset)
            total = offset + len(page)  # the last page: no count needed (one pass for few matches)
        else:
            total = await _count_upto(db, sel, TOTAL_CAP + 1)
            capped = total > TOTAL_CAP or await _fragment_capped(db, sel, total)
            total = min(total, TOTAL_CAP)
            if not page:
                offset = max(0, min(offset, max(0, total - 1)))
                page = await ids(offset)
    found = {r[0]: r for r in await db.fetchall(
        f"{_ROWS} WHERE m.id IN ({dialect.ids(db, ':ids')})", {"ids": json.dumps(page)})}
    rows = [found[i] for i in page if i in found]
    return SearchPage(text=text, selection=sel, total=total, offset=offset,
                      rows=[Found(*r) for r in rows], order=order, sort_note=note, capped=capped)


_JOINS = "JOIN recipients r ON r.id = m.recipient_id JOIN campaigns c ON c.id = m.campaign_id"
_CROSS_JOINS = ("CROSS JOIN recipients r ON r.id = m.recipient_id "
                "CROSS JOIN campaigns c ON c.id = m.campaign_id")
_ROWS = ("SELECT m.id, r.email, c.name, m.state, m.due_at, m.updated_at, m.attempts, m.priority, "
         "       coalesce(m.defer_reason, m.last_reply) FROM messages m " + _JOINS)


def _natural_order(sel: Selection) -> str:
    """The order an index gives without sorting: newest change first for a state list, by
    state then row for a campaign (``messages_campaign``), newest row first otherwise."""
    if sel.states and sel.only_states():
        return "-updated"
    checked_only = replace(sel, states=(), reply_match=None, since=None, since_label="").empty
    if checked_only and len(sel.states or (REPLY_STATES if sel.reply_match else ())) == 1:
        return "-updated"  # one state's range of messages_state_updated, each row checked
    if sel.campaign is not None and replace(sel, campaign=None, states=()).empty and len(sel.states) != 1:
        return "state"
    return "-id"


async def _count_upto(db: Store, sel: Selection, cap: int) -> int:
    cond, params = where(sel, db)
    row = await db.fetchone(f"SELECT count(*) FROM (SELECT 1 FROM messages m WHERE {cond} LIMIT :cap)",
                            {**params, "cap": cap})
    return row[0] if row else 0


async def _state_total(db: Store, sel: Selection) -> int:
    states = await counts.state_counts(db)
    return sum(states.get(s, 0) for s in dict.fromkeys(sel.states))


async def _fragment_capped(db: Store, sel: Selection, matched: int) -> bool:
    """Whether a fragment matched more addresses than ``where`` looks at (only asked when the
    match is that large: each address has at least one message)."""
    if sel.fragment is None or matched < FRAGMENT_CAP or len(sel.fragment) < FTS_MIN:
        return False
    row = await db.fetchone(dialect.pick(
        db, sqlite="SELECT count(*) FROM (SELECT rowid FROM recipients_fts WHERE recipients_fts MATCH ? LIMIT ?)",
        postgres="SELECT count(*) FROM (SELECT id FROM recipients WHERE CAST(email AS text) LIKE ? ESCAPE '\\' "
                 "LIMIT ?)"),
        (dialect.pick(db, sqlite='"' + sel.fragment.replace('"', '""') + '"',
                      postgres=f"%{escape_like(sel.fragment)}%"), FRAGMENT_CAP + 1))
    return bool(row and row[0] > FRAGMENT_CAP)
