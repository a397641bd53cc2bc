"""Deliverability through the real Postfix: what the sink tests prove, once more past a real MTA.

One queue of three messages goes through Postfix's open port with DKIM, one-click unsubscribe and
a VERP return path: a message with an attachment, one to an address suppressed beforehand, and one
that a remote system later bounces. That bounce, an RFC 3464 report in the form Postfix writes,
is mailed through Postfix to the message's VERP return path, as it would arrive. Then ``observe``
reads the maildir: the bounce turns its row ``bounced`` and suppresses the address, and the report
shows no ghost; the List-Unsubscribe token of the delivered copy suppresses its recipient.

(The local Postfix cannot produce that bounce itself: it refuses an undeliverable recipient at RCPT
already, which ``tests/interop/test_postfix.py`` covers as a 5xx failure.)
"""

from __future__ import annotations

import email
import json
import os
import re
import smtplib
from email import policy
from pathlib import Path

import dkim
import pytest

from tests.conftest import Cli
from tests.interop.conftest import record
from tests.interop.relay import Relay
from tests.support import query, wait_until, write_csv

pytestmark = pytest.mark.xdist_group("relay")  # one Postfix and one Dovecot for the session

SELECTOR_NAME = b"s1._domainkey.example.org."


def _state(db: str, to: str) -> str:
    rows = query(db, "SELECT m.state FROM messages m JOIN recipients r ON r.id = m.recipient_id "
                     "WHERE r.email = ?", (to,))
    return str(rows[0][0])


def _suppressed(cli: Cli, db: str) -> dict[str, str]:
    listed = json.loads(cli("suppress", "list", "--db", db, "--json").out)
    return {row["email"]: row["reason"] for row in listed}


def _dsn(recipient: str, mid: str, row: int) -> bytes:
    """A permanent-failure report as Postfix's bounce daemon writes one (RFC 3464), quoting the
    original headers."""
    return (f"""From: MAILER-DAEMON@mx.remote.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces+{row}@example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"
Message-Id: <dsn.{row}@mx.remote.example>

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

<{recipient}>: host mx.remote.example said: 550 5.1.1 <{recipient}>: Recipient address rejected:
    User unknown in virtual mailbox table

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.remote.example
Arrival-Date: Thu,  3 Dec 2026 12:00:00 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.remote.example
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Team <team@example.org>
To: {recipient}
Subject: Materials
Message-ID: {mid}

--B1--
""").replace("\n", "\r\n").encode()


def test_suppression_dkim_attachment_bounce_and_unsubscribe_through_postfix(
        cli: Cli, db_path: str, relay: Relay, dkim_key: tuple[Path, bytes], tmp_path: Path) -> None:
    """A suppressed address gets nothing; the delivered copy verifies (DKIM) and carries its
    attachment byte for byte; a DSN to its VERP address, delivered through Postfix, turns its row
    bounced with no ghost; the List-Unsubscribe token suppresses."""
    key, txt = dkim_key
    cli.env.update({"SENDER_DKIM_DOMAIN": "example.org", "SENDER_DKIM_SELECTOR": "s1",
                    "SENDER_DKIM_KEY_FILE": str(key), "SENDER_UNSUBSCRIBE_URL": "https://example.org/u/{token}",
                    "SENDER_UNSUBSCRIBE_SECRET": "interop-secret-0123456789abcdef"})
    pdf = tmp_path / "Oferta – zażółć.pdf"  # noqa: RUF001
    pdf.write_bytes(os.urandom(60_000) + b"\r\n.\r\n\x00end")
    rows = [{"to": "lead1@example.com", "subject": "Materials", "body": "Attached.", "attachments": str(pdf)},
            {"to": "lead2@example.com", "subject": "Materials", "body": "Never sent.", "attachments": ""},
            {"to": "gone@example.com", "subject": "Materials", "body": "Bounces later.", "attachments": ""}]
    assert cli("init", "--db", db_path).code == 0
    assert cli("suppress", "add", "--db", db_path, "lead2@example.com", "--reason", "unsubscribed").code == 0
    r = cli("enqueue", "--db", db_path, "--csv", write_csv(tmp_path / "in.csv", rows),
            "--from", "Team <team@example.org>")
    assert r.code == 0, r.err
    r = cli("run", "--db", db_path, "--smtp-host", "127.0.0.1", "--smtp-port", str(relay.ports["open"]),
            "--once", "--return-path", "bounces+{row}@example.com")
    assert r.code == 0, r.err
    assert wait_until(lambda: len(relay.delivered()) >= 2, 30, step=0.1), relay.log_since(0)[-2000:]
    row, mid = query(db_path, "SELECT m.id, m.message_id FROM messages m JOIN recipients r "
                              "ON r.id = m.recipient_id WHERE r.email = 'gone@example.com'")[0]
    with smtplib.SMTP("127.0.0.1", relay.ports["open"], timeout=30) as smtp:
        smtp.sendmail("", [f"bounces+{row}@example.com"], _dsn("gone@example.com", str(mid), row))
    assert wait_until(lambda: len(relay.delivered()) >= 3, 30, step=0.1), relay.log_since(0)[-2000:]

    copies = [p.read_bytes() for p in relay.delivered()]
    parsed = [email.message_from_bytes(raw, policy=policy.default) for raw in copies]
    delivered_to = [str(m["Delivered-To"] or "") for m in parsed]
    assert not any("lead2" in d for d in delivered_to) and len(copies) == 3
    assert _state(db_path, "lead2@example.com") == "suppressed"

    (raw,) = [raw for raw, m in zip(copies, parsed, strict=True) if str(m["To"]) == "lead1@example.com"
              and m.get_content_type() != "multipart/report"]
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: txt if name == SELECTOR_NAME else b"")
    lead1 = email.message_from_bytes(raw, policy=policy.default)
    (part,) = list(lead1.iter_attachments())  # type: ignore[attr-defined]
    assert part.get_filename() == pdf.name and part.get_payload(decode=True) == pdf.read_bytes()
    assert str(lead1["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert "bounces+" in str(lead1["Return-Path"])

    bounce = [m for m in parsed if m.get_content_type() == "multipart/report"]
    assert len(bounce) == 1 and "delivery-status" in str(bounce[0]["Content-Type"])
    assert _state(db_path, "gone@example.com") == "sent"  # until the bounce is read

    r = cli("observe", "--db", db_path, "--maildir", str(relay.maildir), "--return-path", "bounces+{row}@example.com")
    assert r.code == 0, r.err
    assert _state(db_path, "gone@example.com") == "bounced"
    assert _suppressed(cli, db_path).get("gone@example.com") == "bounced"
    report = json.loads(cli("report", "--db", db_path, "--since", "1h", "--json").out)
    assert report["ghosts"] == [] and report["multi_sends"] == [] and report["repeated_message_ids"] == []

    link = str(lead1["List-Unsubscribe"])
    match = re.search(r"https://example\.org/u/([^>]+)>", link)
    assert match, link
    assert cli("unsubscribe", "--db", db_path, match.group(1)).code == 0
    assert _suppressed(cli, db_path).get("lead1@example.com") == "unsubscribed"
    record("deliverability through Postfix", delivered=1, suppressed=1, bounced=1, ghosts=0,
           dkim_verified=True, attachment_identical=True)
