"""Relay trouble as a whole process meets it: outages back off per round and resume at once,
throttling slows the pace without counting attempts, a refused login costs one login per process,
credentials never cross in clear, SIZE is honoured before transmitting, and a stop pauses the
daemon with the relay's reply. A scripted relay on 127.0.0.1, the real daemon, a real queue file.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sender.daemon import Daemon
from sender.delivery import pool
from sender.intake import NewMessage
from sender.store.db import open_db
from sender.store.enqueue import enqueue
from sender.store.flags import relay_flags
from tests.conftest import ROOT
from tests.scripted_relay import LOST, ScriptedRelay, scripted
from tests.support import one, query, run_once, seed, settings, states


async def _daemon_until(db_path: str, port: int, done: Callable[[], bool], timeout: float,
                        **overrides: object) -> Daemon:
    """Run a real daemon (not --once) until ``done()`` or ``timeout``, then stop it gracefully."""
    s = settings(db_path, port, **overrides)
    async with open_db(db_path) as db:
        daemon = Daemon(db, s, pool(s))
        task = asyncio.create_task(daemon.run(once=False))
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        daemon.request_stop()
        await asyncio.wait_for(task, 20)
    return daemon


def _mids(relay: ScriptedRelay) -> list[str]:
    return [line.split(b":", 1)[1].strip().decode() for m in relay.messages for line in m.split(b"\r\n")
            if line.lower().startswith(b"message-id:")]


async def test_outage_backs_off_once_per_round_and_resumes_at_once(db_path: str) -> None:
    """Four sessions failing together count one round; while down only one session probes; when the
    relay returns everything is delivered once within seconds, no attempt counted."""
    await seed(db_path, 8)
    down = {"on": True}
    relay = ScriptedRelay(faults={"greeting": lambda n: LOST if down["on"] else None})
    async with scripted(relay):
        loop = asyncio.get_running_loop()
        back_at: list[float] = []

        def come_back() -> None:
            down["on"] = False
            back_at.append(time.monotonic())

        loop.call_later(3.0, come_back)
        daemon = await _daemon_until(db_path, relay.port, lambda: len(relay.messages) >= 8, 20, concurrency=4)
        drained = time.monotonic()
    assert states(db_path) == {"sent": 8}
    assert sorted(_mids(relay)) == sorted(set(_mids(relay))) and len(relay.messages) == 8
    assert {r[0] for r in query(db_path, "SELECT attempts FROM messages")} == {1}
    refused = relay.connections - relay.count("EHLO")  # connections that met the outage
    assert 4 <= refused <= 4 + 2, refused  # all four sessions in round one, then one probe per round
    assert daemon.outage.rounds == 0 and daemon.stats.session_errors
    assert drained - back_at[0] < 5.0, f"resumed {drained - back_at[0]:.1f}s after the relay returned"


async def test_outage_hold_is_capped_by_max_hold(db_path: str) -> None:
    """However many rounds fail, the hold never exceeds --max-hold and released rows are due within it."""
    await seed(db_path, 2)
    relay = ScriptedRelay(faults={"greeting": LOST})
    async with scripted(relay):
        before = time.time()
        daemon = await _daemon_until(db_path, relay.port, lambda: False, 4.0, concurrency=2, max_hold=1.0)
    assert daemon.outage.rounds >= 3  # 1 s holds: several rounds in 4 s
    assert relay.connections <= 2 + daemon.outage.rounds + 1
    due = [r[0] for r in query(db_path, "SELECT due_at FROM messages")]
    assert all(d <= time.time() + 1.0 for d in due) and all(d > before for d in due)
    assert states(db_path) == {"scheduled": 2}
    assert {r[0] for r in query(db_path, "SELECT attempts FROM messages")} == {0}


async def test_throttling_slows_down_and_fails_nothing(db_path: str) -> None:
    """A relay allowing 5 messages a second: every message delivered once, none failed, only the
    successful attempt counted, and the slowed pace shows in the flags table while it lasts."""
    await seed(db_path, 20)
    starts: list[float] = []

    def limit(n: int) -> str | None:
        now = time.monotonic()
        recent = [t for t in starts if now - t < 1.0]
        if len(recent) >= 5:
            return "450 4.7.1 Error: too much mail from 127.0.0.1"
        starts.append(now)
        return None

    relay = ScriptedRelay(faults={"mail": limit})
    seen: list[dict[str, object]] = []

    async def watch() -> None:  # what `status --json` reports as "pace"
        while True:
            async with open_db(db_path, readonly=True) as db:
                pace = (await relay_flags(db))["pace"]
            if isinstance(pace, dict):
                seen.append(pace)
            await asyncio.sleep(0.1)

    async with scripted(relay):
        watcher = asyncio.create_task(watch())
        daemon = await _daemon_until(db_path, relay.port, lambda: len(relay.messages) >= 20, 40, concurrency=4)
        watcher.cancel()
    assert states(db_path) == {"sent": 20} and len(set(_mids(relay))) == 20 == len(relay.messages)
    assert {r[0] for r in query(db_path, "SELECT attempts FROM messages")} == {1}
    assert daemon.pace.throttles > 0
    assert seen and any(int(str(p["sessions"])) < 4 or float(str(p["spacing_s"])) > 0 for p in seen)
    assert query(db_path, "SELECT count(*) FROM flags WHERE key = 'pace'") == [(0,)]
    released = query(db_path, "SELECT count(*) FROM send_log WHERE status = 'released'")[0][0]
    assert released == daemon.pace.throttles


async def test_wrong_password_is_one_login_per_process(db_path: str) -> None:
    """Four sessions, PLAIN and LOGIN offered, a wrong password: exactly one AUTH, with PLAIN; nothing
    counted, nothing sent, the stop says what to fix."""
    await seed(db_path, 8)
    relay = ScriptedRelay(auth=("LOGIN", "PLAIN"), password="right")
    async with scripted(relay):
        stats = await run_once(db_path, relay.port, concurrency=4, smtp_user="mailer", smtp_password="wrong",
                               smtp_allow_plaintext_auth=True)
    assert relay.logins == ["PLAIN"]
    assert relay.count("MAIL") == 0 and states(db_path) == {"scheduled": 8}
    assert {r[0] for r in query(db_path, "SELECT attempts FROM messages")} == {0}
    assert stats.stop_reason and "authentication failed: 535" in stats.stop_reason
    assert "SENDER_SMTP_PASSWORD" in stats.stop_reason
    assert one(db_path)["last_reply"] == f"not attempted: {stats.stop_reason}"


async def test_good_password_logs_in_on_every_session(db_path: str) -> None:
    """With the right password each session logs in once with the strongest offered mechanism and sends."""
    await seed(db_path, 6)
    relay = ScriptedRelay(auth=("LOGIN", "PLAIN"), password="right")
    async with scripted(relay):
        await run_once(db_path, relay.port, concurrency=3, smtp_user="mailer", smtp_password="right",
                       smtp_allow_plaintext_auth=True)
    assert states(db_path) == {"sent": 6}
    assert set(relay.logins) == {"PLAIN"} and len(relay.logins) == relay.connections <= 3


async def test_credentials_never_cross_in_clear(db_path: str) -> None:
    """A relay offering AUTH but no STARTTLS: no AUTH is sent, nothing counted, the stop says why."""
    await seed(db_path, 2)
    relay = ScriptedRelay(auth=("PLAIN",))
    async with scripted(relay):
        stats = await run_once(db_path, relay.port, concurrency=2, smtp_user="mailer", smtp_password="right")
    assert relay.logins == [] and relay.count("MAIL") == 0
    assert states(db_path) == {"scheduled": 2}
    assert stats.stop_reason and "refusing to send credentials over an unencrypted connection" in stats.stop_reason


async def test_size_limit_fails_the_big_message_before_transmitting(db_path: str) -> None:
    """EHLO SIZE 2000: MAIL FROM carries SIZE=n; a bigger message fails with the limit in its reason
    and never reaches MAIL FROM or DATA; the small one is sent."""
    rows = [NewMessage(to="small@example.com", subject="s", body="short", campaign="c"),
            NewMessage(to="big@example.com", subject="b", body="x" * 5000, campaign="c")]
    async with open_db(db_path, create=True) as db:

        await enqueue(db, rows, from_addr="team@example.org", from_name="Team", domain=None, now=time.time())
    relay = ScriptedRelay(size=2000)
    async with scripted(relay):
        await run_once(db_path, relay.port, concurrency=1)
    small, big = one(db_path, 1), one(db_path, 2)
    assert small["state"] == "sent" and big["state"] == "failed"
    assert "SIZE limit of 2000 bytes" in big["last_reply"] and "not transmitted" in big["last_reply"]
    assert relay.count("MAIL") == 1 and len(relay.messages) == 1
    mail = next(c for c in relay.commands if c.upper().startswith("MAIL"))
    assert "SIZE=" in mail


async def test_daemon_pauses_itself_with_the_relays_reply(db_path: str) -> None:
    """A 554 at MAIL FROM under the daemon: nothing failed or counted, the global pause flag holds
    the relay's reply, and no further MAIL FROM is tried while paused."""
    await seed(db_path, 5)
    relay = ScriptedRelay(faults={"mail": "554 5.7.1 <team@example.org>: Client host rejected: Access denied"})

    def paused() -> bool:
        return bool(query(db_path, "SELECT 1 FROM flags WHERE key = 'paused'"))

    async with scripted(relay):
        await _daemon_until(db_path, relay.port, paused, 10, concurrency=2)
        mails = relay.count("MAIL")
        await asyncio.sleep(0.3)
    reason = query(db_path, "SELECT value FROM flags WHERE key = 'paused'")[0][0]
    assert "554 5.7.1" in reason and "Access denied" in reason
    assert states(db_path) == {"scheduled": 5}
    assert {r[0] for r in query(db_path, "SELECT attempts FROM messages")} == {0}
    assert mails <= 2 and relay.count("MAIL") == mails


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sender", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_once_exits_1_with_what_to_fix(db_path: str) -> None:
    """`run --once` against a relay requiring AUTH without credentials: exit 1, one error line naming
    the fix, nothing failed."""
    await seed(db_path, 3)
    relay = ScriptedRelay(faults={"mail": "530 5.7.0 Authentication required"})
    async with scripted(relay):
        code, out = await _cli("run", "--db", db_path, "--smtp-port", str(relay.port), "--once", "-q")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1
    assert "530" in errors[0] and "SENDER_SMTP_USER" in errors[0]
    assert states(db_path) == {"scheduled": 3}


