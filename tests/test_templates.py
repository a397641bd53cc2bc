"""Templates at enqueue: $fields from CSV columns, safe substitution (no code), non-ASCII fields
arrive correctly encoded, a missing field names itself and nothing is queued; priority and
expires_at columns."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from tests.conftest import Cli, SinkThread
from tests.support import query, run_once


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_templates_render_non_ascii_fields(cli: Cli, db_path: str, sink: SinkThread, tmp_path: Path) -> None:
    """Subject and both bodies are rendered per row; HTML values are escaped; Unicode survives the wire."""
    csv = write(tmp_path, "leads.csv", "to,first_name,company\nzofia@example.pl,Zofia Żółć,Łódź & Co\n")
    html = write(tmp_path, "body.html", "<p>Cześć $first_name from ${company}</p>")
    r = cli("enqueue", "--db", db_path, "--csv", csv, "--template", "--from", "team@example.org",
            "--subject", "Dla $first_name: 50$$ off", "--body", "Hello $first_name ($email)",
            "--html-file", html)
    assert r.code == 0, r.err
    import asyncio

    asyncio.run(run_once(db_path, sink.port))
    msg = email.message_from_bytes(sink.received[0].raw, policy=email.policy.default)
    assert msg["Subject"] == "Dla Zofia Żółć: 50$ off"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.strip() == "Hello Zofia Żółć (zofia@example.pl)"
    assert msg.get_body(("html",)).get_content().strip() == (  # type: ignore[union-attr]
        "<p>Cześć Zofia Żółć from Łódź &amp; Co</p>")


def test_missing_field_names_it_and_queues_nothing(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """A placeholder with no column is exit 2 naming the field and the line; the queue is unchanged."""
    ok = write(tmp_path, "ok.csv", "to,first\na@example.com,Ann\n")
    assert cli("enqueue", "--db", db_path, "--csv", ok, "--template", "--from", "t@example.org",
               "--subject", "Hi $first", "--body", "x").code == 0
    bad = write(tmp_path, "bad.csv", "to,first\nb@example.com,Bob\n")
    r = cli("enqueue", "--db", db_path, "--csv", bad, "--template", "--from", "t@example.org",
            "--subject", "Hi $first", "--body", "Your code: $code")
    assert r.code == 2 and "$code" in r.err and "line 2" in r.err
    assert query(db_path, "SELECT count(*) FROM messages") == [(1,)]
    r = cli("enqueue", "--db", db_path, "--csv", bad, "--template", "--from", "t@example.org",
            "--subject", "Hi ${first", "--body", "x")
    assert r.code == 2 and "invalid template" in r.err


def test_template_cannot_inject_headers(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """A field carrying CR/LF into the subject is refused after rendering: no smuggled header."""
    csv = write(tmp_path, "evil.csv", 'to,first\na@example.com,"Ann\r\nBcc: victim@example.net"\n')
    r = cli("enqueue", "--db", db_path, "--csv", csv, "--template", "--from", "t@example.org",
            "--subject", "Hi $first", "--body", "x")
    assert r.code == 2 and "line break" in r.err


def test_without_template_dollar_is_literal_and_extra_columns_refused(cli: Cli, db_path: str,
                                                                     tmp_path: Path) -> None:
    """By default $ is plain text, and an unknown column is refused as a likely typo."""
    csv = write(tmp_path, "plain.csv", "to,subject,body\na@example.com,Save $5,Only $first today\n")
    assert cli("enqueue", "--db", db_path, "--csv", csv, "--from", "t@example.org").code == 0
    assert query(db_path, "SELECT subject, body_text FROM message_bodies") == [("Save $5", "Only $first today")]
    typo = write(tmp_path, "typo.csv", "to,subject,body,campaing\nb@example.com,s,b,x\n")
    r = cli("enqueue", "--db", db_path, "--csv", typo, "--from", "t@example.org")
    assert r.code == 2 and "campaing" in r.err


def test_priority_and_expires_at_columns(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """priority high/normal/low and expires_at are stored; a bad value names the line."""
    csv = write(tmp_path, "p.csv", "to,subject,body,priority,expires_at\n"
                                   "a@example.com,s,b,high,2030-01-01T00:00:00Z\nb@example.com,s,b,,\n")
    assert cli("enqueue", "--db", db_path, "--csv", csv, "--from", "t@example.org").code == 0
    assert query(db_path, "SELECT priority, expires_at FROM messages ORDER BY id") == [
        (0, 1893456000.0), (1, None)]
    bad = write(tmp_path, "bad.csv", "to,subject,body,priority\nc@example.com,s,b,urgent\n")
    r = cli("enqueue", "--db", db_path, "--csv", bad, "--from", "t@example.org")
    assert r.code == 2 and "line 2" in r.err and "priority" in r.err
