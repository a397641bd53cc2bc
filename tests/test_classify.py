"""Every cell of the classification table (sender/classify.py) against a real scripted relay.

Each case makes a scripted SMTP server misbehave in one phase, runs the real daemon once over a
real SQLite queue, and checks both sides: what the server received (logins, MAIL FROM, message
data) and what the database says (state, attempts counted, SendLog status). The expected action
of each case is written here independently of the table, and a test checks that the cases cover
every cell; another checks that docs/failures.md is what the table renders.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import aiosmtplib
import pytest

from sender import classify
from sender.delivery import classify as translate
from tests.conftest import ROOT
from tests.scripted_relay import LOST, STALL, ScriptedRelay, scripted
from tests.support import log_statuses, one, run_once, seed


@dataclass(frozen=True)
class Case:
    phase: str
    fault: str
    expect: str

    @property
    def reply(self) -> str:
        if self.fault.endswith(LOST):
            return "lost"
        if self.fault == STALL:
            return "timeout"
        head = self.fault[:3]
        return classify.reply_class(int(head)) if head.isdigit() else "malformed"

    @property
    def code(self) -> int | None:
        head = self.fault[:3]
        return int(head) if head.isdigit() else None


CASES = [
    Case("greeting", "220 relay ready", "sent"),
    Case("greeting", "450 4.3.2 not now", "stop"),
    Case("greeting", "554 5.7.1 no SMTP service here", "stop"),
    Case("greeting", "421 4.3.2 Service not available", "outage"),
    Case("greeting", LOST, "outage"),
    Case("greeting", STALL, "outage"),
    Case("greeting", "hello there", "stop"),
    Case("ehlo", "451 4.3.0 not now", "stop"),
    Case("ehlo", "554 5.7.1 go away", "stop"),
    Case("ehlo", "421 4.3.2 closing", "outage"),
    Case("ehlo", LOST, "outage"),
    Case("ehlo", STALL, "outage"),
    Case("ehlo", "what is this", "stop"),
    Case("tls", "454 4.7.0 TLS not available", "stop"),
    Case("tls", "554 5.7.0 no TLS for you", "stop"),
    Case("tls", "421 4.7.0 too many TLS sessions", "throttle"),
    Case("tls", LOST, "outage"),
    Case("tls", STALL, "outage"),
    Case("tls", "go ahead?", "stop"),
    Case("auth", "454 4.7.0 Temporary authentication failure", "stop"),
    Case("auth", "535 5.7.8 Error: authentication failed", "stop"),
    Case("auth", "538 5.7.11 Encryption required", "stop"),
    Case("auth", "421 4.7.0 slow down", "throttle"),
    Case("auth", LOST, "outage"),
    Case("auth", STALL, "outage"),
    Case("auth", "ok?", "stop"),
    Case("mail", "451 4.3.0 Temporary local problem", "outage"),
    Case("mail", "450 4.7.1 too much mail from 127.0.0.1", "throttle"),
    Case("mail", "452 4.3.2 Too many recipients today", "throttle"),
    Case("mail", "421 4.7.0 closing", "throttle"),
    Case("mail", "554 5.7.1 Client host rejected: Access denied", "stop"),
    Case("mail", "530 5.7.0 Authentication required", "stop"),
    Case("mail", "552 5.3.4 Message size exceeds fixed limit", "failed"),
    Case("mail", LOST, "outage"),
    Case("mail", STALL, "outage"),
    Case("mail", "mail?", "outage"),
    Case("rcpt", "451 4.3.0 Try later", "retry"),
    Case("rcpt", "450 4.7.1 slow down", "throttle"),
    Case("rcpt", "421 4.7.0 closing", "throttle"),
    Case("rcpt", "550 5.1.1 No such user", "failed"),
    Case("rcpt", "530 5.7.0 Authentication required", "stop"),
    Case("rcpt", LOST, "retry"),
    Case("rcpt", STALL, "retry"),
    Case("rcpt", "rcpt?", "retry"),
    Case("data", "451 4.3.0 local error", "retry"),
    Case("data", "451 4.7.0 rate limit exceeded", "throttle"),
    Case("data", "421 4.7.0 closing", "throttle"),
    Case("data", "554 5.6.0 no data", "failed"),
    Case("data", LOST, "retry"),
    Case("data", STALL, "retry"),
    Case("data", "data?", "retry"),
    Case("dot", "250 2.0.0 Ok: queued", "sent"),
    Case("dot", "451 4.3.0 queue write error", "retry"),
    Case("dot", "452 4.7.1 try again later", "throttle"),
    Case("dot", "421 4.7.0 closing", "throttle"),
    Case("dot", "554 5.7.1 looks like spam", "failed"),
    Case("dot", "535 5.7.8 who are you", "stop"),
    Case("dot", LOST, "unknown"),
    Case("dot", STALL, "unknown"),
    Case("dot", "garbage", "unknown"),
    Case("dot", "999 what", "unknown"),
    Case("dot", "221 2.0.0 Bye", "unknown"),
    Case("dot", "250-Ok|" + LOST, "unknown"),
]

STATE = {"sent": ("sent", 1, ["sent"]), "retry": ("scheduled", 1, ["retry"]),
         "failed": ("failed", 1, ["failed"]), "unknown": ("unknown", 1, ["unknown"]),
         "stop": ("scheduled", 0, ["released"]), "outage": ("scheduled", 0, ["released"]),
         "throttle": ("scheduled", 0, ["released"])}


def _relay(case: Case) -> ScriptedRelay:
    relay = ScriptedRelay(faults={case.phase: case.fault}, stall=1.0)
    relay.starttls = case.phase == "tls"
    if case.phase == "auth":
        relay.auth = ("PLAIN",)
    return relay


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.phase}-{c.fault[:14]}")
async def test_each_phase_and_reply(db_path: str, case: Case) -> None:
    """The reply in that phase leads to the table's action: state, attempts, SendLog and what the relay got."""
    await seed(db_path, 1)
    creds = {"smtp_user": "mailer", "smtp_password": "right", "smtp_allow_plaintext_auth": True} \
        if case.phase == "auth" else {}
    async with scripted(_relay(case)) as relay:
        before = time.time()
        stats = await run_once(db_path, relay.port, concurrency=1, smtp_timeout=0.3, **creds)
    state, attempts, log = STATE[case.expect]
    row = one(db_path)
    assert (row["state"], row["attempts"], log_statuses(db_path)) == (state, attempts, log), row["last_reply"]
    assert len(relay.messages) == (1 if case.phase == "dot" or case.expect == "sent" else 0)
    if case.expect == "stop":
        assert stats.stop_reason and stats.stop_reason in row["last_reply"]
    else:
        assert stats.stop_reason is None
    if case.expect in ("outage", "throttle"):
        assert before < row["due_at"] < before + 400
    if case.phase in ("greeting", "ehlo", "tls") and case.expect != "sent":
        assert relay.count("MAIL") == 0


