"""Bulk operator commands (``retry``, ``cancel``): a dry run counts and changes nothing, ``--yes``
changes exactly the selected rows in one transaction with one audit row, filters select exactly,
and bad input is exit 2 with nothing changed. Failed rows come from a real relay refusing them.
The dry run, retry, filter and cancel tests run on both engines (``queue``)."""

from __future__ import annotations

import pytest

from sender.store import operator
from sender.store.db import open_db
from sender.store.selection import Selection
from tests.conftest import Cli, Faults, SinkThread
from tests.support import in_state, one, query, run_once, seed


async def make_failed(db_path: str, sink: SinkThread, faults: Faults) -> None:
    """Rows r0..r5 of campaign a and q0..q3 of campaign b fail with two different replies;
    s0..s2 stay scheduled (due tomorrow)."""
    faults.rcpt = lambda rcpt: ("550 5.1.1 no such user" if rcpt.startswith("r")
                                else "554 5.7.1 access denied" if rcpt.startswith("q") else None)
    await seed(db_path, 6, campaign="a", prefix="r")
    await seed(db_path, 4, campaign="b", prefix="q")
    await run_once(db_path, sink.port)
    faults.rcpt = None
    import time
    await seed(db_path, 3, campaign="a", prefix="s", send_at=time.time() + 86400)


def snapshot(db_path: str) -> list[tuple[object, ...]]:
    return query(db_path, "SELECT id, state, attempts, due_at, updated_at, message_id FROM messages "
                          "ORDER BY id")


async def test_retry_dry_run_changes_nothing(queue: str, cli: Cli, faulty_sink: SinkThread,
                                             faults: Faults) -> None:
    """Without --yes, retry prints the count and the filter and changes no row and writes no audit."""
    await make_failed(queue, faulty_sink, faults)
    before = snapshot(queue)
    r = cli("retry", "--db", queue)
    assert r.code == 0, r.err
    assert "10 message(s) would be retried (filter: state failed)" in r.out
    assert snapshot(queue) == before
    assert query(queue, "SELECT count(*) FROM audit") == [(0,)]


async def test_retry_yes_moves_every_failed_row_with_one_audit_row(
        queue: str, cli: Cli, faulty_sink: SinkThread, faults: Faults) -> None:
    """retry --yes turns N failed rows into N scheduled rows (attempts reset, Message-ID kept,
    due now) and writes exactly one audit row with the count and the filter; they then send."""
    await make_failed(queue, faulty_sink, faults)
    mids = {i: one(queue, i)["message_id"] for i in range(1, 11)}
    r = cli("retry", "--db", queue, "--yes", "--actor", "ops")
    assert r.code == 0 and "retried 10 message(s)" in r.out, r.err
    assert in_state(queue, "failed") == 0 and in_state(queue, "scheduled") == 13
    assert all(one(queue, i)["attempts"] == 0 and one(queue, i)["message_id"] == mids[i]
               for i in range(1, 11))
    audit = query(queue, "SELECT actor, action, detail FROM audit")
    assert audit == [("ops", "bulk-retry", "10 message(s) -> scheduled; filter: state failed")]
    await run_once(queue, faulty_sink.port)
    assert in_state(queue, "sent") == 10
    got = sorted(m.message_id for m in faulty_sink.received)
    assert got == sorted(mids.values())


async def test_filters_select_exactly(queue: str, cli: Cli, faulty_sink: SinkThread,
                                      faults: Faults) -> None:
    """--campaign, --reply-match, --row and --since each narrow the selection to exactly its rows."""
    await make_failed(queue, faulty_sink, faults)
    assert "6 message(s)" in cli("retry", "--db", queue, "--campaign", "a").out
    assert "4 message(s)" in cli("retry", "--db", queue, "--reply-match", "5.7.1").out
    assert "2 message(s)" in cli("retry", "--db", queue, "--row", "1", "7", "12").out
    assert "0 message(s)" in cli("retry", "--db", queue, "--since", "0s").out
    assert "10 message(s)" in cli("retry", "--db", queue, "--since", "1h").out
    r = cli("retry", "--db", queue, "--campaign", "b", "--reply-match", "access", "--yes")
    assert "retried 4 message(s)" in r.out
    assert [row[0] for row in query(queue, "SELECT id FROM messages WHERE state = 'scheduled' "
                                             "AND attempts = 0 AND id <= 10 ORDER BY id")] == [7, 8, 9, 10]
    assert in_state(queue, "failed") == 6
    detail = query(queue, "SELECT detail FROM audit")[0][0]
    assert detail == "4 message(s) -> scheduled; filter: state failed, campaign b, reply contains 'access'"


async def test_cancel_scheduled_only(queue: str, cli: Cli, faulty_sink: SinkThread,
                                     faults: Faults) -> None:
    """cancel --yes moves only scheduled rows of the filter to cancelled, failed rows untouched."""
    await make_failed(queue, faulty_sink, faults)
    r = cli("cancel", "--db", queue, "--campaign", "a")
    assert "3 message(s) would be cancelled" in r.out
    assert cli("cancel", "--db", queue, "--campaign", "a", "--yes").code == 0
    assert in_state(queue, "cancelled") == 3 and in_state(queue, "failed") == 10
    assert query(queue, "SELECT action FROM audit") == [("bulk-cancel",)]


@pytest.mark.parametrize("args, words", [
    (("retry", "--campaign", "nope"), "no such campaign"),
    (("retry", "--row", "999"), "no such message id"),
    (("retry", "--since", "soon"), "--since"),
    (("retry", "--state", "unknown"), "invalid choice"),
    (("cancel", "--state", "failed"), "invalid choice"),
    (("retry", "--reply-match", " "), "must not be empty"),
])
async def test_bad_input_is_exit_2_and_changes_nothing(db_path: str, cli: Cli, faulty_sink: SinkThread,
                                                       faults: Faults, args: tuple[str, ...],
                                                       words: str) -> None:
    """A bad filter (unknown campaign or row, bad duration, wrong state) is exit 2 with a one-line
    error, even with --yes, and nothing changes."""
    await make_failed(db_path, faulty_sink, faults)
    before = snapshot(db_path)
    r = cli(*args, "--db", db_path, "--yes")
    assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert snapshot(db_path) == before
    assert query(db_path, "SELECT count(*) FROM audit") == [(0,)]


async def test_conditional_update_skips_rows_that_changed(db_path: str, faulty_sink: SinkThread,
                                                          faults: Faults) -> None:
    """A row that left the source state between the count and the action is not touched: the
    store's update is conditional on the state."""
    await make_failed(db_path, faulty_sink, faults)
    async with open_db(db_path) as db:
        counted = await operator.bulk(db, "retry", Selection(), actor="t", now=1.0, yes=False)
        async with db.write():
            await db.execute("UPDATE messages SET state = 'cancelled' WHERE id = 1")
        done = await operator.bulk(db, "retry", Selection(), actor="t", now=2.0, yes=True)
    assert counted.count == 10 and done.count == 9
    assert one(db_path, 1)["state"] == "cancelled"
