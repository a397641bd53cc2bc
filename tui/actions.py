"""Operator actions, each run through ``sender.store.operator`` on its own short-lived writable connection.

The display connection stays read-only; an action opens the file for writing only for the
one ``admin`` call (a durable ``BEGIN IMMEDIATE`` transaction that also writes the audit row)
and closes it. ``admin`` refuses rows in the wrong state all-or-nothing, so a stale screen can
never change a row the operator did not mean.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Literal

from sender.errors import SenderError
from sender.store import flags, operator
from sender.store.engine import open_store
from sender.store.selection import Selection

Kind = Literal["cancel", "retry", "resolve-sent", "resolve-failed", "resolve-requeue", "pause",
               "resume"]

# Which state a message must be in for each per-message action.
NEEDS_STATE: dict[str, str] = {
    "cancel": "scheduled",
    "retry": "failed",
    "resolve-sent": "unknown",
    "resolve-failed": "unknown",
    "resolve-requeue": "unknown",
}


@dataclass(frozen=True, slots=True)
class Done:
    """What an action did, as a sentence for the operator; ``ok`` is False on refusal."""

    ok: bool
    text: str


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"tui:{user}"


async def perform(path: str, kind: Kind, row_id: int | None, *, actor: str, now: float,
                  reason: str = "") -> Done:
    """Run one action; every failure comes back as ``Done(ok=False)``, never an exception."""
    reason = reason or "from the monitor"
    try:
        async with open_store(path) as db:
            if kind == "cancel" and row_id is not None:
                await operator.cancel(db, [row_id], actor=actor, now=now, reason=reason)
                return Done(True, f"#{row_id} cancelled")
            if kind == "retry" and row_id is not None:
                await operator.retry(db, [row_id], actor=actor, now=now)
                return Done(True, f"#{row_id} queued again (same Message-ID)")
            if kind.startswith("resolve-") and row_id is not None:
                as_ = kind.removeprefix("resolve-")
                await operator.resolve(db, [row_id], as_, actor=actor, now=now,  # type: ignore[arg-type]
                                    reason=reason)
                return Done(True, f"#{row_id} resolved as {as_}")
            if kind in ("pause", "resume"):
                await flags.set_paused(db, kind == "pause", actor=actor, now=now, reason=reason)
                return Done(True, "sending paused" if kind == "pause" else "sending resumed")
    except SenderError as exc:
        return Done(False, str(exc))
    except OSError as exc:
        return Done(False, f"cannot open {path}: {exc}")
    return Done(False, f"{kind}: no message selected")


BulkKind = Literal["retry", "cancel", "resolve-sent", "resolve-failed", "resolve-requeue",
                   "pause-campaign", "resume-campaign"]

# (kind, key, label) for the ``A`` dialog, in the order shown.
BULK_CHOICES: list[tuple[str, str, str]] = [
    ("retry", "t", "Retry failed"),
    ("cancel", "c", "Cancel scheduled"),
    ("resolve-sent", "s", "Unknown: sent"),
    ("resolve-failed", "f", "Unknown: failed"),
    ("resolve-requeue", "r", "Unknown: requeue"),
    ("pause-campaign", "p", "Pause campaign"),
    ("resume-campaign", "u", "Resume campaign"),
]
BULK_VERB = {"retry": "Retry", "cancel": "Cancel", "resolve-sent": "Resolve as sent",
             "resolve-failed": "Resolve as failed", "resolve-requeue": "Requeue",
             "pause-campaign": "Pause campaign", "resume-campaign": "Resume campaign"}


async def perform_bulk(path: str, kind: BulkKind, sel: Selection, *, actor: str, now: float,
                       reason: str = "") -> Done:
    """One bulk action through ``sender.store.operator`` (the store code of ``retry``/``cancel``)."""
    try:
        async with open_store(path) as db:
            if kind in ("pause-campaign", "resume-campaign"):
                if sel.campaign is None:
                    return Done(False, "pausing a campaign needs a campaign:NAME search")
                await flags.set_campaign_paused(db, sel.campaign, kind == "pause-campaign",
                                                actor=actor, now=now, reason=reason)
                return Done(True, f"campaign {sel.campaign} "
                                  f"{'paused' if kind == 'pause-campaign' else 'resumed'}")
            done = await operator.bulk(db, kind, sel, actor=actor, now=now, yes=True,  # type: ignore[arg-type]
                                    reason=reason)
    except SenderError as exc:
        return Done(False, str(exc))
    except OSError as exc:
        return Done(False, f"cannot open {path}: {exc}")
    return Done(True, f"{BULK_VERB[kind]}: {done.count:,} message(s) changed (filter: {done.filter})")
