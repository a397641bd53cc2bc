"""The duplicate report finds every anomaly, and nothing else, over real deliveries.

Messages go through the real daemon into a real aiosmtpd sink on 127.0.0.1; the sink's maildir is
observed and the report compares it with the SendLog of a real SQLite file. The incident is
reproduced the way it happened: one logged send, plus two copies built and sent outside the
queue with their own Message-IDs for the same row. The incident, clean-run, repeated Message-ID,
reconcile and multi-send tests run on both engines (``queue``).
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from sender import report
from sender.intake import NewMessage
from sender.mailreader import open_mailbox
from sender.message import build, make_mid
from sender.observe import observe
from sender.store import operator, reports
from sender.store.db import open_db
from sender.store.engine import open_store
from sender.store.enqueue import enqueue
from tests.conftest import Cli, Faults, SinkThread
from tests.support import query, run_once, seed

EMPTY = {name: [] for name in report.ANOMALIES}


async def _observe_and_report(db_path: str, maildir: Path, **window: float) -> report.Report:
    async with open_store(db_path) as db:
        box = open_mailbox(str(maildir), None)
        await observe(db, box, now=time.time())
        now = time.time()
        return await report.build_report(db, report.Window(window.get("since", now - 3600), now), now,
                                         sources=[box.source])


async def _send_outside_the_queue(port: int, row: int, recipient: str) -> str:
    """What one overlapping run of the old scheduler did: mint its own Message-ID and send."""
    mid = make_mid(row, "example.org")
    env = build(mid=mid, from_addr="team@example.org", from_name="Team", to=recipient,
                to_name=None, subject="s0", body_text="b0", body_html=None, date=time.time())
    await aiosmtplib.send(env.data, sender=env.sender, recipients=[env.recipient],
                          hostname="127.0.0.1", port=port)
    return mid


async def test_incident_reproduction_is_found_and_traced(queue: str, sink: SinkThread,
                                                         tmp_path: Path) -> None:
    """Three deliveries with distinct Message-IDs and one SendLog row give a ghost pair and one
    multi-send, all traced back to queue row 1."""
    await seed(queue, 1, campaign="spring")
    await run_once(queue, sink.port)
    ghosts = {await _send_outside_the_queue(sink.port, 1, "r0@example.com") for _ in range(2)}
    assert len(sink.received) == 3
    assert query(queue, "SELECT count(*) FROM send_log")[0][0] == 1
    logged = query(queue, "SELECT message_id FROM messages WHERE id = 1")[0][0]

    found = await _observe_and_report(queue, tmp_path / "maildir")

    assert {g.mid for g in found.ghosts} == ghosts
    for g in found.ghosts:
        assert (g.row, g.traced_by, g.campaign, g.recipient) == (1, "message-id", "spring",
                                                                 "r0@example.com")
        assert g.logged_mid == logged and g.row_state == "sent"
    [multi] = found.multi_sends
    assert (multi.recipient, multi.campaign) == ("r0@example.com", "spring")
    assert {s.mid for s in multi.mids} == ghosts | {logged}
    assert [s.mid for s in multi.mids if s.logged] == [logged]
    assert not (found.repeated_message_ids or found.unknown or found.stale_claims or found.missing)


async def test_clean_run_has_zero_anomalies(queue: str, sink: SinkThread, tmp_path: Path) -> None:
    """Thirty messages in two campaigns, sent and observed: every list of the report is empty."""
    await seed(queue, 15, campaign="a", prefix="a")
    await seed(queue, 15, campaign="b", prefix="b")
    stats = await run_once(queue, sink.port)
    assert stats.sent == 30 and len(sink.received) == 30

    found = await _observe_and_report(queue, tmp_path / "maildir")

    assert found.missing_checked and found.anomalies == 0
    assert found.to_json() == EMPTY
    assert query(queue, "SELECT count(*), count(row_id) FROM observations")[0] == (30, 30)


async def test_ambiguous_drop_resent_by_hand_is_a_repeated_message_id(
        queue: str, faulty_sink: SinkThread, faults: Faults, tmp_path: Path) -> None:
    """A copy that arrived although the line dropped, requeued by an operator and sent again
    with the same Message-ID, shows up in repeated_message_ids with its SendLog history."""
    dropped: list[str] = []
    faults.data = lambda rcpt: None if dropped else dropped.append(rcpt) or "DROP"
    await seed(queue, 1)
    await run_once(queue, faulty_sink.port)
    assert query(queue, "SELECT state FROM messages")[0][0] == "unknown"
    async with open_store(queue) as db:
        await operator.resolve(db, [1], "requeue", actor="test", now=time.time())
    await run_once(queue, faulty_sink.port)
    [mid] = {m.message_id for m in faulty_sink.received}
    assert len(faulty_sink.received) == 2

    found = await _observe_and_report(queue, tmp_path / "maildir")

    [repeat] = found.repeated_message_ids
    assert (repeat.mid, repeat.recipient, repeat.copies, repeat.row) == (
        mid, "r0@example.com", 2, 1)
    assert repeat.attempts == ("requeued", "sent")
    assert not (found.ghosts or found.multi_sends or found.unknown or found.missing)


async def test_reconcile_settles_an_unknown_found_in_the_capture(
        faulty_sink: SinkThread, faults: Faults, queue: str, cli: Cli, tmp_path: Path) -> None:
    """The line dropped after the data arrived; reconciling with another mailbox changes nothing,
    with the capture it marks the message sent, once, with an audit row naming that mailbox."""
    faults.data = lambda rcpt: "DROP"
    await seed(queue, 1)
    await run_once(queue, faulty_sink.port)
    assert query(queue, "SELECT state FROM messages")[0][0] == "unknown"

    mailbox.Maildir(str(tmp_path / "elsewhere"), create=True)
    other = cli("reconcile", "--db", queue, "--maildir", str(tmp_path / "elsewhere"))
    assert other.code == 0 and "reconciled 0 unknown message(s); 1 still unknown" in other.out

    r = cli("reconcile", "--db", queue, "--maildir", str(tmp_path / "maildir"), "--actor", "ops")
    assert r.code == 0, r.err
    assert "unknown -> sent" in r.out and "reconciled 1 unknown message(s); 0 still unknown" in r.out
    assert query(queue, "SELECT state FROM messages")[0][0] == "sent"
    [(actor, action, detail)] = query(queue, "SELECT actor, action, detail FROM audit")
    assert (actor, action) == ("ops", "reconcile-sent") and str(tmp_path / "maildir") in detail
    again = cli("reconcile", "--db", queue, "--maildir", str(tmp_path / "maildir"))
    assert "reconciled 0" in again.out and len(faulty_sink.received) == 1


def _ghost_maildir(path: Path, dates: dict[str, str]) -> None:
    box = mailbox.Maildir(str(path), create=True)
    for mid, date in dates.items():
        msg = EmailMessage()
        msg["Message-ID"], msg["To"], msg["Subject"], msg["Date"] = mid, "x@example.com", mid, date
        box.add(msg)


async def test_window_is_closed_and_time_zones_are_respected(db_path: str, tmp_path: Path) -> None:
    """A window [since, now] includes both ends and nothing outside, whatever zone the Date used."""
    await seed(db_path, 1)
    _ghost_maildir(tmp_path / "box", {
        "<before@x>": "Mon, 10 Mar 2025 08:45:59 +0100",   # 07:45:59 UTC
        "<at-since@x>": "Mon, 10 Mar 2025 02:46:00 -0500",  # 07:46:00 UTC
        "<inside@x>": "Mon, 10 Mar 2025 07:50:00 GMT",
        "<at-now@x>": "Mon, 10 Mar 2025 17:00:00 +0900",    # 08:00:00 UTC
        "<after@x>": "Mon, 10 Mar 2025 08:00:01 -0000",
    })
    since = report.parse_time("2025-03-10T07:46:00Z", "--since")
    now = report.parse_time("2025-03-10T09:00:00+01:00", "--until")
    async with open_db(db_path) as db:
        await observe(db, open_mailbox(str(tmp_path / "box"), None), now=time.time())
        found = await reports.ghosts(db, since, now)
    assert [g.mid for g in found] == ["<at-since@x>", "<inside@x>", "<at-now@x>"]
    assert found[0].row is None and found[0].traced_by is None


async def test_idle_database_window_moves_to_the_newest_activity_but_cron_does_not(
        db_path: str, tmp_path: Path, cli: Cli) -> None:
    """With nothing in the last 24h the report shows the last active day; --fail-on-anomaly keeps
    the window ending now, so an old anomaly does not alert forever; --since 30d does."""
    await seed(db_path, 1)
    three_days_ago = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(time.time() - 3 * 86400))
    _ghost_maildir(tmp_path / "box", {"<old@x>": three_days_ago})
    assert cli("observe", "--db", db_path, "--maildir", str(tmp_path / "box")).code == 0

    shown = cli("report", "--db", db_path)
    assert shown.code == 0 and "<old@x>" in shown.out and "newest activity" in shown.out
    assert cli("report", "--db", db_path, "--fail-on-anomaly").code == 0
    alert = cli("report", "--db", db_path, "--since", "30d", "--fail-on-anomaly", "--json")
    assert alert.code == 3
    assert [g["message_id"] for g in json.loads(alert.out)["ghosts"]] == ["<old@x>"]


def test_empty_database_reports_nothing_clearly(cli: Cli, db_path: str) -> None:
    """A fresh queue: six empty lists in JSON, 'no anomalies found' in text, exit 0 for cron."""
    assert cli("init", "--db", db_path).code == 0
    r = cli("report", "--db", db_path, "--json", "--fail-on-anomaly")
    assert r.code == 0 and json.loads(r.out) == EMPTY
    text = cli("report", "--db", db_path)
    assert text.code == 0 and text.out.rstrip().endswith("no anomalies found")
    assert "MISSING: not checked" in text.out


def test_bad_input_is_one_line_and_exit_2(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """A bad --since, a missing mailbox, a missing database: exit 2 with a one-line reason."""
    assert cli("init", "--db", db_path).code == 0
    for args in (["report", "--db", db_path, "--since", "yesterday"],
                 ["report", "--db", db_path, "--maildir", str(tmp_path / "nope")],
                 ["observe", "--db", db_path],
                 ["report", "--db", str(tmp_path / "missing.db")]):
        r = cli(*args)
        assert r.code == 2, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error:"), r.err


async def test_report_queries_are_bounded(db_path: str, tmp_path: Path) -> None:
    """Every list stops at the limit and the report says which ones were cut."""
    await seed(db_path, 1)
    _ghost_maildir(tmp_path / "box", {f"<g{i}@x>": "Mon, 10 Mar 2025 07:46:00 +0000"
                                      for i in range(5)})
    async with open_db(db_path) as db:
        await observe(db, open_mailbox(str(tmp_path / "box"), None), now=time.time())
        found = await report.build_report(db, report.Window(0.0, time.time()), time.time(), limit=3)
    assert len(found.ghosts) == 3 and found.truncated == ("ghosts",)


async def _two_messages_for_one_pair(queue: str, port: int) -> None:
    """Campaign steps with their own dedupe keys: two real messages to one recipient + campaign."""
    rows = [NewMessage(to="lead@example.com", subject=f"step {i}", body="b", campaign="drip",
                       dedupe_key=f"drip-step-{i}") for i in (1, 2)]
    async with open_store(queue, create=True) as db:
        await enqueue(db, rows, from_addr="team@example.org", from_name=None, domain=None,
                            now=time.time())
    assert (await run_once(queue, port)).sent == 2


async def test_two_logged_messages_to_one_pair_are_a_multi_send(queue: str, sink: SinkThread) -> None:
    """Both sends are in the SendLog, with their own Message-IDs: one multi-send, both logged."""
    await _two_messages_for_one_pair(queue, sink.port)
    async with open_store(queue) as db:
        [multi] = await reports.multi_sends(db, time.time() - 3600, time.time())
    assert (multi.recipient, multi.campaign) == ("lead@example.com", "drip")
    assert {s.mid for s in multi.mids if s.logged} == {
        r[0] for r in query(queue, "SELECT message_id FROM messages")}


async def test_upgrading_a_queue_finds_its_earlier_multi_sends(db_path: str, sink: SinkThread) -> None:
    """A queue written before migration 0003 gets its shared pairs filled in when it is upgraded."""
    await _two_messages_for_one_pair(db_path, sink.port)
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:  # as version 2 left it
        conn.executescript("DROP TRIGGER messages_shared_pair; DROP TABLE shared_pairs; "
                           "DELETE FROM schema_migrations WHERE version >= 3; PRAGMA user_version = 2;")
    async with open_db(db_path, create=True) as db:
        [multi] = await reports.multi_sends(db, time.time() - 3600, time.time())
    assert multi.recipient == "lead@example.com" and len(multi.mids) == 2
