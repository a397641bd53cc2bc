"""Observing mailboxes: every copy stored once, odd input counted and never fatal, memory flat.

Mailboxes are written with the standard library (``mailbox.Maildir``, ``mailbox.mbox``) or by
hand when the point is to be malformed; observations land in a real SQLite queue file.
"""

from __future__ import annotations

import mailbox
import time
import tracemalloc
from email.message import EmailMessage
from pathlib import Path

from sender.mailreader import open_mailbox, parse_date, parse_head, read_mbox
from sender.observe import ObserveStats, observe
from sender.store.db import open_db
from tests.conftest import Cli, SinkThread
from tests.support import query, run_once, seed

INCIDENT = 1741592760.0  # 2025-03-10 07:46:00 UTC


def _message(mid: str | None = "<1.a@x>", to: str = "lead@example.com",
             date: str | None = "Mon, 10 Mar 2025 07:46:00 +0000", subject: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    if mid is not None:
        msg["Message-ID"] = mid
    msg["To"], msg["Subject"] = to, subject
    if date is not None:
        msg["Date"] = date
    msg.set_content("body\n")
    return msg


async def _observe(db_path: str, maildir: Path | None = None, mbox: Path | None = None) -> ObserveStats:
    async with open_db(db_path, create=True) as db:
        box = open_mailbox(str(maildir) if maildir else None, str(mbox) if mbox else None)
        return await observe(db, box, now=time.time())


async def test_reobserving_adds_nothing_but_identical_copies_both_count(db_path: str,
                                                                        tmp_path: Path) -> None:
    """Two byte-identical deliveries are two rows; reading the maildir again adds none."""
    box = mailbox.Maildir(str(tmp_path / "md"), create=True)
    box.add(_message())
    box.add(_message())
    box.add(_message(mid="<2.b@x>"))
    first = await _observe(db_path, tmp_path / "md")
    again = await _observe(db_path, tmp_path / "md")
    assert (first.messages, first.added, first.known) == (3, 3, 0)
    assert (again.messages, again.added, again.known) == (3, 0, 3)
    assert sorted(query(db_path, "SELECT mid, copy FROM observations")) == [
        ("<1.a@x>", 1), ("<1.a@x>", 2), ("<2.b@x>", 1)]


async def test_odd_headers_are_read(db_path: str, tmp_path: Path) -> None:
    """Folded, oddly cased and encoded headers are unfolded and decoded; To and Cc are the
    recipients when there is no Delivered-To."""
    raw = (b"message-ID:\r\n   <7.folded@example.com>\r\n"
           b"TO: Lead <Lead@Example.COM>,\r\n\tother@example.pl\r\n"
           b"cc: third@example.com\r\n"
           b"DATE: Mon, 10 Mar 2025\r\n 08:46:00 +0100\r\n"
           b"Subject: =?utf-8?q?Za=C5=BC=C3=B3=C5=82=C4=87?=\r\n\r\nbody\r\n")
    parsed = parse_head(raw)
    assert parsed.mid == "<7.folded@example.com>"
    assert [r.lower() for r in parsed.recipients] == ["lead@example.com", "other@example.pl",
                                                      "third@example.com"]
    assert parsed.date == INCIDENT and parsed.subject == "Zażółć"
    assert parse_head(b"Message-Id: bare@example.com\r\n\r\n").mid == "<bare@example.com>"
    sink_copy = b"Return-Path: <a@b>\r\nDelivered-To: one@example.com\r\nTo: list@example.com\r\n\r\n"
    assert parse_head(sink_copy).recipients == ("one@example.com",)


def test_dates_in_any_zone_become_the_same_instant() -> None:
    """The same moment written in four zones is one Unix time; a zoneless date is UTC."""
    for text in ("Mon, 10 Mar 2025 07:46:00 +0000", "Mon, 10 Mar 2025 08:46:00 +0100",
                 "Mon, 10 Mar 2025 02:46:00 -0500", "10 Mar 2025 16:46:00 +0900",
                 "Mon, 10 Mar 2025 07:46:00 -0000", "Mon, 10 Mar 2025 07:46:00 GMT"):
        assert parse_date(text) == INCIDENT, text
    for bad in ("yesterday", "Mon, 99 Foo 2025 77:00:00 +0000", "", "Mon, 10 Mar 99999 07:46:00"):
        assert parse_date(bad) is None, bad


async def test_missing_ids_bad_dates_and_garbage_are_counted_not_fatal(db_path: str,
                                                                       tmp_path: Path) -> None:
    """No Message-ID, no Date, a malformed Date, no recipient, binary junk and an empty file
    are all stored and counted; the delivery time stands in for a missing date."""
    box = mailbox.Maildir(str(tmp_path / "md"), create=True)
    box.add(_message(mid=None))
    box.add(_message(date=None, mid="<3.c@x>"))
    box.add(b"Message-ID: <4.d@x>\nTo: a@example.com\nDate: the day after tomorrow\n\nbody\n")
    box.add(_message(to="", mid="<5.e@x>"))
    (tmp_path / "md" / "new" / "junk").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "md" / "cur" / "empty:2,S").write_bytes(b"")
    (tmp_path / "md" / "new" / ".hidden").write_bytes(b"ignored")
    stats = await _observe(db_path, tmp_path / "md")
    assert stats.messages == 6
    assert (stats.no_message_id, stats.no_date, stats.bad_date, stats.no_recipient) == (3, 3, 1, 3)
    rows = dict(query(db_path, "SELECT mid, date FROM observations WHERE mid IN ('<3.c@x>', '<4.d@x>')"))
    assert rows == {"<3.c@x>": None, "<4.d@x>": None}
    ats = [r[0] for r in query(db_path, "SELECT at FROM observations WHERE date IS NULL")]
    assert all(abs(at - time.time()) < 600 for at in ats)  # the files' delivery time


