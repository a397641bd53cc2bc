"""Shared fixtures: temporary queue files, a real aiosmtpd capture server on 127.0.0.1 in its own
thread (so both in-process and subprocess senders can talk to it), and a runner for
``python -m sender`` as a real OS process."""

from __future__ import annotations

import asyncio
import base64
import email
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from sender.sink import CaptureHandler, serve

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message_id: str
    to_header: str
    subject: str
    at: float
    raw: bytes


@dataclass
class Faults:
    """Per-phase fault injection; each callable gets the recipient and returns a reply or None."""

    rcpt: Callable[[str], str | None] | None = None
    data: Callable[[str], str | None] | None = None   # "DROP" closes the line after the data arrived
    data_delay: float = 0.0
    before_data: Callable[[str], bool] | None = None  # True: drop the line at DATA (before data)


class RecordingHandler(CaptureHandler):
    """Captures into a maildir and a list, and injects faults on request."""

    def __init__(self, maildir: Path, faults: Faults | None = None,
                 on_mail: Callable[[str], None] | None = None) -> None:
        super().__init__(maildir)
        self.faults = faults or Faults()
        self.received: list[Received] = []
        self.on_mail = on_mail
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if self.on_mail is not None:
            await asyncio.to_thread(self.on_mail, address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.faults.rcpt and (reply := self.faults.rcpt(address)):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        if self.faults.data_delay:
            await asyncio.sleep(self.faults.data_delay)
        reply = self.faults.data(rcpt) if self.faults.data else None
        if reply is not None and reply != "DROP":
            return reply
        result = await super().handle_DATA(server, session, envelope)
        msg = email.message_from_bytes(envelope.original_content or b"")
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          msg.get("Message-ID", ""), msg.get("To", ""),
                                          msg.get("Subject", ""), time.time(),
                                          envelope.original_content or b""))
        if reply == "DROP":
            server.transport.close()
            return "250 never seen"
        return result


class FaultySMTP(SMTP):
    """aiosmtpd's server, able to drop the line when DATA arrives (before its 354)."""

    async def smtp_DATA(self, arg: str) -> None:
        faults: Faults = self.event_handler.faults
        rcpt = self.envelope.rcpt_tos[0] if self.envelope.rcpt_tos else ""
        if faults.before_data and faults.before_data(rcpt):
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class SinkThread:
    """A real SMTP server on 127.0.0.1:<free port>, running its own event loop in a thread."""

    def __init__(self, handler: RecordingHandler) -> None:
        self.handler = handler
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._server: asyncio.Server | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(serve("127.0.0.1", 0, self.handler.maildir._path,
                                                           self.handler, FaultySMTP))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> SinkThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "queue.db")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkThread]:
    with SinkThread(RecordingHandler(tmp_path / "maildir")) as running:
        yield running


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def faulty_sink(tmp_path: Path, faults: Faults) -> Iterator[SinkThread]:
    with SinkThread(RecordingHandler(tmp_path / "maildir", faults)) as running:
        yield running


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs ``python -m sender`` (or another module) as a real process, bounded in time."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    started: int = 0

    def cmd(self, *args: str, module: str = "sender") -> list[str]:
        return [sys.executable, "-m", module, *args]

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENDER_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def __call__(self, *args: str, timeout: float = 60, stdin: str | None = None,
                 module: str = "sender") -> CliResult:
        proc = subprocess.run(self.cmd(*args, module=module), cwd=self.cwd, env=self.environ(),
                              capture_output=True, text=True, timeout=timeout, input=stdin)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, module: str = "sender") -> subprocess.Popen[str]:
        """Start a long-running process; its stdout+stderr go to ``proc.log_path`` (a pipe
        nobody reads would fill up and block a busy daemon)."""
        self.started += 1
        log_path = self.cwd / f"proc-{self.started}.log"
        with log_path.open("w") as out:
            proc = subprocess.Popen(self.cmd(*args, module=module), cwd=self.cwd, env=self.environ(),
                                    stdout=out, stderr=subprocess.STDOUT, text=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        return proc


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path)


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key made by openssl, and the DNS TXT record that publishes it."""
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(key)], check=True, capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True, timeout=60).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test (``tests/pg.py``); skips without a server."""
    from tests.pg import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh queue on each engine: a file path, or a new PostgreSQL database's URL."""
    from tests.pg import target

    return target(request.param, tmp_path, request)
