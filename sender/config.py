"""Settings, built once from ``sender.toml`` + ``SENDER_*`` environment + flags, then passed down.

Precedence, lowest to highest: defaults, the config file, the environment, command-line flags.
SMTP credentials come only from the environment or the config file, never from the queue
database, and ``Settings.__repr__`` hides the password so it cannot reach a log line.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .fence import margin as fence_margin
from .policy import Policy
from .policy import from_settings as policy_from
from .validate import HOST_NAME, PORT, Check, Flag, Number, Text, flag_type

if TYPE_CHECKING:
    from .feedback import Rules as FeedbackRules

log = logging.getLogger(__name__)

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
    prefetch: int = 2  # claims waiting per session: chosen by measurement (docs/performance.md)
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
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    unsubscribe_secret: str | None = field(default=None, repr=False)
    return_path: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key_file: str | None = None
    soft_bounce_limit: int = 3
    soft_bounce_days: float = 7.0

    def policy(self) -> Policy:
        """The sending policy these settings describe (validated: a bad rule is exit 2)."""
        return policy_from(self.recipient_cap, self.rate, self.daily_cap, self.max_age, self.campaigns)

    def feedback_rules(self) -> FeedbackRules:
        """What observe needs to act on unsubscribe replies, bounces and complaints."""
        from .feedback import Rules as FeedbackRules  # observe only: keeps ``email`` out of run's start

        return FeedbackRules(self.unsubscribe_secret, self.return_path, self.soft_bounce_limit,
                             self.soft_bounce_days * 86400.0)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as a dict, safe to print."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["smtp_password"]:
            out["smtp_password"] = "***"
        if out["unsubscribe_secret"]:
            out["unsubscribe_secret"] = "***"
        else:
            del out["unsubscribe_secret"]
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
    "SENDER_UNSUBSCRIBE_URL": "unsubscribe_url",
    "SENDER_UNSUBSCRIBE_MAILTO": "unsubscribe_mailto",
    "SENDER_UNSUBSCRIBE_SECRET": "unsubscribe_secret",
    "SENDER_RETURN_PATH": "return_path",
    "SENDER_DKIM_DOMAIN": "dkim_domain",
    "SENDER_DKIM_SELECTOR": "dkim_selector",
    "SENDER_DKIM_KEY_FILE": "dkim_key_file",
}


# Every setting's type and range: the one table argparse (``flag_type``) and the loader share,
# and the one docs/configuration.md shows. A field missing here is checked by its declared type.
SPECS: dict[str, Check] = {
    "db": Text(path=True),
    "smtp_host": Text(longest=253),
    "smtp_port": PORT,
    "smtp_tls": Flag(),
    "smtp_starttls": Flag(),
    "smtp_user": Text(empty=True, longest=512),
    "smtp_password": Text(empty=True, longest=1024, secret=True),
    "smtp_timeout": Number(0.1, 3600, unit="seconds"),
    "smtp_tls_ca": Text(path=True),
    "smtp_tls_insecure": Flag(),
    "smtp_allow_plaintext_auth": Flag(),
    "max_hold": Number(1, 86400, unit="seconds"),
    "concurrency": Number(1, 256, whole=True),
    "worker": Text(longest=200),
    "batch": Number(1, 10_000, whole=True),
    "prefetch": Number(0, 4, whole=True),
    "poll": Number(0.01, 3600, unit="seconds"),
    "lease": Number(0.5, 7 * 86400, unit="seconds"),
    "heartbeat": Number(0.05, 3600, unit="seconds"),
    "retry_delay": Number(1, 6 * 3600, unit="seconds"),
    "max_attempts": Number(1, 100, whole=True),
    "grace": Number(0, 3600, unit="seconds"),
    "domain": Text(shape=HOST_NAME),
    "sender_from": Text(longest=998),
    "recipient_cap": Text(longest=100),
    "rate": Text(longest=100),
    "daily_cap": Number(1, 10**9, whole=True),
    "max_age": Text(longest=100),
    "pause_after_errors": Number(0, 10**6, whole=True),
    "unsubscribe_url": Text(longest=2000),
    "unsubscribe_mailto": Text(longest=320),
    "unsubscribe_secret": Text(longest=1024, secret=True),
    "return_path": Text(longest=320),
    "dkim_domain": Text(shape=HOST_NAME),
    "dkim_selector": Text(longest=63),
    "dkim_key_file": Text(path=True),
    "soft_bounce_limit": Number(1, 1000, whole=True),
    "soft_bounce_days": Number(0.01, 3650, unit="days"),
}
_BY_TYPE: dict[str, Check] = {"bool": Flag(), "int": Number(0, 2**31 - 1, whole=True),
                              "float": Number(0, 10**9)}


def spec(name: str) -> Check:
    """The checker of one setting (by its declared type when it has no entry in ``SPECS``)."""
    if name in SPECS:
        return SPECS[name]
    kind = {f.name: f.type for f in fields(Settings)}.get(name)
    if kind is None:
        raise UsageError(f"unknown setting {name!r}")
    return _BY_TYPE.get(str(kind).removesuffix(" | None"), Text())


def setting_type(name: str) -> Callable[[str], Any]:
    """argparse ``type=`` for the flag of setting ``name``."""
    return flag_type(spec(name))


def _coerce(name: str, value: Any, source: str) -> Any:
    if name == "campaigns":
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise UsageError(f"{source}: [campaigns.NAME] sections expected")
        return value
    check = spec(name)
    if name == "max_age" and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(Number(1, 10**10, unit="seconds")(value))
    try:
        return check(value)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None


def _from_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's settings, flattened (``[smtp] host`` is ``smtp_host``), and each one's key as written."""
    import tomllib  # only when there is a file: most runs have none

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config {path}: {exc}") from exc
    flat: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in data.items():
        if key == "campaigns":
            flat["campaigns"], keys["campaigns"] = value, key
        elif isinstance(value, dict):
            prefix = "" if key in ("run", "sender", "policy") else f"{key}_"
            for sub, v in value.items():
                name = f"{prefix}{sub}".replace("-", "_")
                flat[name], keys[name] = v, f"{key}.{sub}"
        else:
            name = key.replace("-", "_")
            flat[name], keys[name] = value, key
    return flat, keys


