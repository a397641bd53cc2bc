"""End to end through the command line: init, enqueue, run --once into a real sink, status."""

from __future__ import annotations

import json

from tests.conftest import Cli, SinkThread


def test_enqueue_run_once_status(cli: Cli, sink: SinkThread, db_path: str) -> None:
    """Two queued messages are delivered once each and the database says sent."""
    assert cli("init", "--db", db_path).code == 0
    r = cli("enqueue", "--db", db_path, "--to", "a@example.com", "--subject", "Hi", "--body", "B",
            "--from", "team@example.org")
    assert r.code == 0, r.err
    r = cli("enqueue", "--db", db_path, "--to", "b@example.com", "--subject", "Hi", "--body", "B",
            "--from", "team@example.org")
    assert r.code == 0, r.err
    r = cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once")
    assert r.code == 0, r.err
    assert sorted(m.rcpt_tos[0] for m in sink.received) == ["a@example.com", "b@example.com"]
    status = json.loads(cli("status", "--db", db_path, "--json").out)
    assert status["sent"] == 2 and status["scheduled"] == 0