def test_the_cases_are_the_table() -> None:
    """Each case's expected action is the table's, and the cases cover every cell and override."""
    for case in CASES:
        phase = case.phase if case.phase != "greeting" or case.fault[:1] != "2" else "greeting"
        got = classify.decide(phase, case.reply, case.code, case.fault[4:])
        expect = {"sent": ("ok", "sent")}.get(case.expect, (case.expect,))
        assert got in expect, case
    covered = {(c.phase, c.reply) for c in CASES}
    cells = {(p, r) for p, row in classify.TABLE.items() for r, a in row.items() if a != "-"}
    not_scripted = {("connect", "lost"), ("connect", "timeout"),  # test_connect_failures
                    ("ehlo", "2xx"), ("auth", "2xx"), ("mail", "2xx"), ("rcpt", "2xx"),  # every sent case
                    ("data", "2xx"), ("tls", "2xx")}  # tls 2xx: tests/test_tls_auth.py
    assert cells - covered <= not_scripted
    for rule in classify.OVERRIDES:
        assert any(c.phase in rule.phases and c.expect == rule.action and (
            c.code in rule.codes or (not rule.codes and classify.throttling(c.code or 0, c.fault[4:])))
            for c in CASES), rule


def test_failures_doc_is_generated_from_the_table() -> None:
    """docs/failures.md is exactly what sender/classify.py renders (regenerate it when the table changes)."""
    assert (ROOT / "docs" / "failures.md").read_text(encoding="utf-8") == classify.render_markdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_failures(db_path: str) -> None:
    """A refused connection is an outage (released, no attempt); a connect timeout is one too; an
    unresolvable host stops sending with the reason; a name that cannot be encoded stops too."""
    await seed(db_path, 1)
    stats = await run_once(db_path, _free_port(), concurrency=1)
    row = one(db_path)
    assert (row["state"], row["attempts"], log_statuses(db_path)) == ("scheduled", 0, ["released"])
    assert stats.stop_reason is None and stats.session_errors
    timeout = aiosmtplib.SMTPConnectTimeoutError("Timed out connecting to relay on port 25")
    assert translate(timeout, "connect").kind == "outage"
    dns = aiosmtplib.SMTPConnectError("Error connecting to nowhere.invalid on port 25")
    dns.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    error = translate(dns, "connect", "nowhere.invalid")
    assert error.kind == "stop" and "cannot resolve relay host nowhere.invalid" in error.reply
    dns.__cause__ = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert translate(dns, "connect", "nowhere.invalid").kind == "outage"
