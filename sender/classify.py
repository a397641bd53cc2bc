"""The one classification table: SMTP phase x reply -> what happens to the claim.

This table is data, read by ``delivery.classify`` (the only place library exceptions are
translated) and rendered into ``docs/failures.md`` by ``render_markdown`` (a test fails when the
page and this module disagree). Regenerate the page with ``python -m sender.classify > docs/failures.md``.

Actions:

* ``ok``: the session goes on to the next phase.
* ``sent``: the relay accepted the message.
* ``retry``: provably not delivered, about this message: attempt counted, backoff, ``failed``
  after ``--max-attempts``.
* ``failed``: the relay refused this message or recipient for good.
* ``unknown``: the data may have been accepted; never resent automatically.
* ``stop``: a refusal of the client or account: claims released, no attempt counted, sending
  stops with the reason (``run --once`` exits 1; the daemon pauses all sending).
* ``outage``: the relay is not there: claims released, no attempt, one backoff per round.
* ``throttle``: the relay asks us to slow down: claims released with a due time, no attempt,
  the process paces itself (AIMD).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Action = Literal["ok", "sent", "retry", "failed", "unknown", "stop", "outage", "throttle"]

PHASES: tuple[str, ...] = ("connect", "greeting", "ehlo", "tls", "auth", "mail", "rcpt", "data", "dot")
REPLIES: tuple[str, ...] = ("2xx", "4xx", "5xx", "lost", "timeout", "malformed")

PHASE_TEXT = {
    "connect": "TCP connect (and the TLS handshake with `--tls`)",
    "greeting": "the server's 220 greeting",
    "ehlo": "EHLO (HELO if EHLO is refused with 500/502)",
    "tls": "STARTTLS and its handshake",
    "auth": "AUTH (one mechanism, once per process)",
    "mail": "MAIL FROM (with `SIZE=`)",
    "rcpt": "RCPT TO",
    "data": "the DATA command, up to the server's 354",
    "dot": "after the end-of-data marker (the final reply)",
}

REPLY_TEXT = {
    "2xx": "a 2xx reply",
    "4xx": "a 4xx reply",
    "5xx": "a 5xx reply",
    "lost": "the connection refused, reset or closed",
    "timeout": "no reply within `--timeout`",
    "malformed": "a line that is not a 2xx/4xx/5xx reply (garbage, 1xx, 3xx where not expected, 999)",
}

ACTION_TEXT: dict[Action, str] = {
    "ok": "the session goes on",
    "sent": "`sent`",
    "retry": "`scheduled`, attempt counted, backoff (`failed` after `--max-attempts`)",
    "failed": "`failed`, the reply stored",
    "unknown": "`unknown` (may have been delivered; never resent automatically)",
    "stop": "claims released to `scheduled`, no attempt; sending stops with the reason "
            "(`run --once` exits 1, the daemon pauses all sending)",
    "outage": "claims released, no attempt; one backoff per round (1-2 s, doubling, capped by "
              "`--max-hold`); one session probes, the rest follow when it gets in",
    "throttle": "claims released with a due time, no attempt; fewer sessions and wider spacing, "
                "additive speed-up on success",
}

_ = "-"  # not possible in this phase
TABLE: dict[str, dict[str, Action | str]] = {
    #            2xx      4xx         5xx        lost        timeout     malformed
    "connect":  dict(zip(REPLIES, (_, _, _, "outage", "outage", _), strict=True)),
    "greeting": dict(zip(REPLIES, ("ok", "stop", "stop", "outage", "outage", "stop"), strict=True)),
    "ehlo":     dict(zip(REPLIES, ("ok", "stop", "stop", "outage", "outage", "stop"), strict=True)),
    "tls":      dict(zip(REPLIES, ("ok", "stop", "stop", "outage", "outage", "stop"), strict=True)),
    "auth":     dict(zip(REPLIES, ("ok", "stop", "stop", "outage", "outage", "stop"), strict=True)),
    "mail":     dict(zip(REPLIES, ("ok", "outage", "stop", "outage", "outage", "outage"), strict=True)),
    "rcpt":     dict(zip(REPLIES, ("ok", "retry", "failed", "retry", "retry", "retry"), strict=True)),
    "data":     dict(zip(REPLIES, ("ok", "retry", "failed", "retry", "retry", "retry"), strict=True)),
    "dot":      dict(zip(REPLIES, ("sent", "retry", "failed", "unknown", "unknown", "unknown"), strict=True)),
}


@dataclass(frozen=True)
class Override:
    """A reply that means more than its class; checked in order, before ``TABLE``."""

    phases: tuple[str, ...]
    codes: tuple[int, ...]  # empty: any 4xx that ``throttling`` recognises
    action: Action
    why: str


_MESSAGE_PHASES = ("mail", "rcpt", "data", "dot")
OVERRIDES: tuple[Override, ...] = (
    Override(PHASES[1:], (530, 535, 538), "stop", "authentication required, failed, or needs encryption"),
    Override(("greeting", "ehlo"), (421,), "outage", "service not available: the relay is closing"),
    Override(("tls", "auth", *_MESSAGE_PHASES), (421,), "throttle", "the relay closes the line to slow us down"),
    Override(("mail",), (552,), "failed", "the message exceeds the relay's size limit"),
    Override(("dot",), (221,), "unknown", "a closing reply is not a reply to the data"),
    Override(_MESSAGE_PHASES, (), "throttle",
             "4xx whose enhanced code is 4.7.x or whose text says rate / too many / too much / "
             "slow down / try again later"),
)

# Refusals that never reach a reply: decided by the client.
CLIENT_SIDE: tuple[tuple[str, str, str], ...] = (
    ("start", "relay host that cannot be a host name (`smtp..example.org`), bad port",
     "refused at start, exit 2, nothing touched"),
    ("connect", "host name does not resolve (DNS: no such name)", "stop (\"check --smtp-host\")"),
    ("connect", "temporary DNS failure (EAI_AGAIN)", "outage"),
    ("tls", "certificate verify failed, TLS handshake refused", "stop (\"use --tls-ca FILE\")"),
    ("tls", "`--starttls` given and the relay does not offer STARTTLS", "stop"),
    ("auth", "credentials set, no TLS (and no `--allow-plaintext-auth`)", "stop: credentials never cross in clear"),
    ("auth", "credentials set, the relay offers no AUTH mechanism we support", "stop"),
    ("auth", "an earlier login of this process failed", "stop, without trying again (one failed login per process)"),
    ("mail", "message larger than the relay's EHLO `SIZE`", "failed before MAIL FROM: nothing transmitted"),
    ("mail", "the message cannot be built (bad address, bad header)", "failed"),
)

_THROTTLE_TEXT = re.compile(r"\brate\b|rate.limit|too many|too much|slow down|try again later", re.IGNORECASE)


def throttling(code: int, text: str) -> bool:
    """A 4xx that asks the client to slow down rather than saying anything about the message."""
    return 400 <= code < 500 and (text.lstrip().startswith("4.7.") or bool(_THROTTLE_TEXT.search(text)))


def reply_class(code: int | None) -> str:
    if code is None or not 200 <= code < 600 or 300 <= code < 400:
        return "malformed"
    return f"{code // 100}xx"


def decide(phase: str, reply: str, code: int | None = None, text: str = "") -> Action:
    """The action for ``reply`` (a ``REPLIES`` key) in ``phase``; ``code``/``text`` for overrides."""
    if code is not None and reply in ("2xx", "4xx", "5xx"):
        for rule in OVERRIDES:
            if phase not in rule.phases:
                continue
            if code in rule.codes or (not rule.codes and throttling(code, text)):
                return rule.action
    action = TABLE[phase][reply]
    if action == _:
        raise ValueError(f"no reply {reply} is possible at {phase}")
    return action  # type: ignore[return-value]


def render_markdown() -> str:
    """``docs/failures.md``, generated from the tables above."""
    out = ["# Relay failures: what each reply does", "",
           "<!-- generated by `python -m sender.classify > docs/failures.md`; "
           "tests/test_classify.py fails when this page and sender/classify.py disagree -->", "",
           "Every SMTP failure is classified once, by the phase it happened in and the reply, into one "
           "action. The table is data in `sender/classify.py`; this page is generated from it.", "",
           "## Actions", ""]
    out += [f"- **{name}**: {text}" for name, text in ACTION_TEXT.items()]
    out += ["", "## Phase x reply", "", "| phase | " + " | ".join(REPLIES) + " |",
            "|---|" + "---|" * len(REPLIES)]
    for phase in PHASES:
        out.append(f"| {phase} | " + " | ".join(str(TABLE[phase][r]) for r in REPLIES) + " |")
    out += ["", "`-`: not possible in that phase.", "", "Phases:", ""]
    out += [f"- `{p}`: {t}" for p, t in PHASE_TEXT.items()]
    out += ["", "Replies:", ""]
    out += [f"- `{r}`: {t}" for r, t in REPLY_TEXT.items()]
    out += ["", "## Replies that mean more than their class (checked first, in this order)", "",
            "| phases | reply | action | why |", "|---|---|---|---|"]
    for rule in OVERRIDES:
        codes = ", ".join(map(str, rule.codes)) or "4xx throttle"
        out.append(f"| {', '.join(rule.phases)} | {codes} | {rule.action} | {rule.why} |")
    out += ["", "## Decided by the client, before or without a reply", "",
            "| phase | condition | action |", "|---|---|---|"]
    out += [f"| {p} | {c} | {a} |" for p, c, a in CLIENT_SIDE]
    out += ["", "## Pace, outages and stops", "",
            "- **Throttle** (AIMD, per process): a throttle halves the active sessions (at least one) and the "
            "rate of message starts (the first one: at most 4 a second; at most one start per 30 s), once per "
            "burst; each accepted message adds a session back and half a message per second, until the pace is "
            "unlimited again. A released claim is due after the relay's "
            "\"try again in N\" hint, or after twice the spacing. `status --json` shows the current pace "
            "under `pace`. `--max-age` still expires a message that waited too long.",
            "- **Outage**: all sessions failing together count once (a round). The hold starts at 1-2 s and "
            "doubles per round, capped by `--max-hold` (300 s). After a hold one session probes; when it gets "
            "in, the others follow at once. `run --once` releases the claims and exits 1.",
            "- **Stop**: `run --once` exits 1 with one line saying what to fix; the daemon sets the global "
            "pause flag with the relay's reply as the reason (`status`, the monitor and the log show it) and "
            "resumes when an operator runs `python -m sender resume`. After a failed login the process never "
            "tries AUTH again: at most one failed login per `run` process.",
            "",
            "## TLS and credentials", "",
            "- Without `--tls`, the sender upgrades with STARTTLS whenever the relay offers it; `--starttls` "
            "makes it required.",
            "- Credentials (`SENDER_SMTP_USER` / `SENDER_SMTP_PASSWORD` or `[smtp] user/password`) are never "
            "sent over an unencrypted connection, unless `--allow-plaintext-auth` (for a loopback test relay; "
            "logged as a warning at every start).",
            "- `--tls-ca FILE` (or `[smtp] tls_ca`) trusts a private CA for this relay, on top of the system "
            "store. `--tls-insecure` turns verification off: a warning at every start, and `status` shows it.",
            "- AUTH uses one mechanism, the strongest the relay offers of CRAM-MD5, PLAIN, LOGIN, and one "
            "session logs in before the others try, so a wrong password costs one failed login per process.",
            "- In `sender.toml`: `[smtp] tls_ca`, `tls_insecure`, `allow_plaintext_auth`; `[run] max_hold`. "
            "The environment: `SENDER_SMTP_TLS_CA`.",
            "",
            "## Proved by", "",
            "- `tests/test_classify.py`: every cell and override of the tables above against a scripted relay "
            "(state, attempts counted, SendLog status, what the relay received), and this page against the code.",
            "- `tests/test_relay.py`: outage rounds and `--max-hold`, throttling, one login per process, no "
            "credentials in clear, SIZE, the daemon's self-pause, `--once` exit 1, a bad host or port at start.",
            "- `tests/test_tls_auth.py`: STARTTLS, implicit TLS, `--tls-ca`, `--tls-insecure`, certificate errors.",
            "- `tests/interop/`: a private Postfix with Dovecot SASL on loopback (`python -m pytest tests/interop`; "
            "it skips without `postfix`/`dovecot` on PATH or without root, and fails instead when `CI` is set): "
            "500 non-ASCII messages once each, STARTTLS + AUTH with `--tls-ca`, `--tls` on a wrapper port, a wrong "
            "password (one failed login), AUTH required without credentials (paused), `postfix stop` under the "
            "daemon, an anvil rate limit, `message_size_limit`, a rejected recipient domain.",
            ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
