"""Bounces and complaints (RFC 3464 DSNs, RFC 5965 ARF) found by ``observe``/``reconcile`` in a
bounce mailbox: matched to their row by the original Message-ID or by the VERP return path, a
5.x.x makes the row ``bounced`` and suppresses the address, 4.x.x are counted and suppress after
N in a period, a complaint suppresses; none is ever reported as a ghost."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sender import feedback
from tests.conftest import Cli, SinkThread
from tests.feedback_mail import arf, drop, dsn
from tests.support import query

BOUNCES = "bounces@example.org"


def _send(cli: Cli, db: str, sink: SinkThread, *extra: str, n: int = 1) -> None:
    for i in range(n):
        assert cli("enqueue", "--db", db, "--to", f"lead{i}@example.com", "--subject", "Slides",
                   "--body", "Here.", "--from", "team@example.org").code == 0
    out = cli("run", "--db", db, "--smtp-port", str(sink.port), "--once", *extra)
    assert out.code == 0, out.err


def test_parse_recognises_dsn_and_arf_and_nothing_else(sink: SinkThread) -> None:
    """The stdlib parse finds kind, status, recipient and the original Message-ID; a plain message is None."""
    original = b"From: a@example.org\r\nTo: b@example.com\r\nMessage-ID: <3.ab@example.org>\r\n\r\nhi\r\n"
    hard = feedback.parse(dsn(to=BOUNCES, recipient="b@example.com", status="5.1.1", original=original))
    assert hard == feedback.Report("bounce", "5.1.1", "b@example.com", "<3.ab@example.org>",
                                   "smtp; 550 5.1.1 <b@example.com>: Recipient address rejected")
    soft = feedback.parse(dsn(to=BOUNCES, recipient="b@example.com", status="4.2.2", original=None))
    assert soft is not None and soft.kind == "delay" and soft.original_mid is None
    complaint = feedback.parse(arf(to=BOUNCES, recipient="b@example.com", original=original))
    assert complaint is not None and complaint.kind == "complaint" and complaint.original_mid == "<3.ab@example.org>"
    assert feedback.parse(original) is None


def test_a_hard_bounce_turns_its_row_bounced_and_suppresses(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """A 5.1.1 DSN quoting the original headers: row bounced, address suppressed, no ghost, idempotent."""
    db = str(tmp_path / "q.db")
    _send(cli, db, sink, n=2)
    original = next(r.raw for r in sink.received if r.rcpt_tos == ["lead0@example.com"])
    box = drop(tmp_path / "bounces", dsn(to=BOUNCES, recipient="lead0@example.com", status="5.1.1",
                                         original=original))
    out = cli("observe", "--db", db, "--maildir", str(box))
    assert out.code == 0 and "1 bounce(s)" in out.out, out.out + out.err
    assert query(db, "SELECT id, state FROM messages ORDER BY id") == [(1, "bounced"), (2, "sent")]
    assert query(db, "SELECT email, reason FROM suppressions") == [("lead0@example.com", "bounced")]
    assert cli("observe", "--db", db, "--maildir", str(box)).code == 0  # reading again changes nothing
    assert query(db, "SELECT count(*) FROM audit WHERE action = 'bounced'") == [(1,)]
    report = json.loads(cli("report", "--db", db, "--maildir", str(box), "--json").out)
    assert report["ghosts"] == [] and report["unknown"] == []
    status = json.loads(cli("status", "--db", db, "--json").out)
    assert (status["bounced"], status["sent"]) == (1, 1)
    assert query(db, "SELECT count(*) FROM observations") == [(0,)]  # a report is not a copy of ours


def test_verp_maps_a_bounce_without_the_original(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """--return-path sets the envelope sender per row; a DSN quoting nothing maps back through it."""
    db = str(tmp_path / "q.db")
    _send(cli, db, sink, "--return-path", "bounces+{row}@example.org", n=2)
    assert sorted(r.mail_from for r in sink.received) == ["bounces+1@example.org", "bounces+2@example.org"]
    box = drop(tmp_path / "bounces", dsn(to="bounces+2@example.org", recipient="someone@else.example",
                                         status="5.2.1", original=None))
    out = cli("observe", "--db", db, "--maildir", str(box), "--return-path", "bounces+{row}@example.org")
    assert out.code == 0, out.err
    assert query(db, "SELECT id, state FROM messages ORDER BY id") == [(1, "sent"), (2, "bounced")]
    assert query(db, "SELECT email FROM suppressions") == [("lead1@example.com",)]


def test_soft_bounces_suppress_after_the_limit(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """Two 4.x.x reports (read twice) do not suppress; the third distinct one does; the row stays sent."""
    db = str(tmp_path / "q.db")
    _send(cli, db, sink)
    original = sink.received[0].raw
    box = drop(tmp_path / "bounces", *(dsn(to=BOUNCES, recipient="lead0@example.com", status="4.2.2",
                                           original=original, n=i) for i in (1, 2)))
    for _ in range(2):
        assert cli("observe", "--db", db, "--maildir", str(box)).code == 0
    assert query(db, "SELECT count(*) FROM suppressions") == [(0,)]
    drop(box, dsn(to=BOUNCES, recipient="lead0@example.com", status="4.2.2", original=original, n=3))
    assert cli("observe", "--db", db, "--maildir", str(box)).code == 0
    assert query(db, "SELECT email, reason FROM suppressions") == [("lead0@example.com", "bounced")]
    assert query(db, "SELECT state FROM messages") == [("sent",)]


def test_soft_bounces_count_only_within_their_period(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """Two 4.x.x reports older than ``soft_bounce_days`` (7 by default) no longer count: a third
    does not suppress. With ``soft_bounce_days = 30`` in sender.toml the same three do."""
    db = str(tmp_path / "q.db")
    _send(cli, db, sink)
    original = sink.received[0].raw
    box = drop(tmp_path / "bounces", *(dsn(to=BOUNCES, recipient="lead0@example.com", status="4.2.2",
                                           original=original, n=i) for i in (1, 2)))
    assert cli("observe", "--db", db, "--maildir", str(box)).code == 0
    with sqlite3.connect(db) as conn:  # a week and a day pass
        conn.execute("UPDATE soft_bounces SET at = at - 8 * 86400")
    drop(box, dsn(to=BOUNCES, recipient="lead0@example.com", status="4.2.2", original=original, n=3))
    assert cli("observe", "--db", db, "--maildir", str(box)).code == 0
    assert query(db, "SELECT count(*) FROM suppressions") == [(0,)]
    (tmp_path / "sender.toml").write_text("soft_bounce_days = 30\n")
    drop(box, dsn(to=BOUNCES, recipient="lead0@example.com", status="4.2.2", original=original, n=4))
    assert cli("observe", "--db", db, "--maildir", str(box)).code == 0
    assert query(db, "SELECT email, reason FROM suppressions") == [("lead0@example.com", "bounced")]


def test_a_complaint_suppresses_and_reconcile_sees_reports_too(tmp_path: Path, cli: Cli,
                                                               sink: SinkThread) -> None:
    """An ARF report found by ``reconcile`` suppresses as complained; the report shows no ghost."""
    db = str(tmp_path / "q.db")
    _send(cli, db, sink)
    box = drop(tmp_path / "fbl", arf(to=BOUNCES, recipient="lead0@example.com", original=sink.received[0].raw))
    out = cli("reconcile", "--db", db, "--maildir", str(box))
    assert out.code == 0 and "1 complaint(s)" in out.out, out.out + out.err
    assert query(db, "SELECT email, reason FROM suppressions") == [("lead0@example.com", "complained")]
    assert query(db, "SELECT state FROM messages") == [("sent",)]
    assert json.loads(cli("report", "--db", db, "--maildir", str(box), "--json").out)["ghosts"] == []


def test_a_bounce_settles_an_unknown_row(tmp_path: Path, cli: Cli, faulty_sink: SinkThread, faults) -> None:  # type: ignore[no-untyped-def]
    """A DSN for a row left ``unknown`` (line lost after the data) proves it was handed over: bounced."""
    db = str(tmp_path / "q.db")
    faults.data = lambda rcpt: "DROP"
    _send(cli, db, faulty_sink)
    assert query(db, "SELECT state FROM messages") == [("unknown",)]
    box = drop(tmp_path / "bounces", dsn(to=BOUNCES, recipient="lead0@example.com", status="5.1.1",
                                         original=faulty_sink.received[0].raw))
    assert cli("reconcile", "--db", db, "--maildir", str(box)).code == 0
    assert query(db, "SELECT state FROM messages") == [("bounced",)]
    assert query(db, "SELECT status FROM send_log") == [("sent",)]
