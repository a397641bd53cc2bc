"""Database time: on a PostgreSQL queue every host judges leases and due times by the server's
clock, so a host whose own clock is minutes off can neither send early nor expire another host's
claim early (nor keep its own claims past their lease).

Each host is a real ``python -m sender`` process whose clock is skewed by the test-only
``SENDER_TEST_CLOCK_OFFSET``. Every scenario runs on SQLite too, where the queue's clock is its
one host's: there the skew does what a skew does, which proves it took effect and that the
PostgreSQL outcome is database time at work.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from sender.times import SKEW_ENV, iso
from tests import pg
from tests.conftest import Cli, Faults, SinkThread
from tests.support import stop, wait_until

SKEW = 600.0  # ten minutes


def _status(cli: Cli, target: str) -> dict[str, int]:
    r = cli("status", "--db", target, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)  # type: ignore[no-any-return]


def _enqueue(cli: Cli, target: str, *extra: str) -> None:
    r = cli("enqueue", "--db", target, "--to", "lead@example.com", "--subject", "Hi", "--body", "B",
            "--from", "team@example.org", *extra)
    assert r.code == 0, r.err


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_host_ten_minutes_fast_does_not_send_early(engine: str, cli: Cli, sink: SinkThread,
                                                      tmp_path: object, request: pytest.FixtureRequest) -> None:
    """A message due in two minutes, a sending host whose clock is ten minutes ahead: on
    PostgreSQL it waits (the server says it is not due); on SQLite the host's clock is the queue's."""
    target = pg.target(engine, tmp_path, request)  # type: ignore[arg-type]
    _enqueue(cli, target, "--send-at", iso(time.time() + 120) or "")
    cli.env[SKEW_ENV] = str(SKEW)
    r = cli("run", "--db", target, "--smtp-port", str(sink.port), "--once")
    assert r.code == 0, r.err
    if engine == "postgres":
        assert sink.received == [] and _status(cli, target)["scheduled"] == 1
        assert "clock is +600.0s off the queue" in r.err, r.err  # said at start
    else:
        assert len(sink.received) == 1 and _status(cli, target)["sent"] == 1


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_host_ten_minutes_fast_does_not_expire_a_live_claim(engine: str, cli: Cli, faulty_sink: SinkThread,
                                                              faults: Faults, tmp_path: object,
                                                              request: pytest.FixtureRequest) -> None:
    """Host A (a right clock) is in the middle of a send under a 60 s lease; host B, ten minutes
    fast, runs ``recover``: on PostgreSQL the claim is live and stays A's; on SQLite B's clock says
    the lease ran out long ago."""
    target = pg.target(engine, tmp_path, request)  # type: ignore[arg-type]
    _enqueue(cli, target)
    faults.data_delay = 6.0  # A holds its claim in DATA for a while
    host_a = cli.popen("run", "--db", target, "--smtp-port", str(faulty_sink.port), "--once",
                       "--lease", "60", "--heartbeat", "5", "--worker", "host-a")
    try:
        assert wait_until(lambda: _status(cli, target)["sending"] == 1, 20, step=0.1)
        skewed = Cli(cwd=cli.cwd, env={**cli.env, SKEW_ENV: str(SKEW)})
        r = skewed("recover", "--db", target)
        assert r.code == 0, r.err
        if engine == "postgres":
            assert r.out.startswith("0 expired claim(s)"), r.out
            assert _status(cli, target)["sending"] == 1
        else:
            assert r.out.startswith("1 expired claim(s) moved to unknown"), r.out
        assert host_a.wait(30) == 0
    finally:
        if host_a.poll() is None:
            stop(host_a)
    if engine == "postgres":
        assert _status(cli, target)["sent"] == 1 and len(faulty_sink.received) == 1


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_host_ten_minutes_slow_holds_its_claim_for_its_lease_not_longer(
        engine: str, cli: Cli, faulty_sink: SinkThread, faults: Faults, tmp_path: object,
        request: pytest.FixtureRequest) -> None:
    """A host ten minutes slow claims under a 3 s lease and is killed mid-send. A right-clocked
    ``recover`` finds the claim live at once and expired once 3 s have passed (on PostgreSQL the
    lease was written in the server's time); on SQLite the slow host wrote it ten minutes in the
    past, so it is expired at once."""
    target = pg.target(engine, tmp_path, request)  # type: ignore[arg-type]
    slow = Cli(cwd=cli.cwd, env={**cli.env, SKEW_ENV: str(-SKEW)})
    _enqueue(slow, target)  # queued by the slow host too, so it is due by its clock on SQLite
    faults.data_delay = 8.0
    host = slow.popen("run", "--db", target, "--smtp-port", str(faulty_sink.port), "--lease", "3",
                      "--heartbeat", "1", "--worker", "slow-host", "--poll", "0.1")
    try:
        assert wait_until(lambda: _status(cli, target)["sending"] == 1, 20, step=0.05)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        killed = time.monotonic()
        early = cli("recover", "--db", target)
        assert early.code == 0, early.err
        if engine == "sqlite":
            assert early.out.startswith("1 expired claim(s) moved to unknown"), early.out
            return
        assert time.monotonic() - killed < 2.5 and early.out.startswith("0 expired claim(s)"), early.out
        time.sleep(max(0.0, killed + 3.5 - time.monotonic()))
        late = cli("recover", "--db", target)
        assert late.out.startswith("1 expired claim(s) moved to unknown"), late.out
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)