async def test_bad_relay_host_or_port_is_refused_at_start(db_path: str, tmp_path: Path) -> None:
    """`smtp..example.org` or port 0 is exit 2 with one line, before the queue is touched."""
    await seed(db_path, 2)
    before = Path(db_path).read_bytes()
    for flags in (("--smtp-host", "smtp..example.org"), ("--smtp-host", "-bad-.example"), ("--smtp-port", "0"),
                  ("--smtp-port", "70000")):
        code, out = await _cli("run", "--db", db_path, *flags, "--once")
        assert code == 2 and out.startswith("error:") and len(out.strip().splitlines()) == 1, out
    assert states(db_path) == {"scheduled": 2}
    assert Path(db_path).read_bytes() == before


async def test_a_relay_host_that_does_not_resolve_stops_the_run_and_fails_nothing(db_path: str) -> None:
    """``--smtp-host nowhere.invalid`` (a name that never resolves, RFC 6761): a configuration
    error, not the messages' fault: exit 1 with one line naming the flag, every claim released
    with no attempt counted."""
    await seed(db_path, 3)
    code, out = await _cli("run", "--db", db_path, "--smtp-host", "nowhere.invalid", "--once")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, out
    assert "cannot resolve relay host nowhere.invalid" in errors[0] and "--smtp-host" in errors[0]
    assert states(db_path) == {"scheduled": 3}
    assert query(db_path, "SELECT sum(attempts) FROM messages") == [(0,)]


def test_relay_settings_from_the_config_file(tmp_path: Path) -> None:
    """[smtp] tls_ca / tls_insecure / allow_plaintext_auth and [run] max_hold reach Settings; a
    missing CA file or a zero hold is refused (exit 2) before anything runs."""
    from sender import config
    from sender.errors import UsageError

    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here\n")
    toml = tmp_path / "sender.toml"
    toml.write_text(f'[smtp]\ntls_ca = "{ca}"\ntls_insecure = true\nallow_plaintext_auth = true\n'
                    "[run]\nmax_hold = 12.5\n")
    s = config.load({}, env={}, config_path=str(toml))
    assert (s.smtp_tls_ca, s.smtp_tls_insecure, s.smtp_allow_plaintext_auth, s.max_hold) == (str(ca), True, True, 12.5)
    for flags in ({"smtp_tls_ca": str(tmp_path / "missing.pem")}, {"max_hold": 0.0}, {"smtp_host": "a..b"}):
        with pytest.raises(UsageError) as caught:
            config.load(flags, env={})
        assert caught.value.exit_code == 2
