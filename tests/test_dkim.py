"""DKIM: with ``SENDER_DKIM_*`` (or ``[dkim]`` in sender.toml) every message is signed by dkimpy,
relaxed/relaxed, over From, To, Subject, Date, Message-ID, List-Unsubscribe and
List-Unsubscribe-Post, and verifies with dkimpy against a stub DNS record; a changed header fails
it; incomplete settings are exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

from tests.conftest import Cli, SinkThread


def _dns(record: bytes):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s2026._domainkey.example.org." else b""
    return lookup


def _configure(cli: Cli, key: Path) -> None:
    cli.env.update({"SENDER_DKIM_DOMAIN": "example.org", "SENDER_DKIM_SELECTOR": "s2026",
                    "SENDER_DKIM_KEY_FILE": str(key), "SENDER_UNSUBSCRIBE_URL": "https://example.org/u/{token}",
                    "SENDER_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
                    "SENDER_UNSUBSCRIBE_SECRET": "s3cr3t-for-tests-only-0123456789"})


@pytest.mark.parametrize("body", ["Plain ASCII, the fast path.", "Zażółć gęślą jaźń, the email package."])
def test_every_message_is_signed_and_verifies(tmp_path: Path, cli: Cli, sink: SinkThread,
                                              dkim_key: tuple[Path, bytes], body: str) -> None:
    """The received bytes verify with dkimpy and the stub key; h= covers the required headers."""
    key, record = dkim_key
    _configure(cli, key)
    db = str(tmp_path / "q.db")
    assert cli("enqueue", "--db", db, "--to", "lead@example.com", "--subject", "Slides", "--body", body,
               "--from", "Team <team@example.org>", "--reply-to", "sales@example.org").code == 0
    out = cli("run", "--db", db, "--smtp-port", str(sink.port), "--once")
    assert out.code == 0, out.err
    raw = sink.received[0].raw
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=_dns(record))
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    signed = re.search(r"\bh=([^;]+);", head.replace("\r\n", "").replace(" ", "").replace("\t", ""))
    assert signed is not None
    covered = {h.lower() for h in signed.group(1).split(":")}
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= covered
    assert "c=relaxed/relaxed" in head.replace("\r\n", "").replace(" ", "")
    tampered = raw.replace(b"Subject: Slides", b"Subject: Slides!")
    assert not dkim.verify(tampered, dnsfunc=_dns(record))


def test_the_dkim_section_of_the_config_file_signs_too(tmp_path: Path, cli: Cli, sink: SinkThread,
                                                      dkim_key: tuple[Path, bytes]) -> None:
    """``[dkim] domain, selector, key_file`` in sender.toml, no environment: signed, and it verifies."""
    key, record = dkim_key
    (tmp_path / "sender.toml").write_text(
        f'[dkim]\ndomain = "example.org"\nselector = "s2026"\nkey_file = "{key}"\n')
    db = str(tmp_path / "q.db")
    assert cli("enqueue", "--db", db, "--to", "lead@example.com", "--subject", "Slides", "--body", "B",
               "--from", "team@example.org").code == 0
    out = cli("run", "--db", db, "--smtp-port", str(sink.port), "--once")
    assert out.code == 0, out.err
    raw = sink.received[0].raw
    assert raw.startswith(b"DKIM-Signature:") and b"s=s2026" in raw.split(b"\r\n\r\n", 1)[0]
    assert dkim.verify(raw, dnsfunc=_dns(record))


@pytest.mark.parametrize("env", [
    {"SENDER_DKIM_DOMAIN": "example.org"},
    {"SENDER_DKIM_DOMAIN": "example.org", "SENDER_DKIM_SELECTOR": "s", "SENDER_DKIM_KEY_FILE": "/nonexistent.pem"},
])
def test_incomplete_or_bad_dkim_settings_are_exit_2(tmp_path: Path, cli: Cli, env: dict[str, str]) -> None:
    """A missing part or an unreadable key file is one ``error: dkim`` line, exit 2."""
    cli.env.update(env)
    out = cli("status", "--db", str(tmp_path / "q.db"))
    assert out.code == 2 and out.err.startswith("error: dkim")
