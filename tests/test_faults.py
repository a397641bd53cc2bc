"""Each SMTP failure phase maps to the right state, and nothing is ever delivered twice.

A real aiosmtpd server injects the faults (replies, dropped lines, slow replies); the sender is
the real daemon with real sessions over a real SQLite file.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from sender.daemon import backoff, retry_hint
from tests.conftest import Faults, SinkThread
from tests.support import log_statuses, one, run_once, seed


@pytest.fixture
async def greeting_421() -> AsyncIterator[int]:
    """A server that answers every connection with 421 and hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.3.2 Service not available, try again later\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_421_at_connect_defers_without_counting_an_attempt(db_path: str, greeting_421: int) -> None:
    """A 421 greeting releases the claim: scheduled again, attempts unchanged, the session backs off."""
    await seed(db_path, 3)
    stats = await run_once(db_path, greeting_421)
    assert stats.sent == 0 and stats.released >= 1 and stats.session_errors
    for row_id in (1, 2, 3):
        row = one(db_path, row_id)
        assert row["state"] == "scheduled" and row["attempts"] == 0
    assert "released" in log_statuses(db_path, 1)


async def test_refused_connection_defers_the_batch(db_path: str) -> None:
    """Nothing listening: every claim goes back to scheduled with no attempt counted."""
    await seed(db_path, 2)
    stats = await run_once(db_path, free_port())
    assert stats.sent == 0 and stats.session_errors
    assert {one(db_path, i)["state"] for i in (1, 2)} == {"scheduled"}
    assert {one(db_path, i)["attempts"] for i in (1, 2)} == {0}


@pytest.mark.parametrize("phase", ["rcpt", "data"])
async def test_451_is_a_retry_with_backoff(db_path: str, faulty_sink: SinkThread, faults: Faults,
                                           phase: str) -> None:
    """451 at RCPT or at the end of DATA: scheduled, attempts 1, due later, nothing delivered."""
    setattr(faults, phase, lambda rcpt: "451 4.3.0 Temporary local problem")
    await seed(db_path, 1)
    before = time.time()
    await run_once(db_path, faulty_sink.port)
    row = one(db_path)
    assert row["state"] == "scheduled" and row["attempts"] == 1
    assert row["due_at"] > before + 30 and "451" in row["last_reply"]
    assert log_statuses(db_path) == ["retry"]
    assert faulty_sink.received == []


async def test_550_at_rcpt_fails_with_reason(db_path: str, faulty_sink: SinkThread, faults: Faults) -> None:
    """A 5xx refusal is permanent: failed, the reply stored, never retried."""
    faults.rcpt = lambda rcpt: "550 5.1.1 No such user"
    await seed(db_path, 1)
    await run_once(db_path, faulty_sink.port)
    row = one(db_path)
    assert row["state"] == "failed" and "No such user" in row["last_reply"]
    assert log_statuses(db_path) == ["failed"]


async def test_drop_before_data_is_definite(db_path: str, faulty_sink: SinkThread, faults: Faults) -> None:
    """The line drops at the DATA command, before 354: provably not delivered, so a retry."""
    faults.before_data = lambda rcpt: True
    await seed(db_path, 1)
    await run_once(db_path, faulty_sink.port)
    row = one(db_path)
    assert row["state"] == "scheduled" and row["attempts"] == 1
    assert faulty_sink.received == []


async def test_drop_after_data_is_unknown_and_never_resent(db_path: str, faulty_sink: SinkThread,
                                                           faults: Faults) -> None:
    """The server got the data, then the line dropped: unknown; later runs do not resend it."""
    faults.data = lambda rcpt: "DROP"
    await seed(db_path, 1)
    await run_once(db_path, faulty_sink.port)
    assert one(db_path)["state"] == "unknown"
    faults.data = None
    await run_once(db_path, faulty_sink.port)
    assert one(db_path)["state"] == "unknown"
    assert len(faulty_sink.received) == 1
    assert log_statuses(db_path) == ["unknown"]


async def test_reply_slower_than_timeout_after_data_is_unknown(db_path: str, faulty_sink: SinkThread,
                                                               faults: Faults) -> None:
    """The final reply never comes within the timeout: the data may be accepted, so unknown."""
    faults.data_delay = 2.0
    await seed(db_path, 1)
    await run_once(db_path, faulty_sink.port, smtp_timeout=0.5)
    assert one(db_path)["state"] == "unknown"
    await asyncio.sleep(2.0)  # let the sink finish its copy
    assert len(faulty_sink.received) <= 1


async def test_slow_rcpt_timeout_is_a_retry(db_path: str, faulty_sink: SinkThread, faults: Faults) -> None:
    """A timeout before the data was handed over is definite: retry, not unknown."""

    def slow(rcpt: str) -> None:
        time.sleep(1.0)  # blocks the sink's loop: the client times out waiting for RCPT's reply

    faults.rcpt = slow  # type: ignore[assignment]
    await seed(db_path, 1)
    await run_once(db_path, faulty_sink.port, smtp_timeout=0.3)
    row = one(db_path)
    assert row["state"] == "scheduled" and row["attempts"] == 1


async def test_gives_up_after_max_attempts(db_path: str, faulty_sink: SinkThread, faults: Faults) -> None:
    """After --max-attempts transient failures the message is failed with the last reply."""
    faults.rcpt = lambda rcpt: "451 4.3.0 Try later"
    await seed(db_path, 1)
    for _ in range(3):
        await run_once(db_path, faulty_sink.port, max_attempts=3, retry_delay=0.0)
    row = one(db_path)
    assert row["state"] == "failed" and row["attempts"] == 3
    assert "gave up after 3 attempts" in row["last_reply"]
    assert log_statuses(db_path) == ["retry", "retry", "failed"]


async def test_retry_hint_in_the_reply_is_honoured(db_path: str, faulty_sink: SinkThread,
                                                   faults: Faults) -> None:
    """'try again in 600 seconds' sets the next attempt ten minutes out, not the default backoff."""
    faults.rcpt = lambda rcpt: "450 4.2.0 Rate limited, try again in 600 seconds"
    await seed(db_path, 1)
    before = time.time()
    await run_once(db_path, faulty_sink.port, retry_delay=5.0)
    assert 590 < one(db_path)["due_at"] - before < 620


def test_backoff_grows_with_jitter_and_caps() -> None:
    """Backoff doubles per attempt within +-20% jitter and never exceeds six hours."""
    for attempt in range(1, 6):
        d = backoff(60, attempt)
        assert 0.8 * 60 * 2 ** (attempt - 1) <= d <= 1.2 * 60 * 2 ** (attempt - 1)
    assert backoff(60, 40) <= 6 * 3600 * 1.2
    assert retry_hint("451 4.7.1 Please try again in 5 minutes") == 300
    assert retry_hint("451 4.7.1 greylisted") is None
