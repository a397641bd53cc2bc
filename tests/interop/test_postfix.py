"""Interop against a real Postfix 3 with Dovecot SASL on loopback (see relay.py for its setup).

Every scenario runs the real ``python -m sender`` as a process and checks both sides: what
Postfix delivered into its maildir (copies per Message-ID) or wrote in its log, and what the queue
says (states, attempts counted). Each scenario records its figures (delivered / failed / retried /
attempts counted / drain time) through ``record``.
"""

from __future__ import annotations

import csv
import email
import json
import time
from email import policy
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.interop.conftest import record
from tests.interop.relay import PASSWORD, RATE_LIMIT, RATE_UNIT, SIZE_LIMIT, USER, Relay
from tests.support import query, states, stop, wait_until

pytestmark = pytest.mark.xdist_group("relay")  # one Postfix and one Dovecot for the session


def _queue(cli: Cli, db_path: str, rows: list[dict[str, str]]) -> None:
    path = Path(db_path).with_suffix(".csv")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["to", "subject", "body", "name"])
        writer.writeheader()
        writer.writerows(rows)
    r = cli("enqueue", "--db", db_path, "--csv", str(path), "--from", "team@example.org")
    assert r.code == 0, r.err


def _rows(n: int, domain: str = "example.com", body: str = "Dzień dobry, ça va? Ünïcødé ✓") -> list[dict[str, str]]:
    return [{"to": f"lead{i}@{domain}", "subject": f"Grüße aus Kraków – 東京 №{i}", "body": f"{body} {i}",  # noqa: RUF001
             "name": f"Zoë Łukasiewicz {i}"} for i in range(n)]


def _copies(relay: Relay) -> list[email.message.EmailMessage]:
    out = []
    for path in relay.delivered():
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        out.append(msg)
    return out


def _mids(relay: Relay) -> list[str]:
    return [str(m["Message-ID"]) for m in _copies(relay)]


def _wait_delivered(relay: Relay, n: int, timeout: float = 30) -> bool:
    return wait_until(lambda: len(relay.delivered()) >= n, timeout, step=0.1)


def _attempts(db_path: str) -> int:
    return int(query(db_path, "SELECT coalesce(sum(attempts), 0) FROM messages")[0][0])


def _released(db_path: str) -> int:
    return int(query(db_path, "SELECT count(*) FROM send_log WHERE status = 'released'")[0][0])


def _run(relay: Relay, port: str, db_path: str, *extra: str) -> list[str]:
    return ["run", "--db", db_path, "--smtp-host", "127.0.0.1", "--smtp-port", str(relay.ports[port]), *extra]


def test_500_non_ascii_messages_each_delivered_once(cli: Cli, db_path: str, relay: Relay) -> None:
    """500 messages with non-ASCII subjects and names: each Message-ID arrives exactly once, headers intact."""
    rows = _rows(500)
    _queue(cli, db_path, rows)
    started = time.monotonic()
    r = cli(*_run(relay, "open", db_path, "--once", "--concurrency", "8", "-q"), timeout=120)
    assert r.code == 0, r.err
    assert _wait_delivered(relay, 500)
    took = time.monotonic() - started
    copies = _copies(relay)
    mids = [str(m["Message-ID"]) for m in copies]
    assert len(mids) == 500 == len(set(mids))
    assert {str(m["Subject"]) for m in copies} == {row["subject"] for row in rows}
    assert all(str(m["To"]).startswith("Zoë Łukasiewicz") for m in copies)
    assert not any(m.defects for m in copies)
    assert states(db_path) == {"sent": 500} and _attempts(db_path) == 500
    record("500 non-ASCII", delivered=500, failed=0, retried=0, attempts=_attempts(db_path), seconds=round(took, 1))


def test_starttls_and_auth_with_a_private_ca(cli: Cli, db_path: str, relay: Relay) -> None:
    """Opportunistic STARTTLS trusting --tls-ca, then AUTH: delivered, and Postfix saw SASL over TLS."""
    _queue(cli, db_path, _rows(3))
    cli.env.update({"SENDER_SMTP_USER": USER, "SENDER_SMTP_PASSWORD": PASSWORD})
    offset = relay.log_size()
    r = cli(*_run(relay, "submission", db_path, "--once", "--tls-ca", str(relay.ca)))
    assert r.code == 0, r.err
    assert _wait_delivered(relay, 3) and states(db_path) == {"sent": 3}
    log = relay.log_since(offset)
    assert "sasl_method=PLAIN" in log and "sasl_username=mailer" in log
    assert "TLS connection established" in log or "starttls=1" in log
    assert PASSWORD not in r.out + r.err
    record("STARTTLS + AUTH (--tls-ca)", delivered=3, failed=0, retried=0, attempts=_attempts(db_path))


