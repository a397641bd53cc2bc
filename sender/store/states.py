"""The queue's words, each defined once: row states, SendLog statuses, priorities, suppression
reasons. The schema's CHECK constraints spell the same lists (``schema.py``)."""

from __future__ import annotations

# ``messages.state``: scheduled -> sending -> sent | failed | unknown | bounced, or scheduled ->
# cancelled | expired | suppressed (design.md, "States").
STATES = ("scheduled", "sending", "sent", "failed", "unknown", "cancelled", "expired", "suppressed",
          "bounced")

# Why an address is on the suppression list (``suppressions.reason``).
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complained", "manual")

# ``messages.priority``: lower is sent first.
PRIORITIES = {"high": 0, "normal": 1, "low": 2}

# SendLog statuses that mean "this message may be, or is, delivered": at most one per message
# and one per dedupe key, enforced by unique partial indexes (invariant 2).
LIVE = ("sending", "sent", "unknown")
# SendLog statuses that were an SMTP transaction: they count against sender rates.
ATTEMPTED = (*LIVE, "retry", "failed")


def sql_list(values: tuple[str, ...]) -> str:
    """A tuple of words as a SQL list literal: ``('a','b')``."""
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


LIVE_SQL = sql_list(LIVE)
ATTEMPTED_SQL = sql_list(ATTEMPTED)
