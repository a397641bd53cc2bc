"""Which messages a search or a bulk action is about: one filter, one SQL translation.

The monitor's ``/`` search, its bulk actions and the ``retry``/``cancel`` commands all build a
``Selection`` and turn it into a ``WHERE`` clause here, so what the operator saw counted is
exactly what an action changes. Every term is served by an index: the row id, the Message-ID
(unique), an exact recipient (unique), a recipient fragment (the ``recipients_fts`` trigram
index), the campaign (``messages_campaign``, by state), the state (``messages_state_updated``).
Only the reply text is checked row by row, among the selected states (``failed`` when none is
named).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UsageError
from . import dialect
from .dialect import AS_SQLITE, Speaks
from .states import STATES

# The state whose last reply is searched when no state is named: a reply search is nearly
# always about failures, and each row is read to check it.
REPLY_STATES = ("failed",)
FTS_MIN = 3  # the trigram index needs three characters; shorter fragments scan recipients
FRAGMENT_CAP = 50_000  # recipients a fragment may match (a wider one says "50,000+")


@dataclass(frozen=True, slots=True)
class Selection:
    """A conjunction of terms; an empty field does not restrict."""

    states: tuple[str, ...] = ()
    campaign: str | None = None
    reply_match: str | None = None
    since: float | None = None  # last change at or after this time
    since_label: str = ""       # how the operator wrote it ("1h")
    rows: tuple[int, ...] = ()
    mid: str | None = None
    recipient: str | None = None  # exact address
    fragment: str | None = None   # part of an address

    @property
    def empty(self) -> bool:
        return self == Selection()

    def with_states(self, states: tuple[str, ...]) -> Selection:
        return replace(self, states=states)

    def describe(self) -> str:
        """The filter in words, for a confirmation, a dry run and the audit row."""
        parts = []
        if self.states:
            parts.append("state " + "|".join(self.states))
        if self.campaign is not None:
            parts.append(f"campaign {self.campaign}")
        if self.reply_match is not None:
            parts.append(f"reply contains {self.reply_match!r}")
        if self.since is not None:
            parts.append(f"changed in the last {self.since_label}" if self.since_label
                         else f"changed since {self.since:.0f}")
        if self.rows:
            parts.append("rows " + " ".join(f"#{r}" for r in self.rows))
        if self.mid is not None:
            parts.append(f"Message-ID {self.mid}")
        if self.recipient is not None:
            parts.append(f"recipient {self.recipient}")
        if self.fragment is not None:
            parts.append(f"recipient contains {self.fragment!r}")
        return ", ".join(parts) or "everything"

    def only_states(self) -> bool:
        return replace(self, states=()).empty


def where(sel: Selection, db: Speaks = AS_SQLITE) -> tuple[str, dict[str, Any]]:
    """``sel`` as a condition on ``messages m`` and its named parameters, in ``db``'s dialect.

    A ``since`` without states walks every state's range of ``messages_state_updated``
    instead of the whole table.
    """
    terms: list[str] = []
    params: dict[str, Any] = {}
    states = sel.states
    if not states and sel.reply_match is not None:
        states = REPLY_STATES
    if not states and sel.since is not None:
        states = STATES
    if states:
        names = [f"s{i}" for i in range(len(states))]
        if len(names) == 1:
            terms.append("m.state = :s0")
        else:
            terms.append(f"m.state IN ({', '.join(':' + n for n in names)})")
        params.update(zip(names, states, strict=True))
    if sel.campaign is not None:
        terms.append("m.campaign_id = (SELECT id FROM campaigns WHERE name = :campaign)")
        params["campaign"] = sel.campaign
    if sel.reply_match is not None:
        terms.append("m.last_reply LIKE :reply ESCAPE '\\'")
        params["reply"] = f"%{escape_like(sel.reply_match)}%"
    if sel.since is not None:
        terms.append("m.updated_at >= :since")
        params["since"] = sel.since
    if sel.rows:
        terms.append(f"m.id IN ({dialect.ids(db, ':rows')})")
        params["rows"] = json.dumps(list(sel.rows))
    if sel.mid is not None:
        terms.append("m.message_id = :mid")
        params["mid"] = sel.mid
    if sel.recipient is not None:
        terms.append("m.recipient_id = (SELECT id FROM recipients WHERE email = :recipient)")
        params["recipient"] = sel.recipient
    if sel.fragment is not None:
        if len(sel.fragment) >= FTS_MIN and db.dialect == dialect.SQLITE:
            terms.append("m.recipient_id IN (SELECT rowid FROM recipients_fts "
                         f"WHERE recipients_fts MATCH :phrase LIMIT {FRAGMENT_CAP})")
            params["phrase"] = '"' + sel.fragment.replace('"', '""') + '"'
        else:
            # PostgreSQL: the LIKE is answered by the pg_trgm index on the addresses.
            email = dialect.pick(db, sqlite="email", postgres="CAST(email AS text)")
            terms.append("m.recipient_id IN (SELECT id FROM recipients "
                         f"WHERE {email} LIKE :fragment ESCAPE '\\' LIMIT {FRAGMENT_CAP})")
            params["fragment"] = f"%{escape_like(sel.fragment)}%"
    return (" AND ".join(terms) or "TRUE"), params


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def parse_search(text: str, campaigns: frozenset[str] = frozenset()) -> Selection:
    """The monitor's ``/`` text: space-separated terms, all of which must hold.

    ``#123`` or ``123`` a row; ``<…>`` a Message-ID; a state name (``failed``) or
    ``state:NAME``; ``campaign:NAME`` or a known campaign's name; ``reply:TEXT`` the last reply
    (``reply:"too much mail"`` for spaces; among failed messages unless a state is named);
    ``since:1h``; an address with ``@`` exactly; any other word a fragment of the address.
    """
    from ..times import span_seconds

    out = Selection()
    for term in _terms(text):
        key, _, value = term.partition(":")
        low = term.lower()
        if term.startswith("<") and term.endswith(">"):
            out = replace(out, mid=term)
        elif (digits := term.removeprefix("#")).isascii() and digits.isdigit():  # "²" is a fragment
            if len(digits) > 18:
                raise UsageError(f"no such row: {digits[:24]}")  # past a 64-bit id: none has it
            out = replace(out, rows=(*out.rows, int(digits)))
        elif low in STATES:
            out = replace(out, states=(*out.states, low))
        elif key == "state" and value:
            if value.lower() not in STATES:
                raise UsageError(f"no such state: {value!r} (one of {', '.join(STATES)})")
            out = replace(out, states=(*out.states, value.lower()))
        elif key == "campaign" and value:
            out = replace(out, campaign=value)
        elif key == "reply" and value:
            out = replace(out, reply_match=value)
        elif key == "since" and value:
            seconds = span_seconds(value)
            if seconds is None:
                raise UsageError(f"since: expected a duration such as 30m or 24h, got {value!r}")
            out = replace(out, since=-seconds, since_label=value)  # relative: see resolve()
        elif term in campaigns:
            out = replace(out, campaign=term)
        elif "@" in term and not term.startswith("@") and not term.endswith("@"):
            out = replace(out, recipient=term.lower())
        else:
            out = replace(out, fragment=(f"{out.fragment} {term}" if out.fragment else term))
    return out


def resolve(sel: Selection, now: float) -> Selection:
    """A relative ``since`` (negative seconds, from ``parse_search``) made absolute at ``now``."""
    if sel.since is not None and sel.since < 0:
        return replace(sel, since=now + sel.since)
    return sel


def _terms(text: str) -> list[str]:
    """Split on spaces, keeping ``key:"a b"`` together. Control characters (no stored address or
    reply has one; SQLite's full-text query refuses a NUL) are spaces, quoted or not."""
    out: list[str] = []
    buf = ""
    quoted = False
    for ch in "".join(c if c.isprintable() else " " for c in text).strip():
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if buf:
                out.append(buf)
            buf = ""
        else:
            buf += ch
    if buf:
        out.append(buf)
    return out
