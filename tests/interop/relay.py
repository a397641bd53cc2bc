"""A private Postfix + Dovecot SASL on loopback, for the interop tests.

Everything lives under one temporary directory: Postfix's config, queue and data directories, its
log (``maillog_file``), Dovecot's config, runtime directory, password file and log, the test CA and
the maildir Postfix's ``virtual`` agent delivers into. Ports are free loopback ports, one ``smtpd``
per scenario (``master.cf`` ``-o`` overrides):

* ``open``: no TLS, no AUTH, mynetworks may relay (plain delivery, outage);
* ``submission``: STARTTLS with the test CA, AUTH only over TLS, only authenticated clients may send;
* ``smtps``: the same over implicit TLS (``--tls``);
* ``limited``: anvil allows 10 messages per ``anvil_rate_time_unit`` (5 s) from loopback;
* ``small``: ``message_size_limit`` of 20,000 bytes (EHLO SIZE).

Recipients at ``rejected.example`` are refused at RCPT with a 5xx; everything else at
``example.com`` lands in ``mail/box/`` (one file per copy). Nothing ever leaves the machine: the
default transport is ``error``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USER, PASSWORD = "mailer", "interop-s3cret"
SIZE_LIMIT = 20_000
RATE_LIMIT, RATE_UNIT = 10, 5
PORTS = ("open", "submission", "smtps", "limited", "small")


def missing() -> str | None:
    """Why the interop suite cannot run here, or None."""
    for tool in ("postfix", "dovecot", "openssl", "script"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (apt-get install postfix dovecot-core dovecot-imapd)"
    if os.geteuid() != 0:
        return "a private Postfix needs root (mail_owner=postfix)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=timeout)


def _postfix(conf: Path, command: str) -> None:
    """``postfix -c CONF command`` under a pseudo-terminal: without syslog, Postfix prints its
    fatal errors only to a terminal."""
    proc = subprocess.run(["script", "-qec", f"postfix -c {conf} {command}", "/dev/null"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"postfix {command} failed: {proc.stdout.strip() or proc.stderr.strip()}")


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A self-signed test CA and a server certificate for localhost/127.0.0.1 signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(ca_key),
         "-out", str(ca), "-subj", "/CN=sender interop test CA")
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=localhost")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", "2", "-out", str(crt), "-extfile", str(ext))
    return ca, crt, key


@dataclass
class Relay:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    auth_port: int = 0
    ca: Path = Path()
    dovecot: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.root / "postfix"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / "box"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    @property
    def dovecot_log(self) -> Path:
        return self.root / "dovecot" / "dovecot.log"

    # --- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.root.chmod(0o755)
        self.ca, crt, key = make_ca(self.root / "tls")
        self.ports = {name: free_port() for name in PORTS}
        self.auth_port = free_port()
        self._dovecot_config()
        self._postfix_config(crt, key)

    def _dovecot_config(self) -> None:
        d = self.root / "dovecot"
        (d / "run").mkdir(parents=True)
        (d / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        (d / "dovecot.conf").write_text(f"""
base_dir = {d}/run
state_dir = {d}/run
log_path = {self.dovecot_log}
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}
}}
service auth {{
  inet_listener sasl {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}
""")

    def _postfix_config(self, crt: Path, key: Path) -> None:
        conf, queue, data = self.conf, self.root / "queue", self.root / "data"
        for p in (conf, queue, data):
            p.mkdir(parents=True)
        nobody = pwd.getpwnam("nobody")
        mail = self.root / "mail"
        mail.mkdir()
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        shutil.chown(data, "postfix")
        (conf / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
myhostname = relay.test
mydomain = test
myorigin = relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = error:interop relay delivers nowhere else
relay_transport = error:interop relay delivers nowhere else
biff = no
alias_maps =
alias_database =
virtual_mailbox_domains = example.com
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
virtual_mailbox_limit = 0
message_size_limit = 10240000
smtputf8_enable = no
smtpd_tls_cert_file = {crt}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{self.auth_port}
smtpd_sasl_auth_enable = no
smtpd_recipient_restrictions = check_recipient_access
    inline:{{ {{ rejected.example = REJECT recipient domain not accepted here }} }}
anvil_rate_time_unit = {RATE_UNIT}s
smtpd_client_connection_count_limit = 0
""")
        submission = ("-o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes -o smtpd_delay_reject=no "
                      "-o smtpd_sender_restrictions=permit_sasl_authenticated,reject "
                      "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject")
        services = {
            "open": "",
            "submission": f"-o smtpd_tls_security_level=may {submission}",
            "smtps": f"-o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt {submission}",
            "limited": f"-o smtpd_client_message_rate_limit={RATE_LIMIT} -o smtpd_client_event_limit_exceptions=",
            "small": f"-o message_size_limit={SIZE_LIMIT}",
        }
        lines = [f"127.0.0.1:{self.ports[name]} inet n - n - - smtpd {opts}".rstrip()
                 for name, opts in services.items()]
        lines += [
            "pickup unix n - n 60 1 pickup", "cleanup unix n - n - 0 cleanup", "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr", "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce", "defer unix - - n - 0 bounce", "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify", "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp", "relay unix - - n - - smtp", "showq unix n - n - - showq",
            "error unix - - n - - error", "retry unix - - n - - error", "discard unix - - n - - discard",
            "virtual unix - n n - - virtual", "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        (conf / "master.cf").write_text("\n".join(lines) + "\n")

    # --- processes ----------------------------------------------------------------------------

    def start(self) -> None:
        self.dovecot = subprocess.Popen(["dovecot", "-F", "-c", str(self.root / "dovecot" / "dovecot.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.postfix("start")

    def postfix(self, command: str) -> None:
        """``postfix -c CONF start|stop``; waits until the ``open`` port answers (or is closed)."""
        _postfix(self.conf, command)
        up = command == "start"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.listening("open") == up:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postfix {command}: port did not {'open' if up else 'close'}; see {self.maillog}")

    def listening(self, name: str) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.ports[name])) == 0

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            _postfix(self.conf, "stop")
        if self.dovecot is not None and self.dovecot.poll() is None:
            self.dovecot.terminate()
            try:
                self.dovecot.wait(10)
            except subprocess.TimeoutExpired:
                self.dovecot.kill()
                self.dovecot.wait()

    # --- what arrived -------------------------------------------------------------------------

    def delivered(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def clear(self) -> None:
        for path in self.delivered():
            path.unlink()

    def log_since(self, offset: int) -> str:
        text = self.maillog.read_text(errors="replace") if self.maillog.exists() else ""
        return text[offset:]

    def log_size(self) -> int:
        return len(self.maillog.read_text(errors="replace")) if self.maillog.exists() else 0
