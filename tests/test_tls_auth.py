"""STARTTLS, implicit TLS and AUTH against a real aiosmtpd with a self-signed certificate: the
sender verifies the certificate, logs in with SENDER_SMTP_USER/SENDER_SMTP_PASSWORD from the
environment, and the password never appears in any output."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.conftest import Cli, RecordingHandler
from tests.support import need, states

PASSWORD = "pa55-w0rd-never-logged"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    need(None if shutil.which("openssl") else "openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


class Authenticator:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.seen.append((login, password))
        return AuthResult(success=(login, password) == ("mailer", PASSWORD), handled=False)


class TlsServer:
    def __init__(self, tmp: Path, cert: tuple[Path, Path], implicit: bool) -> None:
        self.handler = RecordingHandler(tmp / "maildir")
        self.auth = Authenticator()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*map(str, cert))
        self.implicit = implicit
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.protocols: list[SMTP] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.main, daemon=True)

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd cannot see implicit TLS and warns that AUTH is allowed "without TLS"
            warnings.simplefilter("ignore", UserWarning)
            protocol = self._smtp()
        self.protocols.append(protocol)
        return protocol

    def _smtp(self) -> SMTP:
        return SMTP(self.handler, hostname="localhost", authenticator=self.auth, auth_required=True,
                    auth_exclude_mechanism=["LOGIN"],
                    auth_require_tls=not self.implicit, require_starttls=not self.implicit,
                    tls_context=None if self.implicit else self.context)

    def main(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(self.loop.create_server(
            self.factory, "127.0.0.1", 0, ssl=self.context if self.implicit else None))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> TlsServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(params=["starttls", "tls"])
def tls_server(request: pytest.FixtureRequest, tmp_path: Path, cert: tuple[Path, Path]) -> Iterator[TlsServer]:
    with TlsServer(tmp_path, cert, implicit=request.param == "tls") as server:
        yield server


def test_tls_and_login_with_env_credentials(cli: Cli, db_path: str, tls_server: TlsServer,
                                            cert: tuple[Path, Path]) -> None:
    """Over verified TLS the sender logs in with the env credentials, delivers, and never prints the password."""
    assert cli("enqueue", "--db", db_path, "--to", "a@example.com", "--subject", "s", "--body", "b",
               "--from", "team@example.org").code == 0
    cli.env.update({"SENDER_SMTP_USER": "mailer", "SENDER_SMTP_PASSWORD": PASSWORD,
                    "SSL_CERT_FILE": str(cert[0])})
    flag = "--tls" if tls_server.implicit else "--starttls"
    r = cli("run", "--db", db_path, "--smtp-host", "localhost", "--smtp-port", str(tls_server.port),
            flag, "--once", "-vv")
    assert r.code == 0, r.err
    assert tls_server.auth.seen == [("mailer", PASSWORD)]
    assert len(tls_server.handler.received) == 1 and states(db_path) == {"sent": 1}
    assert PASSWORD not in r.out + r.err
    assert PASSWORD not in Path(db_path).read_bytes().decode("latin-1")


def test_untrusted_certificate_is_refused(cli: Cli, db_path: str, tls_server: TlsServer) -> None:
    """Without trusting the certificate nothing is sent: the claim is released, exit 1 with a clear reason."""
    assert cli("enqueue", "--db", db_path, "--to", "a@example.com", "--subject", "s", "--body", "b",
               "--from", "team@example.org").code == 0
    cli.env.update({"SENDER_SMTP_USER": "mailer", "SENDER_SMTP_PASSWORD": PASSWORD})
    flag = "--tls" if tls_server.implicit else "--starttls"
    r = cli("run", "--db", db_path, "--smtp-host", "localhost", "--smtp-port", str(tls_server.port),
            flag, "--once")
    assert r.code == 1 and "could not deliver" in r.err
    assert "CERTIFICATE_VERIFY_FAILED" in r.err or "certificate" in r.err.lower()
    assert tls_server.handler.received == [] and states(db_path) == {"scheduled": 1}
    assert PASSWORD not in r.out + r.err


def test_wrong_password_does_not_burn_attempts(cli: Cli, db_path: str, tls_server: TlsServer,
                                               cert: tuple[Path, Path]) -> None:
    """A refused login is a session problem: the message stays scheduled with no attempt counted."""
    assert cli("enqueue", "--db", db_path, "--to", "a@example.com", "--subject", "s", "--body", "b",
               "--from", "team@example.org").code == 0
    cli.env.update({"SENDER_SMTP_USER": "mailer", "SENDER_SMTP_PASSWORD": "wrong",
                    "SSL_CERT_FILE": str(cert[0])})
    flag = "--tls" if tls_server.implicit else "--starttls"
    r = cli("run", "--db", db_path, "--smtp-host", "localhost", "--smtp-port", str(tls_server.port),
            flag, "--once")
    assert r.code == 1 and "535" in r.err
    assert states(db_path) == {"scheduled": 1}


def _enqueue_one(cli: Cli, db_path: str) -> None:
    assert cli("enqueue", "--db", db_path, "--to", "a@example.com", "--subject", "s", "--body", "b",
               "--from", "team@example.org").code == 0


def test_opportunistic_starttls_with_a_private_ca(cli: Cli, db_path: str, tmp_path: Path,
                                                  cert: tuple[Path, Path]) -> None:
    """Without --starttls the sender still upgrades when STARTTLS is offered, trusting --tls-ca for
    this relay only, and logs in over TLS."""
    with TlsServer(tmp_path, cert, implicit=False) as server:
        _enqueue_one(cli, db_path)
        cli.env.update({"SENDER_SMTP_USER": "mailer", "SENDER_SMTP_PASSWORD": PASSWORD})
        r = cli("run", "--db", db_path, "--smtp-host", "localhost", "--smtp-port", str(server.port),
                "--tls-ca", str(cert[0]), "--once")
        assert r.code == 0, r.err
        assert server.auth.seen == [("mailer", PASSWORD)]
        assert len(server.handler.received) == 1 and states(db_path) == {"sent": 1}


def test_certificate_failure_says_what_it_is(cli: Cli, db_path: str, tmp_path: Path,
                                             cert: tuple[Path, Path]) -> None:
    """An untrusted certificate: exit 1, one line naming the host, the verify error and --tls-ca; no login."""
    with TlsServer(tmp_path, cert, implicit=False) as server:
        _enqueue_one(cli, db_path)
        cli.env.update({"SENDER_SMTP_USER": "mailer", "SENDER_SMTP_PASSWORD": PASSWORD})
        r = cli("run", "--db", db_path, "--smtp-host", "localhost", "--smtp-port", str(server.port), "--once")
        assert server.auth.seen == []
    line = [x for x in r.err.splitlines() if x.startswith("error:")]
    assert r.code == 1 and len(line) == 1
    assert "certificate verify failed for localhost" in line[0] and "--tls-ca FILE" in line[0]
    assert states(db_path) == {"scheduled": 1}


def test_tls_insecure_warns_and_shows_in_status(cli: Cli, db_path: str, tmp_path: Path,
                                                cert: tuple[Path, Path]) -> None:
    """--tls-insecure delivers to an untrusted certificate, warns at start, and `status` shows it while running."""
    from tests.support import stop, wait_until

    with TlsServer(tmp_path, cert, implicit=False) as server:
        _enqueue_one(cli, db_path)
        cli.env.update({"SENDER_SMTP_USER": "mailer", "SENDER_SMTP_PASSWORD": PASSWORD})
        proc = cli.popen("run", "--db", db_path, "--smtp-host", "localhost", "--smtp-port", str(server.port),
                         "--tls-insecure", "--poll", "0.05", "--heartbeat", "0.2")
        try:
            assert wait_until(lambda: states(db_path) == {"sent": 1}, 20)
            status = json.loads(cli("status", "--db", db_path, "--json").out)
            assert status["tls_insecure"] and status["pace"] is None
            assert "--tls-insecure" in cli("status", "--db", db_path).out
        finally:
            assert stop(proc) == 0
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "NOT verified" in log and PASSWORD not in log
    assert json.loads(cli("status", "--db", db_path, "--json").out)["tls_insecure"] is None
