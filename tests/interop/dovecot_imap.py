"""A private Dovecot IMAP server on 127.0.0.1 for the interop tests: its own config, base and
state folders under a temporary directory, a passwd-file user, a maildir home, IMAPS with a
throw-away certificate. Nothing outside the temporary directory is read or changed (Dovecot's
system config is never loaded: ``-c`` names ours)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "bounces", "imap-test-password-123"
MAIL_UID = 65534  # nobody: Dovecot refuses mail access as root


@dataclass(frozen=True)
class Dovecot:
    port: int
    ca_file: str
    maildir: Path
    log: Path

    def url(self, folder: str = "INBOX") -> str:
        return f"imaps://{USER}@127.0.0.1:{self.port}/{folder}"


def available() -> str | None:
    """None if a private Dovecot can run here, else why not (one line, for the skip)."""
    if shutil.which("dovecot") is None:
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, port: int) -> str:
    dh = "/usr/share/dovecot/dh.pem"
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
{f"ssl_dh = <{dh}" if os.path.exists(dh) else ""}
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


@contextmanager
def dovecot_server(timeout: float = 20.0) -> Iterator[Dovecot]:
    root = Path(tempfile.mkdtemp(prefix="sender-dovecot-"))
    root.chmod(0o755)  # Dovecot's unprivileged login processes must reach base_dir
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
                       check=True, capture_output=True, timeout=60)
        home = root / "home"
        (home / "Maildir").mkdir(parents=True)
        for folder in (home, home / "Maildir"):
            os.chown(folder, MAIL_UID, MAIL_UID)
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_UID}::{home}::\n")
        port = _free_port()
        (root / "dovecot.conf").write_text(_config(root, port))
        with (root / "stderr.log").open("wb") as err_file:
            proc = subprocess.Popen(["dovecot", "-F", "-c", str(root / "dovecot.conf")],
                                    stdout=subprocess.DEVNULL, stderr=err_file)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = (root / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"dovecot exited: {err.strip()} {_tail(root / 'dovecot.log')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not listen: {_tail(root / 'dovecot.log')}") from None
                time.sleep(0.1)
        yield Dovecot(port, str(root / "cert.pem"), home / "Maildir", root / "dovecot.log")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-800:] if log.exists() else ""
