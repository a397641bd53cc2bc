"""The command line (its contract: docs/cli.md): parse, configure logging, run, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, cast

from . import config
from .cli_commands import (
    cmd_bulk,
    cmd_config,
    cmd_demo,
    cmd_init,
    cmd_observe,
    cmd_pause,
    cmd_reconcile,
    cmd_recover,
    cmd_report,
    cmd_resolve,
    cmd_run,
    cmd_sink,
    cmd_status,
)
from .cli_suppress import add_parser as add_suppress_parser
from .cli_suppress import add_unsubscribe_parser, cmd_suppress, cmd_unsubscribe
from .config import setting_type
from .errors import SenderError, UsageError
from .validate import NAME, REASON, ROW_ID, FileMode, Number, flag_type

SINK_PORT = Number(0, 65535, whole=True)
REPORT_LIMIT = Number(1, 100_000, whole=True)

log = logging.getLogger("sender")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _NotBuilt:
    """Stands in for the parser of a command that is not being run: what is added to it is dropped."""

    def __getattr__(self, name: str) -> Callable[..., _NotBuilt]:
        return lambda *args, **kwargs: self


class _Commands(argparse._SubParsersAction):
    """The subcommands; with ``only`` set, just that command's parser is built. Building all 21
    costs about 11 ms, a tenth of an empty ``run --once`` (a cron line's whole cost)."""

    only: str | None = None

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.only is not None and name != self.only:
            return _NotBuilt()
        return super().add_parser(name, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``only``: a command name, when the arguments start with it (then the
    other commands' parsers are not built, and nothing else can be parsed)."""
    p = _Parser(prog="python -m sender", description="An email sender that never sends twice.")
    common = _Parser(add_help=False)
    common.add_argument("--db", type=setting_type("db"), help="queue database (default: $SENDER_DB, then sender.db)")
    common.add_argument("--config", help="config file (default: $SENDER_CONFIG, then ./sender.toml)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = cast(_Commands, p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                           parser_class=_Parser, action=_Commands))
    sub.only = only

    i = sub.add_parser("init", parents=[common], help="create or upgrade the queue database")
    i.add_argument("--mode", type=flag_type(FileMode()), metavar="OCTAL",
                   help="file mode of the queue and its -wal/-shm (default 0600; 0640 or 0660 "
                        "to share with the file's group)")

    e = sub.add_parser("enqueue", parents=[common], help="queue messages from a CSV file or flags")
    e.add_argument("--csv", metavar="FILE",
                   help="header: to,subject,body[,name,campaign,send_at,from,dedupe_key,html,priority,"
                        "expires_at,reply_to,headers,attachments]")
    e.add_argument("--to")
    e.add_argument("--subject")
    e.add_argument("--body")
    e.add_argument("--html", help="optional HTML alternative")
    e.add_argument("--name", help="recipient display name")
    e.add_argument("--campaign")
    e.add_argument("--send-at", metavar="ISO8601")
    e.add_argument("--dedupe-key")
    e.add_argument("--from", dest="sender_from", metavar="ADDR",
                   help="default From for rows without one (or $SENDER_FROM)")
    e.add_argument("--priority", choices=("high", "normal", "low"))
    e.add_argument("--expires-at", metavar="ISO8601", help="never send after this time (state expired)")
    e.add_argument("--template", action="store_true",
                   help="subject/body/html are templates: $field from CSV columns ($$ for a dollar)")
    e.add_argument("--body-file", metavar="FILE", help="read --body from a UTF-8 file")
    e.add_argument("--html-file", metavar="FILE", help="read --html from a UTF-8 file")
    e.add_argument("--reply-to", metavar="ADDR", help="Reply-To: addr or 'Name <addr>'")
    e.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                   help="an extra header (repeatable); not one the sender writes itself")
    e.add_argument("--attach", action="append", metavar="FILE",
                   help="attach a file (repeatable); stored in the queue, one copy per distinct file")
    e.add_argument("--skip-invalid", action="store_true", help="queue the good rows, list the bad ones")

    r = sub.add_parser("run", parents=[common], help="send due messages (daemon, or --once for cron)")
    r.add_argument("--smtp-host", type=setting_type("smtp_host"))
    r.add_argument("--smtp-port", type=setting_type("smtp_port"))
    r.add_argument("--once", action="store_true", help="send everything due now, then exit")
    r.add_argument("--concurrency", type=setting_type("concurrency"), help="SMTP sessions in this process (default 4)")
    r.add_argument("--worker", type=setting_type("worker"), metavar="NAME", help="worker name (default host:pid)")
    tls = r.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", default=None, dest="smtp_starttls")
    tls.add_argument("--tls", action="store_true", default=None, dest="smtp_tls")
    r.add_argument("--timeout", type=setting_type("smtp_timeout"),
                   dest="smtp_timeout", help="SMTP timeout seconds (30)")
    r.add_argument("--tls-ca", type=setting_type("smtp_tls_ca"), metavar="FILE", dest="smtp_tls_ca",
                   help="trust this CA file for the relay, on top of the system store")
    r.add_argument("--tls-insecure", action="store_true", default=None, dest="smtp_tls_insecure",
                   help="do not verify the relay's certificate (warned at every start, shown in status)")
    r.add_argument("--allow-plaintext-auth", action="store_true", default=None, dest="smtp_allow_plaintext_auth",
                   help="allow AUTH without TLS (a loopback test relay only)")
    r.add_argument("--max-hold", type=setting_type("max_hold"),
                   help="longest hold after a relay outage, seconds (300)")
    r.add_argument("--lease", type=setting_type("lease"), help="claim lease seconds (300)")
    r.add_argument("--poll", type=setting_type("poll"), help="daemon poll interval seconds (2)")
    r.add_argument("--batch", type=setting_type("batch"), help="most rows per claim (64)")
    r.add_argument("--prefetch", type=setting_type("prefetch"), metavar="N",
                   help="claims held ready per session while it sends (default 2; 0: claim only for free sessions)")
    r.add_argument("--retry-delay", type=setting_type("retry_delay"), help="first retry delay seconds (60)")
    r.add_argument("--max-attempts", type=setting_type("max_attempts"), help="attempts before failed (5)")
    r.add_argument("--grace", type=setting_type("grace"), help="seconds in-flight sends get on SIGTERM (30)")
    r.add_argument("--heartbeat", type=setting_type("heartbeat"), help="heartbeat interval seconds (5)")
    r.add_argument("--recipient-cap", type=setting_type("recipient_cap"),
                   metavar="N/PERIOD", help="at most N per recipient per period, e.g. 1/24h")
    r.add_argument("--rate", type=setting_type("rate"),
                   metavar="N/PERIOD", help="at most N per From account per period, e.g. 60/1m")
    r.add_argument("--daily-cap", type=setting_type("daily_cap"),
                   metavar="N", help="at most N per From account per 24h")
    r.add_argument("--max-age", type=setting_type("max_age"),
                   metavar="DURATION", help="never send messages older than this (e.g. 7d)")
    r.add_argument("--return-path", type=setting_type("return_path"), metavar="TEMPLATE",
                   help="envelope sender, e.g. 'bounces+{row}@example.org' (VERP: bounces map to their row)")
    r.add_argument("--pause-after-errors", type=setting_type("pause_after_errors"), metavar="N",
                   help="pause all sending after N relay errors in a row")

    v = sub.add_parser("recover", parents=[common], help="move claims with expired leases to unknown")
    v.add_argument("--json", action="store_true")

    o = sub.add_parser("resolve", parents=[common], help="settle unknown messages (operator)")
    o.add_argument("ids", nargs="+", type=flag_type(ROW_ID), metavar="ID", help="message row ids")
    o.add_argument("--as", dest="resolution", required=True, choices=("sent", "failed", "requeue"))
    o.add_argument("--reason", default="", type=flag_type(REASON), help="why, for the audit trail")
    o.add_argument("--actor", default=None, type=flag_type(NAME), help="who (default: $USER)")

    for name, text in (("pause", "stop all claiming (or one --campaign's) until resumed"),
                       ("resume", "resume claiming (or one --campaign's)")):
        x = sub.add_parser(name, parents=[common], help=text)
        x.add_argument("--campaign", type=flag_type(NAME), help="only this campaign")
        x.add_argument("--reason", default="", type=flag_type(REASON), help="why, shown in status and the monitor")
        x.add_argument("--actor", default=None, type=flag_type(NAME), help="who (default: $USER)")

    for name, text, states in (
            ("retry", "failed (or expired) messages back to scheduled, same Message-ID", "failed|expired"),
            ("cancel", "scheduled messages to cancelled: they will never be sent", "scheduled")):
        b = sub.add_parser(name, parents=[common], help=f"{text} (prints the count; --yes acts)")
        b.add_argument("--campaign", help="only this campaign")
        b.add_argument("--reply-match", metavar="TEXT", help="only messages whose last reply contains TEXT")
        b.add_argument("--since", metavar="DURATION", help="only messages changed in the last DURATION (e.g. 2h)")
        b.add_argument("--row", nargs="+", type=int, metavar="ID", help="only these message row ids")
        b.add_argument("--state", choices=states.split("|"), action="append",
                       help=f"source state ({states}; default {states.split('|')[0]})"
                            + ("; unknown is settled by resolve" if name == "retry" else ""))
        b.add_argument("--yes", action="store_true", help="act (without it: print the count only)")
        b.add_argument("--reason", default="", help="why, for the audit trail")
        b.add_argument("--actor", default=None, help="who (default: $USER)")

    c = sub.add_parser("config", parents=[common], help="show the effective configuration (no secrets)")
    c.add_argument("--show", action="store_true", default=True)

    s = sub.add_parser("status", parents=[common], help="counts per state")
    s.add_argument("--json", action="store_true")

    k = sub.add_parser("sink", parents=[common], help="local capture SMTP server (testing)")
    k.add_argument("--host", default="127.0.0.1")
    k.add_argument("--port", type=flag_type(SINK_PORT), required=True, help="0: any free port")
    k.add_argument("--maildir", required=True)

    ob = sub.add_parser("observe", parents=[common],
                        help="record what arrived in a mailbox; apply bounces, complaints, unsubscribe replies")
    _mailbox_flags(ob, required=True)
    ob.add_argument("--return-path", metavar="TEMPLATE", help="the run's VERP template, to map bounces to rows")

    rp = sub.add_parser("report", parents=[common],
                        help="find duplicates, ghosts, unknown, stale claims, missing mail")
    rp.add_argument("--since", default="24h", metavar="SPAN|TIME",
                    help="window start: 90m, 24h, 7d or an ISO 8601 time (default 24h)")
    rp.add_argument("--until", metavar="TIME|now",
                    help="window end (default now; if nothing happened in the window, the newest "
                         "activity; always now with --fail-on-anomaly)")
    _mailbox_flags(rp, required=False)
    rp.add_argument("--json", action="store_true", help="one JSON object, a list per anomaly")
    rp.add_argument("--fail-on-anomaly", action="store_true", help="exit 3 if anything is found")
    rp.add_argument("--limit", type=flag_type(REPORT_LIMIT), default=100, help="most items per anomaly (100)")

    rc = sub.add_parser("reconcile", parents=[common],
                        help="observe a mailbox; unknown messages found in it become sent")
    _mailbox_flags(rc, required=True)
    rc.add_argument("--return-path", type=setting_type("return_path"), metavar="TEMPLATE",
                    help="the run's VERP template, to map bounces to rows")
    rc.add_argument("--actor", default=None, type=flag_type(NAME), help="who (default: $USER)")

    add_suppress_parser(sub, common)
    add_unsubscribe_parser(sub, common)

    mg = sub.add_parser("migrate", parents=[common],
                        help="copy a whole queue into an empty one (an SQLite file into PostgreSQL)")
    mg.add_argument("--from", dest="source", required=True, metavar="DB", help="the queue to copy (read only)")
    mg.add_argument("--to", dest="target", required=True, metavar="DB",
                    help="an empty queue, created if missing (postgresql://user@host/dbname)")

    dm = sub.add_parser("demo", parents=[common], help="send a copy of sample.db into a local sink")
    dm.add_argument("--sample", metavar="FILE", help="queue to copy (default: sample.db)")
    dm.add_argument("--keep", metavar="DIR", help="keep the copy and the capture in DIR")
    return p


async def cmd_enqueue(args: argparse.Namespace, settings: config.Settings) -> int:
    """Imported when used: CSV reading, templates and address parsing are not ``run``'s business,
    and ``run --once`` on an empty queue is a cron line's whole cost."""
    from .cli_enqueue import cmd_enqueue as enqueue

    return await enqueue(args, settings)


async def cmd_migrate(args: argparse.Namespace, settings: config.Settings) -> int:
    """Rows, row ids and Message-IDs preserved; the target must be empty (``sender.store.moving``)."""
    import time

    from .store import moving
    from .store.engine import open_store

    if args.source == args.target:
        raise UsageError("migrate: --from and --to name the same queue")
    started = time.monotonic()
    async with open_store(args.source, readonly=True) as source, \
            open_store(args.target, create=True) as target:
        copied = await moving.move(source, target)
        where = target.path
    total = copied.get("messages", 0)
    print(f"migrated {total} message(s), {copied.get('send_log', 0)} attempt(s), "
          f"{copied.get('observations', 0)} observation(s) to {where} ({time.monotonic() - started:.1f}s)")
    return 0


def _mailbox_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    box = p.add_mutually_exclusive_group(required=required)
    box.add_argument("--maildir", metavar="DIR", help="a maildir (the sink's capture, an archive)")
    box.add_argument("--mbox", metavar="FILE", help="an mbox file (an exported folder)")
    box.add_argument("--imap", metavar="URL",
                     help="an IMAP folder, imaps://user@host/INBOX (password: $SENDER_IMAP_PASSWORD)")
    p.add_argument("--imap-ca", metavar="FILE", help="trust this CA for the IMAP server's certificate")


COMMANDS = {"init": cmd_init, "enqueue": cmd_enqueue, "run": cmd_run, "status": cmd_status,
            "recover": cmd_recover, "resolve": cmd_resolve, "pause": cmd_pause, "resume": cmd_pause,
            "retry": cmd_bulk, "cancel": cmd_bulk,
            "config": cmd_config,
            "sink": cmd_sink, "observe": cmd_observe, "report": cmd_report,
            "reconcile": cmd_reconcile, "demo": cmd_demo, "suppress": cmd_suppress,
            "unsubscribe": cmd_unsubscribe, "migrate": cmd_migrate}

_SETTING_FLAGS = ("db", "smtp_host", "smtp_port", "concurrency", "worker", "smtp_starttls", "smtp_tls",
                  "smtp_timeout", "lease", "poll", "batch", "prefetch", "retry_delay", "max_attempts", "grace",
                  "heartbeat", "recipient_cap", "rate", "daily_cap", "max_age", "pause_after_errors",
                  "smtp_tls_ca", "smtp_tls_insecure", "smtp_allow_plaintext_auth", "max_hold",
                  "return_path")


def _setup_logging(verbose: int, quiet: bool, *, buffered: bool = False) -> None:
    """Log lines to stderr; ``buffered`` (``run``): written once per turn of the daemon's loop
    (``sender.logbuffer``), warnings at once."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    if buffered:
        from .logbuffer import install

        install(sys.stderr, level)
    else:
        logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("aiosqlite").setLevel(logging.WARNING)
        logging.getLogger("mail.log").setLevel(logging.WARNING)


def _run_fast(work: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run``, on uvloop's event loop when it is installed (``pip install 'sender[fast]'``;
    measured in docs/performance.md). Without it, or with ``SENDER_EVENT_LOOP=asyncio``, the
    standard loop, which is what the tests run on."""
    choice = os.environ.get("SENDER_EVENT_LOOP", "auto")
    if choice not in ("auto", "asyncio"):
        work.close()
        raise UsageError(f"SENDER_EVENT_LOOP={choice!r}: expected auto or asyncio")
    if choice == "auto":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(work)
    return asyncio.run(work)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    _setup_logging(args.verbose, args.quiet, buffered=args.command == "run")
    try:
        flags = {name: getattr(args, name) for name in _SETTING_FLAGS if hasattr(args, name)}
        settings = config.load(flags, config_path=args.config)
        if args.command == "run":
            return _run_fast(COMMANDS[args.command](args, settings))
        return asyncio.run(COMMANDS[args.command](args, settings))
    except SenderError as exc:
        for handler in logging.getLogger().handlers:
            handler.flush()  # the log lines of the last turn come before the error line
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
