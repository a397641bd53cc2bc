"""``observe --imap`` against a real Dovecot IMAP server on 127.0.0.1 (a private instance, see
``dovecot_imap``): a DSN and an unsubscribe reply dropped into the bounce mailbox over IMAP turn
the row ``bounced`` and suppress both addresses; the report shows no ghost; the folder is read
without marking anything seen; a wrong password fails without echoing it."""

from __future__ import annotations

import imaplib
import json
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import Cli, SinkThread
from tests.feedback_mail import dsn
from tests.interop.dovecot_imap import PASSWORD, USER, Dovecot, available, dovecot_server
from tests.support import need, query

pytestmark = pytest.mark.xdist_group("relay")  # one Postfix and one Dovecot for the session

SECRET = "s3cr3t-for-tests-only-0123456789"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    need(available())
    with dovecot_server() as server:
        yield server


def _append(server: Dovecot, *messages: bytes) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=ssl.create_default_context(cafile=server.ca_file),
                             timeout=10)
    try:
        conn.login(USER, PASSWORD)
        for raw in messages:
            status, _ = conn.append("INBOX", None, None, raw)
            assert status == "OK"
    finally:
        conn.logout()


def _seen_flags(server: Dovecot) -> list[bytes]:
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=ssl.create_default_context(cafile=server.ca_file),
                             timeout=10)
    try:
        conn.login(USER, PASSWORD)
        conn.select("INBOX", readonly=True)
        _status, data = conn.fetch("1:*", "(FLAGS)")
        return [d for d in data if isinstance(d, bytes) and b"\\Seen" in d]
    finally:
        conn.logout()


def test_observe_imap_applies_a_bounce_and_an_unsubscribe_reply(tmp_path: Path, cli: Cli, sink: SinkThread,
                                                                 dovecot: Dovecot) -> None:
    """Read over IMAPS: the DSN's row becomes bounced, both addresses are suppressed, no ghost, nothing seen."""
    cli.env.update({"SENDER_IMAP_PASSWORD": PASSWORD, "SENDER_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
                    "SENDER_UNSUBSCRIBE_SECRET": SECRET})
    db = str(tmp_path / "q.db")
    for i in range(2):
        assert cli("enqueue", "--db", db, "--to", f"lead{i}@example.com", "--subject", "Slides", "--body", "Here.",
                   "--from", "team@example.org").code == 0
    assert cli("run", "--db", db, "--smtp-port", str(sink.port), "--once").code == 0
    first = next(r for r in sink.received if r.rcpt_tos == ["lead0@example.com"])
    second = next(r for r in sink.received if r.rcpt_tos == ["lead1@example.com"])
    token_subject = unquote(second.raw.split(b"subject=", 1)[1].split(b">", 1)[0].decode())
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "lead1@example.com", "unsubscribe@example.org", token_subject
    reply["Message-ID"], reply["Date"] = "<r1@mail.example.com>", "Mon, 10 Mar 2025 09:00:00 +0000"
    reply.set_content("")
    _append(dovecot, dsn(to="bounces@example.org", recipient="lead0@example.com", status="5.1.1",
                         original=first.raw), reply.as_bytes())
    args = ["--db", db, "--imap", dovecot.url(), "--imap-ca", dovecot.ca_file]
    out = cli("observe", *args)
    assert out.code == 0 and "1 bounce(s)" in out.out and "1 unsubscribe reply applied" in out.out, out.out + out.err
    assert query(db, "SELECT id, state FROM messages ORDER BY id") == [(1, "bounced"), (2, "sent")]
    assert query(db, "SELECT email, reason FROM suppressions ORDER BY email") == [
        ("lead0@example.com", "bounced"), ("lead1@example.com", "unsubscribed")]
    report = json.loads(cli("report", *args, "--json").out)
    assert report["ghosts"] == []
    assert _seen_flags(dovecot) == []  # observed read-only (EXAMINE, BODY.PEEK)


def test_a_wrong_imap_password_fails_without_echoing_it(tmp_path: Path, cli: Cli, dovecot: Dovecot) -> None:
    """A refused login is exit 1 with one line that names the user, never the password; no password is exit 2."""
    db = str(tmp_path / "q.db")
    assert cli("init", "--db", db).code == 0
    cli.env["SENDER_IMAP_PASSWORD"] = "wrong-password-xyz"
    out = cli("observe", "--db", db, "--imap", dovecot.url(), "--imap-ca", dovecot.ca_file)
    assert out.code == 1 and "login failed for bounces" in out.err and "wrong-password-xyz" not in out.err + out.out
    del cli.env["SENDER_IMAP_PASSWORD"]
    out = cli("observe", "--db", db, "--imap", dovecot.url(), "--imap-ca", dovecot.ca_file)
    assert out.code == 2 and "SENDER_IMAP_PASSWORD" in out.err
