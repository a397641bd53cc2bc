"""Reply-To and extra headers: taken from the ``reply_to``/``headers`` CSV columns and from
``--reply-to``/``--header``, stored with the body, sent as given; CR/LF, non-ASCII names, repeats
and the headers the sender owns are refused at enqueue with exit 2 and nothing queued."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest

from tests.conftest import Cli, SinkThread
from tests.support import query, write_csv


def test_csv_reply_to_and_headers_arrive(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """The reply_to and headers columns reach the recipient as Reply-To and the extra headers."""
    db = str(tmp_path / "q.db")
    rows = [{"to": "lead@example.com", "subject": "Slides", "body": "Here.", "from": "team@example.org",
             "reply_to": "Sales Desk <sales@example.org>",
             "headers": json.dumps({"X-Campaign": "spring", "X-Note": "zażółć"})}]
    assert cli("enqueue", "--db", db, "--csv", write_csv(tmp_path / "in.csv", rows)).code == 0
    assert cli("run", "--db", db, "--smtp-port", str(sink.port), "--once").code == 0
    [got] = sink.received
    msg = email.message_from_bytes(got.raw, policy=email.policy.default)
    assert msg["Reply-To"] == "Sales Desk <sales@example.org>"
    assert msg["X-Campaign"] == "spring" and msg["X-Note"] == "zażółć"
    assert len(msg.get_all("From")) == 1 and len(msg.get_all("Message-ID")) == 1


def test_flag_reply_to_and_repeated_header(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """--reply-to and a repeated --header are stored in message_bodies and sent."""
    db = str(tmp_path / "q.db")
    out = cli("enqueue", "--db", db, "--to", "lead@example.com", "--subject", "s", "--body", "b",
              "--from", "team@example.org", "--reply-to", "sales@example.org",
              "--header", "X-Campaign: spring", "--header", "X-Lead-Id: 42")
    assert out.code == 0, out.err
    assert query(db, "SELECT reply_to, headers FROM message_bodies") == [
        ("sales@example.org", json.dumps([["X-Campaign", "spring"], ["X-Lead-Id", "42"]]))]
    assert cli("run", "--db", db, "--smtp-port", str(sink.port), "--once").code == 0
    msg = email.message_from_bytes(sink.received[0].raw, policy=email.policy.default)
    assert (msg["Reply-To"], msg["X-Campaign"], msg["X-Lead-Id"]) == ("sales@example.org", "spring", "42")


@pytest.mark.parametrize(("headers", "reason"), [
    ({"X-Evil": "a\r\nBcc: victim@example.net"}, "line break"),
    ({"X-Zażółć": "v"}, "not a header name"),
    ({"From": "ceo@example.org"}, "written by the sender"),
    ({"content-type": "text/html"}, "written by the sender"),
    ({"List-Unsubscribe": "<mailto:x@example.org>"}, "written by the sender"),
    ({"Message-ID": "<1.2@x>"}, "written by the sender"),
    ({"X Space": "v"}, "not a header name"),
    (["X-A", "b"], "JSON object"),
])
def test_bad_headers_are_refused(tmp_path: Path, cli: Cli, headers: object, reason: str) -> None:
    """Each kind of bad header is one ``error:`` line, exit 2, and nothing is queued."""
    db = str(tmp_path / "q.db")
    rows = [{"to": "ok@example.com", "subject": "s", "body": "b", "from": "team@example.org", "headers": "{}"},
            {"to": "lead@example.com", "subject": "s", "body": "b", "from": "team@example.org",
             "headers": json.dumps(headers)}]
    out = cli("enqueue", "--db", db, "--csv", write_csv(tmp_path / "in.csv", rows))
    assert out.code == 2 and out.err.startswith("error: ") and reason in out.err, out.err
    assert len(out.err.strip().splitlines()) == 1
    assert not Path(db).exists()


def test_bad_header_flags_are_refused(tmp_path: Path, cli: Cli) -> None:
    """A --header without a colon, twice the same name, a CR/LF in --reply-to: exit 2, nothing queued."""
    db = str(tmp_path / "q.db")
    base = ["enqueue", "--db", db, "--to", "lead@example.com", "--subject", "s", "--body", "b",
            "--from", "team@example.org"]
    for extra in (["--header", "X-NoColon"], ["--header", "X-A: 1", "--header", "x-a: 2"],
                  ["--reply-to", "a@example.org\r\nBcc: b@example.org"], ["--header", "Reply-To: a@example.org"]):
        out = cli(*base, *extra)
        assert out.code == 2 and out.err.startswith("error: "), (extra, out.err)
    assert not Path(db).exists()
