"""Several sending hosts and a cron line on one PostgreSQL queue, with SIGKILLs.

Three daemons (``run --worker host-N``, each with its own clock skew in
``SENDER_TEST_CLOCK_OFFSET`` (a test-only skew of the host's clock, ignored by a sender that does
not read it), its own SMTP sessions and working folder) and a cron-style loop of
``run --once --worker cron-K`` race for 5,000 messages that fall due in waves, while
hosts are SIGKILLed at random and restarted under the same name, as systemd would. The sink is a
real process (``python -m sender sink``) writing every accepted message to a maildir: the copies
per Message-ID are counted there, and ``reconcile`` settles the unknown against it.

Two small tests pin what a skewed host clock must not change (database time): a host whose clock
runs ahead neither expires another host's fresh claim nor sends a message before it is due.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import cast

import pytest

from sender import times
from sender.daemon import Daemon
from sender.delivery import pool
from sender.store import sending
from sender.store.engine import open_store
from tests import pg
from tests.conftest import Cli, SinkThread
from tests.support import seed, settings, states, stop, wait_until, write_csv

TOTAL = 5000
WAVES, WAVE_EVERY = 10, 4.5  # the messages fall due in waves, like a campaign's steps; a cron run ends in a lull
OFFSETS = (-90, 0, 90)  # each host's clock skew, seconds
CONCURRENCY = 4  # SMTP sessions per host
LEASE = 3.0
KILLS = 6
CRON_EVERY = 0.5
CRON_RUNS = 60  # most cron runs started
CRON_ALIVE = 3  # a tick is skipped while this many runs still go (bounded load on two cores)
SENT_PER_WORKER = "SELECT worker, count(*) FROM send_log WHERE status = 'sent' GROUP BY worker"
DEADLINE = 75.0  # seconds from the start by which every message must be sent (then about 10 to settle)


def _host_args(url: str, port: int, worker: str, *extra: str) -> list[str]:
    """Short leases and heartbeats, so a killed host's claims expire in seconds. Claiming ahead
    (the default prefetch): the start marks release a killed host's waiting claims, so only the
    one per session in flight can be in doubt."""
    return ["run", "--db", url, "--smtp-port", str(port), "--worker", worker,
            "--lease", str(LEASE), "--heartbeat", "0.5", "--poll", "0.2", "-q", *extra]


def _enqueue(cli: Cli, tmp_path: Path, url: str, start: float) -> None:
    """``init`` and ``enqueue`` TOTAL leads through the command line, falling due from ``start``."""
    rows = [{"to": f"lead{i}@example.com", "subject": f"Your material #{i}", "body": f"Hello {i},\nhere it is.",
             "send_at": datetime.fromtimestamp(start + WAVE_EVERY * (i * WAVES // TOTAL), UTC).isoformat()}
            for i in range(TOTAL)]
    path = write_csv(tmp_path / "leads.csv", rows)
    assert cli("init", "--db", url).code == 0
    r = cli("enqueue", "--db", url, "--csv", path, "--from", "Team <team@example.org>")
    assert r.code == 0 and f"queued {TOTAL}," in r.out, r.err


def _start_sink(cli: Cli, maildir: Path) -> tuple[subprocess.Popen[str], int]:
    proc = cli.popen("sink", "--port", "0", "--maildir", str(maildir), "-q")
    log: Path = proc.log_path  # type: ignore[attr-defined]
    found: list[int] = []

    def listening() -> bool:
        match = re.search(r"sink listening on 127\.0\.0\.1:(\d+)", log.read_text())
        if match:
            found.append(int(match.group(1)))
        return bool(found) or proc.poll() is not None

    if not (wait_until(listening, 15, 0.05) and found):
        stop(proc, signal.SIGKILL)
        raise AssertionError(f"the sink did not start: {log.read_text()}")
    return proc, found[0]


def _delivered(maildir: Path) -> dict[str, list[float]]:
    """What the sink accepted: each Message-ID's arrival times (the maildir files' mtimes)."""
    parser = BytesHeaderParser(policy=compat32)
    copies: dict[str, list[float]] = {}
    for path in (maildir / "new").iterdir():
        with path.open("rb") as fh:
            mid = parser.parse(fh, headersonly=True)["Message-ID"]
        copies.setdefault(str(mid).strip(), []).append(path.stat().st_mtime)
    return copies


def _column_map(url: str, statement: str) -> dict[str, float]:
    """A two-column query as a dict: first column (text) to second (a number)."""
    return {str(key): float(cast(float, value)) for key, value in pg.query(url, statement)}


def _settle(cli: Cli, url: str, port: int) -> None:
    """After the hosts stopped: let every lease of a killed host run out, ``recover``, and send what
    went back to scheduled (claims a SIGTERM handed back, released by a killed host's marks, or
    fenced)."""
    time.sleep(LEASE + 0.3)
    assert cli("recover", "--db", url).code == 0
    last = cli(*_host_args(url, port, "cron-last", "--once"), timeout=20)
    assert last.code == 0, last.err


class Hosts:
    """The three host daemons and the cron runs: started, killed, restarted, reaped."""

    def __init__(self, tmp_path: Path, url: str, port: int) -> None:
        self.url, self.port = url, port
        self.clis: list[Cli] = []
        for n, offset in enumerate(OFFSETS):
            folder = tmp_path / f"host-{n}"
            folder.mkdir()
            self.clis.append(Cli(cwd=folder, env={"SENDER_TEST_CLOCK_OFFSET": str(offset)}))
        cron_folder = tmp_path / "cron"
        cron_folder.mkdir()
        self.cron_cli = Cli(cwd=cron_folder)
        self.daemons: list[subprocess.Popen[str]] = []
        self.crons: list[subprocess.Popen[str]] = []
        self.cron_codes: list[int] = []
        self.kills = 0

    def start(self, n: int) -> subprocess.Popen[str]:
        return self.clis[n].popen(*_host_args(self.url, self.port, f"host-{n}", "--concurrency", str(CONCURRENCY)))

    def kill_and_restart(self, n: int) -> None:
        self.daemons[n].kill()
        self.daemons[n].wait()
        self.kills += 1
        self.daemons[n] = self.start(n)

    def cron_tick(self) -> None:
        """Reap finished cron runs; start the next one unless too many still go."""
        for proc in [p for p in self.crons if p.poll() is not None]:
            self.crons.remove(proc)
            self.cron_codes.append(proc.returncode)
        started = len(self.cron_codes) + len(self.crons)
        if started < CRON_RUNS and len(self.crons) < CRON_ALIVE:
            self.crons.append(self.cron_cli.popen(*_host_args(self.url, self.port, f"cron-{started}",
                                                              "--once", "--concurrency", "2")))

    def chaos(self, rng: random.Random, until: float) -> None:
        """Cron ticks every CRON_EVERY seconds and KILLS SIGKILLs of random hosts at random moments,
        until the kills are done and nothing is left scheduled (or ``until``, monotonic)."""
        next_kill = time.monotonic() + rng.uniform(2.0, 4.0)
        while time.monotonic() < until and (self.kills < KILLS or states(self.url).get("scheduled", 0) > 0):
            time.sleep(CRON_EVERY)
            self.cron_tick()
            if self.kills < KILLS and time.monotonic() >= next_kill:
                self.kill_and_restart(rng.randrange(len(OFFSETS)))
                next_kill = time.monotonic() + rng.uniform(1.5, 3.5)

    def wait_crons(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.crons:
            proc.wait(max(0.1, deadline - time.monotonic()))
            self.cron_codes.append(proc.returncode)
        self.crons = []

    def logs(self) -> str:
        """The tails of every log that holds a warning or error (for an assert message)."""
        tails = []
        for cli in [*self.clis, self.cron_cli]:
            for path in sorted(cli.cwd.glob("proc-*.log")):
                text = path.read_text()
                if "Traceback" in text or "ERROR" in text:
                    tails.append(f"--- {path}\n{text[-1500:]}")
        return "\n".join(tails[:6])

    def kill_all(self) -> None:
        for proc in [*self.daemons, *self.crons]:
            stop(proc, signal.SIGKILL)


@pytest.mark.slow
def test_three_hosts_and_cron_with_sigkills_on_one_postgres_queue(cli: Cli, pg_database: str,
                                                                 tmp_path: Path) -> None:
    """3 skewed host daemons (4 sessions each) and a cron line of `run --once` over 5,000 messages
    on one PostgreSQL queue, 6 random SIGKILLs with restarts: no Message-ID is delivered twice,
    none before it was due, the states add up, a kill leaves at most one unknown per session, and
    after reconcile against the sink's maildir every delivered message is sent and only those."""
    began = time.monotonic()
    url = pg_database
    maildir = tmp_path / "maildir"
    rng = random.Random(11)
    _enqueue(cli, tmp_path, url, time.time() + 2)
    sink, port = _start_sink(cli, maildir)
    hosts = Hosts(tmp_path, url, port)
    try:
        hosts.daemons = [hosts.start(n) for n in range(len(OFFSETS))]
        hosts.chaos(rng, until=began + DEADLINE)
        sending_done = time.monotonic() - began
        left = states(url).get("scheduled", 0)
        assert left == 0, (f"{left} of {TOTAL} still scheduled after {sending_done:.0f}s ({hosts.kills} kills, "
                           f"{len(hosts.cron_codes)} cron runs done, load average {os.getloadavg()[0]:.1f}), "
                           f"sent per worker {_column_map(url, SENT_PER_WORKER)}")
        hosts.wait_crons(10)
        assert [stop(d) for d in hosts.daemons] == [0] * len(OFFSETS), hosts.logs()
        _settle(cli, url, port)
        counts = states(url)
        copies = _delivered(maildir)
        r = cli("reconcile", "--db", url, "--maildir", str(maildir))
        assert r.code == 0, r.err
        settled = states(url)
        r = cli("report", "--db", url, "--since", "1h", "--json")
        assert r.code == 0, r.err
        found = json.loads(r.out)
    finally:
        hosts.kill_all()
        stop(sink)

    sent, unknown = counts.get("sent", 0), counts.get("unknown", 0)
    by_worker = _column_map(url, SENT_PER_WORKER)
    cron_sent = sum(n for w, n in by_worker.items() if w.startswith("cron-"))
    per_host = {w: int(n) for w, n in sorted(by_worker.items()) if w.startswith("host-")}
    figures = (f"{TOTAL} messages, {len(OFFSETS)} hosts x {CONCURRENCY} sessions, {len(hosts.cron_codes) + 1} "
               f"cron runs: kills={hosts.kills} sent={sent} unknown={unknown} delivered={len(copies)} "
               f"most copies={max(map(len, copies.values()), default=0)} after reconcile {settled} "
               f"cron sent={cron_sent:.0f} per host {per_host} "
               f"sending {sending_done:.1f}s, total {time.monotonic() - began:.1f}s")
    print(f"\n{figures}")
    assert hosts.kills == KILLS, figures
    assert set(hosts.cron_codes) <= {0}, (hosts.cron_codes, figures)
    assert max(map(len, copies.values()), default=0) == 1, f"a Message-ID was delivered twice: {figures}"
    assert sum(counts.values()) == TOTAL and set(counts) <= {"sent", "unknown"}, (counts, figures)
    assert sent <= len(copies) <= sent + unknown, figures
    assert unknown <= hosts.kills * CONCURRENCY, figures
    # Due times are the server's clock: no host, however skewed, sent a message before it was due,
    # and every host found due messages.
    due = _column_map(url, "SELECT message_id, due_at FROM messages")
    early = [(mid, due[mid] - at[0]) for mid, at in copies.items() if at[0] < due[mid] - 1.0]
    assert not early, (early[:5], figures)
    assert len(per_host) == len(OFFSETS) and cron_sent, figures
    # Reconciled: the delivered messages are exactly the sent ones; the rest stays unknown.
    sent_mids = {str(mid) for (mid,) in pg.query(url, "SELECT message_id FROM messages WHERE state = 'sent'")}
    assert sent_mids == set(copies), (len(sent_mids ^ set(copies)), figures)
    assert sum(settled.values()) == TOTAL and set(settled) <= {"sent", "unknown"}, figures
    # The duplicate report, over what reconcile observed, agrees: nothing but the unknown left.
    assert [kind for kind in ("ghosts", "repeated_message_ids", "multi_sends", "stale_claims") if found[kind]] == [], \
        (found, figures)
    assert len(found["unknown"]) == settled.get("unknown", 0), figures
    assert time.monotonic() - began <= 90, figures


