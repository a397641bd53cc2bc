"""Settings, built once from ``sender.toml`` + ``SENDER_*`` environment + flags, then passed down.

Precedence, lowest to highest: defaults, the config file, the environment, command-line flags.
SMTP credentials come only from the environment or the config file, never from the queue
database, and ``Settings.__repr__`` hides the password so it cannot reach a log line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UsageError
from .policy import Policy
from .policy import from_settings as policy_from

DEFAULT_DB = "sender.db"


@dataclass(frozen=True)
class Settings:
    db: str = DEFAULT_DB
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: bool = False
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_timeout: float = 30.0
    smtp_tls_ca: str | None = None
    smtp_tls_insecure: bool = False
    smtp_allow_plaintext_auth: bool = False
    max_hold: float = 300.0
    concurrency: int = 4
    worker: str = ""
    batch: int = 64
    prefetch: int = 0
    poll: float = 2.0
    lease: float = 300.0
    heartbeat: float = 5.0
    retry_delay: float = 60.0
    max_attempts: int = 5
    grace: float = 30.0
    domain: str | None = None
    sender_from: str | None = None
    recipient_cap: str | None = None
    rate: str | None = None
    daily_cap: int | None = None
    max_age: str | None = None
    pause_after_errors: int = 0
    campaigns: dict[str, dict[str, Any]] = field(default_factory=dict)

    def policy(self) -> Policy:
        """The sending policy these settings describe (validated: a bad rule is exit 2)."""
        return policy_from(self.recipient_cap, self.rate, self.daily_cap, self.max_age, self.campaigns)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as a dict, safe to print."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["smtp_password"]:
            out["smtp_password"] = "***"
        return out


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_ENV = {
    "SENDER_DB": "db",
    "SENDER_SMTP_HOST": "smtp_host",
    "SENDER_SMTP_PORT": "smtp_port",
    "SENDER_SMTP_USER": "smtp_user",
    "SENDER_SMTP_PASSWORD": "smtp_password",
    "SENDER_SMTP_TLS": "smtp_tls",
    "SENDER_SMTP_STARTTLS": "smtp_starttls",
    "SENDER_SMTP_TLS_CA": "smtp_tls_ca",
    "SENDER_DOMAIN": "domain",
    "SENDER_FROM": "sender_from",
}


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds.get(name)
    if kind is None:
        raise UsageError(f"unknown setting {name!r}")
    if name == "campaigns":
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise UsageError("config: [campaigns.NAME] sections expected")
        return value
    if value is None:
        return None
    try:
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind in ("int", "int | None"):
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"setting {name}: not a number: {value!r}") from exc
    return None if value is None else str(value)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config {path}: {exc}") from exc
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "campaigns":
            flat["campaigns"] = value
        elif isinstance(value, dict):
            prefix = "" if key in ("run", "sender", "policy") else f"{key}_"
            for sub, v in value.items():
                flat[f"{prefix}{sub}".replace("-", "_")] = v
        else:
            flat[key.replace("-", "_")] = value
    return flat


def load(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None,
         config_path: str | None = None) -> Settings:
    """Build the one ``Settings`` of a process. ``flags`` holds only options the user gave."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    path = config_path or env.get("SENDER_CONFIG")
    if path:
        if not Path(path).is_file():
            raise UsageError(f"config file not found: {path}")
        values.update(_from_file(Path(path)))
    elif Path("sender.toml").is_file():
        values.update(_from_file(Path("sender.toml")))
    for var, name in _ENV.items():
        if env.get(var):
            values[name] = env[var]
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    if not settings.worker:
        settings = replace(settings, worker=default_worker_name())
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.concurrency < 1 or s.concurrency > 256:
        raise UsageError("--concurrency must be between 1 and 256")
    if s.batch < 1:
        raise UsageError("--batch must be at least 1")
    if not 0 <= s.prefetch <= 4:
        raise UsageError("--prefetch must be between 0 and 4")
    if s.lease <= 0 or s.poll <= 0 or s.smtp_timeout <= 0:
        raise UsageError("--lease, --poll and --timeout must be positive")
    if s.max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    if s.pause_after_errors < 0:
        raise UsageError("--pause-after-errors must be 0 (off) or more")
    s.policy()
    if s.smtp_tls and s.smtp_starttls:
        raise UsageError("--tls and --starttls are mutually exclusive")
    if not 0 < s.smtp_port < 65536:
        raise UsageError(f"bad SMTP port {s.smtp_port}")
    _check_relay(s)


def _check_relay(s: Settings) -> None:
    """The relay's host name, the outage hold and the CA file: refused at start, before any claim."""
    check_host(s.smtp_host)
    if not (s.max_hold == s.max_hold and 1.0 <= s.max_hold <= 86400.0):
        raise UsageError("--max-hold must be between 1 and 86400 seconds")
    if s.smtp_tls_ca and not Path(s.smtp_tls_ca).is_file():
        raise UsageError(f"--tls-ca {s.smtp_tls_ca}: no such file")


def check_host(host: str) -> None:
    """A relay host that cannot be a host name is a usage error at start (exit 2)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        ascii_name = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise UsageError(f"--smtp-host {host!r} is not a valid host name ({exc})") from exc
    labels = ascii_name[:-1].split(".") if ascii_name.endswith(".") else ascii_name.split(".")
    if not ascii_name or len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UsageError(f"--smtp-host {host!r} is not a valid host name")


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
