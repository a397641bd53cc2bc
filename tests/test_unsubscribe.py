"""One-click unsubscribe: every message carries List-Unsubscribe (and List-Unsubscribe-Post with a
URL) holding an HMAC token over the recipient and row; the token verifies with the secret alone;
``python -m sender unsubscribe TOKEN``, the Python function and a reply to the mailto address
found by ``observe`` each suppress the address, so its next message is never sent."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

import pytest

from sender import unsubscribe
from sender.errors import UsageError
from tests.conftest import Cli, SinkThread
from tests.support import query

SECRET = "s3cr3t-for-tests-only-0123456789"
URL = "https://example.org/u/{token}"
MAILTO = "unsubscribe@example.org"


def _configured(cli: Cli, *, url: bool = True) -> None:
    if url:
        cli.env["SENDER_UNSUBSCRIBE_URL"] = URL
    cli.env["SENDER_UNSUBSCRIBE_MAILTO"] = MAILTO
    cli.env["SENDER_UNSUBSCRIBE_SECRET"] = SECRET


def _send_one(cli: Cli, db: str, sink: SinkThread, to: str = "lead@example.com", campaign: str = "a") -> None:
    assert cli("enqueue", "--db", db, "--to", to, "--subject", "Slides", "--body", "Here.",
               "--from", "team@example.org", "--campaign", campaign).code == 0
    out = cli("run", "--db", db, "--smtp-port", str(sink.port), "--once")
    assert out.code == 0, out.err


def test_token_verifies_only_with_its_secret_and_unchanged() -> None:
    """A token names its row and address; a changed byte or another secret does not verify."""
    token = unsubscribe.make_token(SECRET, 42, "Lead@Example.com")
    assert unsubscribe.verify(SECRET, token) == unsubscribe.Unsubscribed(42, "lead@example.com")
    assert unsubscribe.verify("another-secret-0123456789", token) is None
    forged = unsubscribe.make_token("guess-guess-guess-guess", 42, "lead@example.com")
    assert unsubscribe.verify(SECRET, forged) is None
    _body, _, tag = token.partition(".")
    other = unsubscribe.make_token(SECRET, 43, "lead@example.com").partition(".")[0]
    assert unsubscribe.verify(SECRET, f"{other}.{tag}") is None  # a tag is bound to its row
    assert unsubscribe.verify(SECRET, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert SECRET not in token


def test_messages_carry_one_click_headers_and_the_token_suppresses(tmp_path: Path, cli: Cli,
                                                                   sink: SinkThread) -> None:
    """List-Unsubscribe has the URL and the mailto, List-Unsubscribe-Post is One-Click, and the
    token from the URL, given to ``unsubscribe``, stops the next message to that address."""
    _configured(cli)
    db = str(tmp_path / "q.db")
    _send_one(cli, db, sink)
    msg = email.message_from_bytes(sink.received[0].raw, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = str(msg["List-Unsubscribe"])
    assert "=?" not in header  # never RFC 2047-encoded
    url_token = re.search(r"<https://example\.org/u/([^>]+)>", header).group(1)  # type: ignore[union-attr]
    mail_subject = unquote(re.search(r"<mailto:unsubscribe@example\.org\?subject=([^>]+)>", header).group(1))  # type: ignore[union-attr]
    assert mail_subject == f"unsubscribe {url_token}"
    assert unsubscribe.verify(SECRET, url_token) == unsubscribe.Unsubscribed(1, "lead@example.com")
    out = cli("unsubscribe", "--db", db, url_token)
    assert out.code == 0 and "lead@example.com" in out.out
    assert query(db, "SELECT email, reason FROM suppressions") == [("lead@example.com", "unsubscribed")]
    _send_one(cli, db, sink, campaign="b")
    assert len(sink.received) == 1
    assert query(db, "SELECT state FROM messages ORDER BY id") == [("sent",), ("suppressed",)]


def test_a_bad_token_is_exit_2_and_suppresses_nothing(tmp_path: Path, cli: Cli) -> None:
    """A forged token is refused with one ``error:`` line and the list stays empty."""
    _configured(cli)
    db = str(tmp_path / "q.db")
    assert cli("init", "--db", db).code == 0
    forged = unsubscribe.make_token("not-the-secret-at-all", 1, "lead@example.com")
    out = cli("unsubscribe", "--db", db, forged)
    assert out.code == 2 and out.err.startswith("error: ")
    assert query(db, "SELECT count(*) FROM suppressions") == [(0,)]


def test_the_python_function_for_a_web_app(tmp_path: Path, cli: Cli) -> None:
    """``unsubscribe.unsubscribe`` suppresses the address of a valid token and raises on a bad one."""
    db = str(tmp_path / "q.db")
    assert cli("init", "--db", db).code == 0
    token = unsubscribe.make_token(SECRET, 7, "web@example.com")
    assert unsubscribe.unsubscribe(token, db=db, secret=SECRET) == "web@example.com"
    assert query(db, "SELECT email FROM suppressions") == [("web@example.com",)]
    with pytest.raises(UsageError):
        unsubscribe.unsubscribe(token + "x", db=db, secret=SECRET)


def test_a_reply_to_the_mailto_address_found_by_observe_suppresses(tmp_path: Path, cli: Cli,
                                                                   sink: SinkThread) -> None:
    """A mail to the unsubscribe address with the token in its Subject, observed, suppresses."""
    _configured(cli, url=False)
    db = str(tmp_path / "q.db")
    _send_one(cli, db, sink)
    msg = email.message_from_bytes(sink.received[0].raw, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] is None  # one-click needs a URL
    subject = unquote(re.search(r"subject=([^>]+)>", str(msg["List-Unsubscribe"])).group(1))  # type: ignore[union-attr]
    box = mailbox.Maildir(tmp_path / "unsub", create=True)
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "lead@example.com", MAILTO, subject
    reply["Message-ID"], reply["Date"] = "<reply-1@mail.example.com>", "Mon, 10 Mar 2025 09:00:00 +0000"
    reply.set_content("")
    box.add(reply)
    out = cli("observe", "--db", db, "--maildir", str(tmp_path / "unsub"))
    assert out.code == 0 and "1 unsubscribe reply applied" in out.out, out.out + out.err
    assert query(db, "SELECT email, reason FROM suppressions") == [("lead@example.com", "unsubscribed")]


@pytest.mark.parametrize("env", [
    {"SENDER_UNSUBSCRIBE_URL": URL},
    {"SENDER_UNSUBSCRIBE_URL": "https://example.org/u/", "SENDER_UNSUBSCRIBE_SECRET": SECRET},
    {"SENDER_UNSUBSCRIBE_MAILTO": "not an address", "SENDER_UNSUBSCRIBE_SECRET": SECRET},
    {"SENDER_UNSUBSCRIBE_MAILTO": MAILTO, "SENDER_UNSUBSCRIBE_SECRET": "short"},
])
def test_bad_unsubscribe_settings_are_exit_2(tmp_path: Path, cli: Cli, env: dict[str, str]) -> None:
    """A URL without {token}, no or a short secret, a bad mailto: refused before anything runs."""
    cli.env.update(env)
    out = cli("status", "--db", str(tmp_path / "q.db"))
    assert out.code == 2 and out.err.startswith("error: unsubscribe")


def test_config_file_sections(tmp_path: Path) -> None:
    """``[unsubscribe]`` and ``return_path`` in the config file reach the settings; the secret is masked."""
    from sender import config

    path = tmp_path / "sender.toml"
    path.write_text(f'return_path = "bounces+{{row}}@example.org"\n[unsubscribe]\nurl = "{URL}"\n'
                    f'mailto = "{MAILTO}"\nsecret = "{SECRET}"\n', encoding="utf-8")
    s = config.load({}, env={}, config_path=str(path))
    assert (s.unsubscribe_url, s.unsubscribe_mailto, s.unsubscribe_secret) == (URL, MAILTO, SECRET)
    assert s.return_path == "bounces+{row}@example.org"
    assert s.redacted()["unsubscribe_secret"] == "***" and SECRET not in repr(s)
    path.write_text('return_path = "bounces@example.org"\n', encoding="utf-8")
    with pytest.raises(UsageError):
        config.load({}, env={}, config_path=str(path))