SKEW = 90.0


async def test_a_host_clock_ahead_leaves_a_fresh_claim_of_another_host_alone(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim host A made a moment ago with a 30 s lease is still sending after host B, whose
    clock runs 90 s ahead, has heartbeaten (and found nothing to send)."""
    await seed(pg_database, 1, send_at=time.time() - 1)
    async with open_store(pg_database) as db:
        worker = await sending.register_worker(db, "host-a", 1, "a", time.time())
        await sending.claim(db, worker="host-a", worker_id=worker, limit=1, lease=30.0, now=time.time())
        s = settings(pg_database, 1, worker="host-b")
        monkeypatch.setattr(times, "_SKEW", SKEW)  # host B's clock, from here on
        await Daemon(db, s, pool(s)).run(once=True)
    assert pg.query(pg_database, "SELECT state FROM messages") == [("sending",)]


async def test_a_host_clock_ahead_does_not_send_before_the_due_time(pg_database: str, sink: SinkThread,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A message due in a minute is not sent by a host whose clock runs 90 s ahead."""
    await seed(pg_database, 1, send_at=time.time() + 60)
    s = settings(pg_database, sink.port, worker="host-b")
    monkeypatch.setattr(times, "_SKEW", SKEW)
    async with open_store(pg_database) as db:
        await Daemon(db, s, pool(s)).run(once=True)
    assert sink.received == []
    assert pg.query(pg_database, "SELECT state FROM messages") == [("scheduled",)]