def _warn_if_readable(path: Path, values: dict[str, Any]) -> None:
    """Like ssh with a private key: a password in a file others can read draws a warning."""
    if not values.get("smtp_password"):
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning("config %s holds the SMTP password and is readable by %s (mode %04o): "
                    "chmod 600 %s", path, "others" if mode & 0o007 else "its group", mode, path)


_FLAG_NAMES = {"smtp_timeout": "--timeout", "smtp_tls": "--tls", "smtp_starttls": "--starttls",
               "smtp_tls_ca": "--tls-ca", "smtp_tls_insecure": "--tls-insecure",
               "smtp_allow_plaintext_auth": "--allow-plaintext-auth", "sender_from": "--from"}


def load(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None,
         config_path: str | None = None) -> Settings:
    """Build the one ``Settings`` of a process. ``flags`` holds only options the user gave.

    Every value is checked where it comes from (``SPECS``), so an error names its source."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    path = config_path or env.get("SENDER_CONFIG") or ("sender.toml" if Path("sender.toml").is_file() else None)
    if path:
        if not Path(path).is_file():
            raise UsageError(f"config file not found: {path}")
        raw, keys = _from_file(Path(path))
        _warn_if_readable(Path(path), raw)
        values.update({k: _coerce(k, v, f"config {path}: {keys[k]}") for k, v in raw.items()})
    for var, name in _ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var], var)
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, _FLAG_NAMES.get(name, "--" + name.replace("_", "-")))
    settings = Settings(**values)
    if not settings.worker:
        settings = replace(settings, worker=default_worker_name())
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    """The rules between settings; each value's own range was checked by ``SPECS``."""
    if s.heartbeat >= s.lease - fence_margin(s.lease):
        raise UsageError(f"--heartbeat ({s.heartbeat:g}s) must be shorter than --lease ({s.lease:g}s) less "
                         f"the fence's margin ({fence_margin(s.lease):g}s), or live claims would lapse "
                         "between heartbeats")
    s.policy()
    if s.smtp_tls and s.smtp_starttls:
        raise UsageError("--tls and --starttls are mutually exclusive")
    _check_relay(s)
    if s.unsubscribe_url or s.unsubscribe_mailto:
        from .unsubscribe import check_settings

        check_settings(s.unsubscribe_url, s.unsubscribe_mailto, s.unsubscribe_secret)
    if s.return_path is not None:
        _check_return_path(s.return_path)
    if s.dkim_domain or s.dkim_selector or s.dkim_key_file:
        from .dkim_sign import signer

        signer(s.dkim_domain, s.dkim_selector, s.dkim_key_file)


def _check_return_path(template: str) -> None:
    from .errors import InputError
    from .intake import check_address

    if template.count("{row}") != 1:
        raise UsageError(f"--return-path {template!r}: must contain {{row}} once (e.g. bounces+{{row}}@example.org)")
    try:
        check_address("return path", template.replace("{row}", "1"))
    except InputError as exc:
        raise UsageError(f"--return-path: {exc.reason}") from None


def _check_relay(s: Settings) -> None:
    """The relay's host name and the CA file: refused at start, before any claim."""
    check_host(s.smtp_host)
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