def test_implicit_tls_on_the_wrapper_port(cli: Cli, db_path: str, relay: Relay) -> None:
    """--tls on Postfix's smtps (wrapper mode) port with --tls-ca: delivered over TLS with AUTH."""
    _queue(cli, db_path, _rows(2))
    cli.env.update({"SENDER_SMTP_USER": USER, "SENDER_SMTP_PASSWORD": PASSWORD})
    r = cli(*_run(relay, "smtps", db_path, "--once", "--tls", "--tls-ca", str(relay.ca)))
    assert r.code == 0, r.err
    assert _wait_delivered(relay, 2) and states(db_path) == {"sent": 2}
    record("--tls wrapper port", delivered=2, failed=0, retried=0, attempts=_attempts(db_path))


def test_wrong_password_is_one_failed_login(cli: Cli, db_path: str, relay: Relay) -> None:
    """Four sessions, a wrong password: one failed login in Postfix's and Dovecot's logs, nothing
    counted, exit 1 with the reason."""
    _queue(cli, db_path, _rows(6))
    cli.env.update({"SENDER_SMTP_USER": USER, "SENDER_SMTP_PASSWORD": "not-the-password"})
    offset = relay.log_size()
    dovecot_before = relay.dovecot_log.read_text().count("Password mismatch")
    r = cli(*_run(relay, "submission", db_path, "--once", "--concurrency", "4", "--tls-ca", str(relay.ca)))
    assert r.code == 1 and "authentication failed: 535" in r.err
    time.sleep(0.5)
    assert relay.log_since(offset).count("authentication failed") == 1
    assert relay.dovecot_log.read_text().count("Password mismatch") - dovecot_before == 1
    assert states(db_path) == {"scheduled": 6} and _attempts(db_path) == 0
    assert relay.delivered() == []
    record("wrong password", delivered=0, failed=0, retried=0, attempts=0, failed_logins=1)


def test_auth_required_without_credentials_pauses_the_daemon(cli: Cli, db_path: str, relay: Relay) -> None:
    """No credentials where AUTH is required: nothing failed or counted; the daemon pauses itself
    with Postfix's reply as the reason."""
    _queue(cli, db_path, _rows(5))
    proc = cli.popen(*_run(relay, "submission", db_path, "--tls-ca", str(relay.ca), "--poll", "0.1",
                           "--heartbeat", "0.5"))
    try:
        assert wait_until(lambda: json.loads(cli("status", "--db", db_path, "--json").out)["paused"]["global"]
                          is not None, 30, step=0.2)
    finally:
        stop(proc)
    reason = json.loads(cli("status", "--db", db_path, "--json").out)["paused"]["global"]["reason"]
    assert "554 5.7.1" in reason and "Access denied" in reason
    assert states(db_path) == {"scheduled": 5} and _attempts(db_path) == 0
    record("AUTH required, no credentials", delivered=0, failed=0, retried=0, attempts=0, paused=True)


