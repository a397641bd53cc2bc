"""The suppression list (invariant 10): checked inside the claim transaction, so a suppressed
recipient's message becomes ``suppressed`` and is never sent; the ``suppress`` commands; and the
migration that adds the ``suppressed``/``bounced`` states by rebuilding ``messages``, proven on a
file written at schema version 3."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

from sender.store import suppressions
from sender.store.db import _statements, open_db
from sender.store.schema import APPLICATION_ID, MIGRATIONS
from tests.conftest import ROOT, Cli, SinkThread
from tests.support import log_statuses, one, query, run_once, seed, states


def _version_3_file(path: str) -> None:
    """A queue as the sender of schema version 3 left it, with rows in several states."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number, (_name, sql) in enumerate(MIGRATIONS[:3], start=1):
            assert isinstance(sql, str)
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, _name, 0.0))
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 3")
        conn.execute("INSERT INTO campaigns(id, name, created_at) VALUES (1, 'c', 0)")
        conn.execute("INSERT INTO recipients(id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com')")
        for row, (rcpt, state) in enumerate([(1, "scheduled"), (2, "sent"), (1, "failed"), (2, "unknown")],
                                            start=1):
            conn.execute("INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, state, "
                         "due_at, created_at, updated_at) VALUES (?, 1, ?, ?, ?, ?, 0, 0, 0)",
                         (row, rcpt, f"k{row}", f"<{row}.ab@example.org>", state))
            conn.execute("INSERT INTO message_bodies(message_id, from_addr, subject, body_text) "
                         "VALUES (?, 'team@example.org', 's', 'b')", (row,))
        conn.execute("INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, attempt, worker, "
                     "claim_token, status, claimed_at) VALUES (2, 'k2', '<2.ab@example.org>', "
                     "'b@example.com', 'c', 1, 'w', 't', 'sent', 0)")


def _schema_objects(path: str) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in query(path, "SELECT type, name FROM sqlite_master "
                                              "WHERE type IN ('index', 'trigger') AND sql IS NOT NULL")}


async def test_upgrade_from_version_3_keeps_rows_counts_indexes_and_triggers(tmp_path: Path) -> None:
    """The rebuild of ``messages`` keeps every row, body, count, index and trigger, and the new states work."""
    path = str(tmp_path / "v3.db")
    _version_3_file(path)
    before_objects = _schema_objects(path)
    before_rows = query(path, "SELECT * FROM messages ORDER BY id")
    before_counts = dict(query(path, "SELECT state, n FROM state_counts"))
    async with open_db(path, create=True) as db:
        assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
    assert query(path, "SELECT * FROM messages ORDER BY id") == before_rows
    assert len(query(path, "SELECT * FROM message_bodies")) == 4  # no cascade from the DROP TABLE
    assert before_objects <= _schema_objects(path)  # later migrations may add their own
    assert dict(query(path, "SELECT state, n FROM state_counts")) == {**before_counts, "suppressed": 0,
                                                                      "bounced": 0}
    assert query(path, "PRAGMA foreign_key_check") == []
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # triggers still count
        conn.execute("UPDATE messages SET state = 'bounced' WHERE id = 2")
        conn.execute("INSERT INTO messages(campaign_id, recipient_id, dedupe_key, message_id, state, due_at, "
                     "created_at, updated_at) VALUES (1, 1, 'k9', '<9.ab@example.org>', 'suppressed', 0, 0, 0)")
    counts = dict(query(path, "SELECT state, n FROM state_counts"))
    assert (counts["sent"], counts["bounced"], counts["suppressed"]) == (0, 1, 1)
    assert ("trigger", "messages_shared_pair") in _schema_objects(path)


async def test_a_suppressed_recipient_gets_nothing(db_path: str, sink: SinkThread) -> None:
    """The claim moves a suppressed recipient's message to ``suppressed`` with the reason; the others are sent."""
    await seed(db_path, 3)
    async with open_db(db_path) as db:
        await suppressions.add(db, [("r1@example.com", "unsubscribed")], source="test", now=time.time())
    await run_once(db_path, sink.port)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["r0@example.com", "r2@example.com"]
    row = one(db_path, 2)
    assert row["state"] == "suppressed" and "unsubscribed" in row["last_reply"]
    assert log_statuses(db_path, 2) == []  # never claimed in the SendLog, so never in flight
    assert states(db_path) == {"sent": 2, "suppressed": 1}