async def test_mbox_streams_with_from_escapes_and_from_line_dates(db_path: str, tmp_path: Path) -> None:
    """An mbox written by the standard library reads back message for message, a body line
    starting with 'From ' does not split a message, and the From_ line dates a dateless copy."""
    box = mailbox.mbox(str(tmp_path / "out.mbox"), create=True)
    body = _message(mid="<8.f@x>")
    body.set_content("first line\nFrom here on, a line that looks like a separator\n")
    box.add(body)
    dateless = mailbox.mboxMessage(_message(mid="<9.g@x>", date=None))
    dateless.set_from("team@example.org", time.gmtime(INCIDENT))
    box.add(dateless)
    box.add(_message(mid="<10.h@x>"))
    box.flush()
    box.close()
    assert [len(m.head) > 0 for m in read_mbox(tmp_path / "out.mbox")] == [True, True, True]
    stats = await _observe(db_path, mbox=tmp_path / "out.mbox")
    assert (stats.messages, stats.added, stats.no_date) == (3, 3, 1)
    assert query(db_path, "SELECT at FROM observations WHERE mid = '<9.g@x>'") == [(INCIDENT,)]
    assert (await _observe(db_path, mbox=tmp_path / "out.mbox")).added == 0


async def test_a_huge_message_is_hashed_not_held(db_path: str, tmp_path: Path) -> None:
    """A 16 MB message is observed with well under 2 MB of Python memory: the body is only hashed."""
    path = tmp_path / "big.mbox"
    with path.open("wb") as fh:
        fh.write(b"From a@b Mon Mar 10 07:46:00 2025\nMessage-ID: <11.i@x>\nTo: x@example.com\n\n")
        line = b"x" * 1000 + b"\n"
        for _ in range(16 * 1024):
            fh.write(line)
    tracemalloc.start()
    try:
        heads = [len(m.head) for m in read_mbox(path)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert heads and heads[0] < 200 and peak < 2 * 2**20


async def test_copies_trace_to_their_row_by_message_id_or_by_recipient_and_time(
        db_path: str, tmp_path: Path, sink: SinkThread) -> None:
    """Our Message-IDs name their row; a foreign one (the old system's random ids) traces to the
    SendLog entry for the same recipient closest in time; a stranger traces to nothing."""
    await seed(db_path, 1)
    await run_once(db_path, sink.port)
    (mid, claimed), = query(db_path, "SELECT mid, claimed_at FROM send_log")
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(claimed))
    box = mailbox.Maildir(str(tmp_path / "md"), create=True)
    box.add(_message(mid=mid, to="r0@example.com", date=when))
    box.add(_message(mid="<random-old-system-id@example.org>", to="R0@example.com", date=when))
    box.add(_message(mid="<1.0000@example.org>", to="stranger@example.com", date=when))
    await _observe(db_path, tmp_path / "md")
    assert dict(query(db_path, "SELECT mid, traced_by FROM observations")) == {
        mid: "message-id", "<random-old-system-id@example.org>": "recipient+time",
        "<1.0000@example.org>": None}
    assert {r[0] for r in query(db_path, "SELECT row_id FROM observations")} == {1, None}


def test_cli_observe_and_its_errors(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """observe prints what it counted; a non-mbox file, a folder that is no maildir, or both
    flags at once exit 2 with one line."""
    assert cli("init", "--db", db_path).code == 0
    box = mailbox.Maildir(str(tmp_path / "md"), create=True)
    box.add(_message(mid=None))
    r = cli("observe", "--db", db_path, "--maildir", str(tmp_path / "md"))
    assert r.code == 0 and "observed 1 messages" in r.out and "1 without Message-ID" in r.out
    (tmp_path / "notes.txt").write_text("just some text\nno separators\n")
    (tmp_path / "plain").mkdir()
    for args in (["--mbox", str(tmp_path / "notes.txt")], ["--maildir", str(tmp_path / "plain")],
                 ["--maildir", str(tmp_path / "md"), "--mbox", str(tmp_path / "notes.txt")]):
        bad = cli("observe", "--db", db_path, *args)
        assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1, bad.err