def test_postfix_stop_under_the_daemon(cli: Cli, db_path: str, relay: Relay) -> None:
    """`postfix stop` for three seconds under a running daemon: every message delivered once, none
    failed, and sending resumes within seconds of Postfix coming back."""
    n = 60
    _queue(cli, db_path, _rows(n))
    proc = cli.popen(*_run(relay, "open", db_path, "--concurrency", "4", "--poll", "0.1", "--heartbeat", "0.5",
                           "--rate", "20/1s"))
    try:
        assert wait_until(lambda: states(db_path).get("sent", 0) >= 10, 30, step=0.05)
        relay.postfix("stop")
        down_at = time.monotonic()
        time.sleep(3.0)
        sent_while_down = states(db_path).get("sent", 0)
        relay.postfix("start")
        back = time.monotonic()
        assert wait_until(lambda: states(db_path).get("sent", 0) > sent_while_down, 30, step=0.05)
        resumed = time.monotonic() - back
        drained = wait_until(lambda: states(db_path).get("scheduled", 0) == 0
                             and states(db_path).get("sending", 0) == 0, 60, step=0.05)
        drain = time.monotonic() - back
    finally:
        stop(proc)
    assert drained, states(db_path)
    final = states(db_path)
    unknown = final.get("unknown", 0)
    assert final.get("failed", 0) == 0 and final.get("sent", 0) + unknown == n
    assert _wait_delivered(relay, n - unknown)
    if unknown:
        r = cli("reconcile", "--db", db_path, "--maildir", str(relay.maildir))
        assert r.code == 0, r.err
    mids = _mids(relay)
    assert len(mids) == len(set(mids)), "a message was delivered twice"
    assert states(db_path).get("unknown", 0) <= 1  # one in flight at the stop may never have been queued
    assert resumed < 5, f"first delivery {resumed:.1f}s after Postfix returned"
    assert drain < 15, f"drained {drain:.1f}s after Postfix returned"
    record("postfix stop 3 s under the daemon", delivered=len(mids), failed=0,
           retried=int(query(db_path, "SELECT count(*) FROM send_log WHERE status = 'retry'")[0][0]),
           attempts=_attempts(db_path), released=_released(db_path), unknown_after_stop=unknown,
           sent_before_stop=sent_while_down, down_s=round(back - down_at, 1), resumed_s=round(resumed, 1),
           drain_s=round(drain, 1))


def test_anvil_rate_limit_lower_than_the_queue(cli: Cli, db_path: str, relay: Relay) -> None:
    """Postfix's anvil allows 10 messages per 5 s from us; 15 queued: all delivered, none failed,
    only the successful attempts counted."""
    n = 15
    _queue(cli, db_path, _rows(n))
    proc = cli.popen(*_run(relay, "limited", db_path, "--concurrency", "4", "--poll", "0.1",
                           "--heartbeat", "0.5"))
    started = time.monotonic()
    try:
        drained = wait_until(lambda: states(db_path).get("sent", 0) == n, 60, step=0.1)
        took = time.monotonic() - started
    finally:
        stop(proc)
    assert drained, states(db_path)
    assert _wait_delivered(relay, n)
    mids = _mids(relay)
    assert len(mids) == n == len(set(mids))
    assert _attempts(db_path) == n
    throttled = _released(db_path)
    assert throttled > 0
    assert "too much mail" in relay.log_since(0) or throttled
    record(f"anvil {RATE_LIMIT}/{RATE_UNIT}s, {n} queued", delivered=n, failed=0, retried=0,
           attempts=_attempts(db_path), throttled_releases=throttled, seconds=round(took, 1))


def test_message_size_limit_fails_the_big_one_untransmitted(cli: Cli, db_path: str, relay: Relay) -> None:
    """message_size_limit 20,000: the 60 KB message fails naming the limit, is never transmitted,
    and the others are delivered."""
    rows = [*_rows(3), {"to": "big@example.com", "subject": "big", "body": "x" * 60_000, "name": "Big"}]
    _queue(cli, db_path, rows)
    offset = relay.log_size()
    r = cli(*_run(relay, "small", db_path, "--once"))
    assert r.code == 0, r.err
    assert _wait_delivered(relay, 3)
    big = query(db_path, "SELECT state, last_reply FROM messages WHERE id = 4")[0]
    assert big[0] == "failed" and f"SIZE limit of {SIZE_LIMIT} bytes" in big[1]
    log = relay.log_since(offset)
    assert "big@example.com" not in log and "exceeds" not in log
    assert states(db_path) == {"sent": 3, "failed": 1}
    record("message_size_limit", delivered=3, failed=1, retried=0, attempts=_attempts(db_path))


def test_rejected_recipient_domain(cli: Cli, db_path: str, relay: Relay) -> None:
    """A recipient domain Postfix refuses: that message fails with the 5xx, the rest are delivered."""
    rows = [*_rows(4), {"to": "someone@rejected.example", "subject": "x", "body": "y", "name": "N"}]
    _queue(cli, db_path, rows)
    r = cli(*_run(relay, "open", db_path, "--once"))
    assert r.code == 0, r.err
    assert _wait_delivered(relay, 4)
    bad = query(db_path, "SELECT state, last_reply, attempts FROM messages WHERE id = 5")[0]
    assert bad[0] == "failed" and bad[1].startswith("554") and "Recipient address rejected" in bad[1]
    assert states(db_path) == {"sent": 4, "failed": 1} and len(relay.delivered()) == 4
    record("rejected recipient domain", delivered=4, failed=1, retried=0, attempts=_attempts(db_path))