def test_the_report_counts_what_was_withheld(tmp_path: Path, cli: Cli) -> None:
    """``report`` (text and JSON) counts the queue's suppressed and bounced messages apart from
    the anomalies: sample.db has one of each."""
    db = str(tmp_path / "sample.db")
    shutil.copyfile(ROOT / "sample.db", db)
    text = cli("report", "--db", db)
    assert "WITHHELD (not anomalies): 1 suppressed, never sent; 1 bounced" in text.out, text.out + text.err
    data = json.loads(cli("report", "--db", db, "--json").out)
    assert data["withheld"] == {"suppressed": 1, "bounced": 1}


async def test_suppression_matches_any_letter_case(db_path: str, sink: SinkThread) -> None:
    """An address suppressed in another letter case is still suppressed."""
    await seed(db_path, 1, prefix="Lead")
    async with open_db(db_path) as db:
        await suppressions.add(db, [("lead0@EXAMPLE.com", "manual")], source="test", now=time.time())
    await run_once(db_path, sink.port)
    assert sink.received == [] and one(db_path)["state"] == "suppressed"


async def test_a_batch_of_only_suppressed_rows_does_not_end_a_once_run(db_path: str, sink: SinkThread) -> None:
    """When every row of a claim batch is suppressed, the claim goes on to the next due rows."""
    await seed(db_path, 10, prefix="gone")
    await seed(db_path, 2, prefix="ok", campaign="later")
    async with open_db(db_path) as db:
        await suppressions.add(db, [(f"gone{i}@example.com", "bounced") for i in range(10)], source="t",
                              now=time.time())
    await run_once(db_path, sink.port, batch=3, concurrency=1)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["ok0@example.com", "ok1@example.com"]
    assert states(db_path) == {"sent": 2, "suppressed": 10}


def test_suppress_commands(tmp_path: Path, cli: Cli) -> None:
    """add, list --json, import and remove change the list; status --json counts suppressed and bounced."""
    db = str(tmp_path / "q.db")
    assert cli("init", "--db", db).code == 0
    assert cli("suppress", "add", "--db", db, "A@Example.com", "b@example.org", "--reason",
               "unsubscribed").code == 0
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,reason\nc@example.net,complained\nd@example.net,\n", encoding="utf-8")
    assert cli("suppress", "import", "--db", db, str(csv_file)).code == 0
    listed = json.loads(cli("suppress", "list", "--db", db, "--json").out)
    assert {(r["email"], r["reason"]) for r in listed} == {
        ("a@example.com", "unsubscribed"), ("b@example.org", "unsubscribed"),
        ("c@example.net", "complained"), ("d@example.net", "manual")}
    assert cli("suppress", "remove", "--db", db, "b@example.org").code == 0
    assert len(json.loads(cli("suppress", "list", "--db", db, "--json").out)) == 3
    status = json.loads(cli("status", "--db", db, "--json").out)
    assert status["suppressed"] == 0 and status["bounced"] == 0


def test_bad_suppress_input_is_exit_2_and_changes_nothing(tmp_path: Path, cli: Cli) -> None:
    """A bad address or a bad CSV line is one ``error:`` line, exit 2, and the list is unchanged."""
    db = str(tmp_path / "q.db")
    assert cli("init", "--db", db).code == 0
    bad = cli("suppress", "add", "--db", db, "ok@example.com", "not-an-address")
    assert bad.code == 2 and bad.err.startswith("error: ") and len(bad.err.strip().splitlines()) == 1
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email\nfine@example.com\nbroken@\n", encoding="utf-8")
    bad = cli("suppress", "import", "--db", db, str(csv_file))
    assert bad.code == 2 and "line 3" in bad.err
    assert cli("suppress", "add", "--db", db, "x@example.com", "--reason", "whim").code == 2
    assert json.loads(cli("suppress", "list", "--db", db, "--json").out) == []
