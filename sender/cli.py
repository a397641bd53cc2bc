"""The command line (the contract in DESIGN.md): parse, configure logging, run, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any, NoReturn

from . import config, queries, queue
from .config import Settings
from .db import SCHEMA_VERSION, open_db
from .errors import InputError, SenderError, UsageError
from .intake import NewMessage, make_message, read_csv
from .templates import Templates

log = logging.getLogger("sender")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sender", description="An email sender that never sends twice.")
    common = _Parser(add_help=False)
    common.add_argument("--db", help="queue database (default: $SENDER_DB, then sender.db)")
    common.add_argument("--config", help="config file (default: $SENDER_CONFIG, then ./sender.toml)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("init", parents=[common], help="create or upgrade the queue database")

    e = sub.add_parser("enqueue", parents=[common], help="queue messages from a CSV file or flags")
    e.add_argument("--csv", metavar="FILE", help="header: to,subject,body[,name,campaign,send_at,from,dedupe_key,html]")
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
    e.add_argument("--skip-invalid", action="store_true", help="queue the good rows, list the bad ones")

    r = sub.add_parser("run", parents=[common], help="send due messages (daemon, or --once for cron)")
    r.add_argument("--smtp-host")
    r.add_argument("--smtp-port", type=int)
    r.add_argument("--once", action="store_true", help="send everything due now, then exit")
    r.add_argument("--concurrency", type=int, help="SMTP sessions in this process (default 4)")
    r.add_argument("--worker", metavar="NAME", help="worker name (default host:pid)")
    tls = r.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", default=None, dest="smtp_starttls")
    tls.add_argument("--tls", action="store_true", default=None, dest="smtp_tls")
    r.add_argument("--timeout", type=float, dest="smtp_timeout", help="SMTP timeout seconds (30)")
    r.add_argument("--lease", type=float, help="claim lease seconds (300)")
    r.add_argument("--poll", type=float, help="daemon poll interval seconds (2)")
    r.add_argument("--batch", type=int, help="most rows per claim (64)")
    r.add_argument("--retry-delay", type=float, help="first retry delay seconds (60)")
    r.add_argument("--max-attempts", type=int, help="attempts before failed (5)")
    r.add_argument("--grace", type=float, help="seconds in-flight sends get on SIGTERM (30)")
    r.add_argument("--heartbeat", type=float, help="heartbeat interval seconds (5)")
    r.add_argument("--recipient-cap", metavar="N/PERIOD", help="at most N per recipient per period, e.g. 1/24h")
    r.add_argument("--rate", metavar="N/PERIOD", help="at most N per From account per period, e.g. 60/1m")
    r.add_argument("--daily-cap", type=int, metavar="N", help="at most N per From account per 24h")
    r.add_argument("--max-age", metavar="DURATION", help="never send messages older than this (e.g. 7d)")
    r.add_argument("--pause-after-errors", type=int, metavar="N", help="pause all sending after N relay errors in a row")

    v = sub.add_parser("recover", parents=[common], help="move claims with expired leases to unknown")
    v.add_argument("--json", action="store_true")

    o = sub.add_parser("resolve", parents=[common], help="settle unknown messages (operator)")
    o.add_argument("ids", nargs="+", type=int, metavar="ID", help="message row ids")
    o.add_argument("--as", dest="resolution", required=True, choices=("sent", "failed", "requeue"))
    o.add_argument("--reason", default="", help="why, for the audit trail")
    o.add_argument("--actor", default=None, help="who (default: $USER)")

    for name, text in (("pause", "stop all claiming (or one --campaign's) until resumed"),
                       ("resume", "resume claiming (or one --campaign's)")):
        x = sub.add_parser(name, parents=[common], help=text)
        x.add_argument("--campaign", help="only this campaign")
        x.add_argument("--reason", default="", help="why, shown in status and the monitor")
        x.add_argument("--actor", default=None, help="who (default: $USER)")

    c = sub.add_parser("config", parents=[common], help="show the effective configuration (no secrets)")
    c.add_argument("--show", action="store_true", default=True)

    s = sub.add_parser("status", parents=[common], help="counts per state")
    s.add_argument("--json", action="store_true")

    k = sub.add_parser("sink", parents=[common], help="local capture SMTP server (testing)")
    k.add_argument("--host", default="127.0.0.1")
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--maildir", required=True)

    ob = sub.add_parser("observe", parents=[common], help="record what arrived in a mailbox")
    _mailbox_flags(ob, required=True)

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
    rp.add_argument("--limit", type=int, default=100, help="most items per anomaly (100)")

    rc = sub.add_parser("reconcile", parents=[common],
                        help="observe a mailbox; unknown messages found in it become sent")
    _mailbox_flags(rc, required=True)
    rc.add_argument("--actor", default=None, help="who (default: $USER)")

    dm = sub.add_parser("demo", parents=[common], help="send a copy of sample.db into a local sink")
    dm.add_argument("--sample", metavar="FILE", help="queue to copy (default: sample.db)")
    dm.add_argument("--keep", metavar="DIR", help="keep the copy and the capture in DIR")
    return p


def _mailbox_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    box = p.add_mutually_exclusive_group(required=required)
    box.add_argument("--maildir", metavar="DIR", help="a maildir (the sink's capture, an archive)")
    box.add_argument("--mbox", metavar="FILE", help="an mbox file (an exported folder)")


# --- commands ----------------------------------------------------------------------------------

def _check_db_dir(path: str) -> None:
    """A missing folder is a usage error (exit 2), found before SQLite fails to create the file."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: folder {folder} does not exist")


async def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    _check_db_dir(settings.db)
    async with open_db(settings.db, create=True):
        pass
    print(f"{settings.db}: queue database ready (schema version {SCHEMA_VERSION})")
    return 0


def _flag_row(args: argparse.Namespace) -> dict[str, str | None]:
    return {"to": args.to, "subject": args.subject, "body": args.body, "html": args.html,
            "name": args.name, "campaign": args.campaign, "send_at": args.send_at,
            "dedupe_key": args.dedupe_key, "priority": args.priority, "expires_at": args.expires_at}


def _read_text_flags(args: argparse.Namespace) -> None:
    for flag, attr in (("--body-file", "body"), ("--html-file", "html")):
        path = getattr(args, f"{attr}_file")
        if path is None:
            continue
        if getattr(args, attr) is not None:
            raise UsageError(f"give --{attr} or {flag}, not both")
        try:
            setattr(args, attr, Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{flag} {path}: {exc}") from exc


async def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    default_from = args.sender_from or settings.sender_from
    from_addr = from_name = None
    if default_from:
        from .intake import parse_from
        try:
            from_addr, from_name = parse_from(default_from)
        except InputError as exc:
            raise UsageError(f"--from/SENDER_FROM: {exc.reason.removeprefix('from: ')}") from None
    _read_text_flags(args)
    templates = Templates(args.subject, args.body, args.html) if args.template else None
    if templates is not None:
        try:
            templates.check()
        except InputError as exc:
            raise UsageError(exc.reason) from None
    if args.csv and args.to is not None:
        raise UsageError("give either --csv or --to, not both")
    if args.csv and templates is None and (args.subject is not None or args.body is not None):
        raise UsageError("--subject/--body with --csv need --template (they apply to every row)")
    if args.csv:
        rows, total = _validated_csv(args.csv, args.skip_invalid, has_default_from=from_addr is not None,
                                     templates=templates)
    elif args.to is not None or args.subject is not None or args.body is not None:
        flags = _flag_row(args)
        if templates is not None:
            flags = {**flags, "subject": None, "body": None, "html": None}
        one = make_message(flags, default_campaign=args.campaign, templates=templates)
        if one.from_addr is None and from_addr is None:
            raise UsageError("no From address: pass --from ADDR or set SENDER_FROM")
        rows, total = iter([one]), 1
    else:
        raise UsageError("nothing to enqueue: give --csv FILE or --to, --subject and --body")
    started = time.monotonic()
    _check_db_dir(settings.db)
    async with open_db(settings.db, create=True) as db:
        with _progress(total) as advance:
            result = await queue.enqueue(db, rows, from_addr=from_addr, from_name=from_name,
                                         domain=settings.domain, now=time.time(), progress=advance)
    print(f"queued {result.queued}, skipped {result.skipped} already queued "
          f"({time.monotonic() - started:.1f}s)")
    return 0


def _validated_csv(path: str, skip_invalid: bool, *, has_default_from: bool,
                   templates: Templates | None = None) -> tuple[Iterator[NewMessage], int]:
    """Pass 1 reads the whole file and checks every row; pass 2 (the iterator) streams the good ones."""
    bad: list[InputError] = []
    good = 0
    for item in read_csv(path, templates):
        if isinstance(item, NewMessage) and item.from_addr is None and not has_default_from:
            item = InputError("from: empty, and no default (pass --from ADDR or set SENDER_FROM)", item.line)
        if isinstance(item, InputError):
            bad.append(item)
            if not skip_invalid and len(bad) > 100:
                break
        else:
            good += 1
    if bad and not skip_invalid:
        over = "at least " if len(bad) > 100 else ""
        more = f" (and {over}{len(bad) - 1} more bad rows; nothing was queued)" if len(bad) > 1 \
            else " (nothing was queued)"
        raise UsageError(f"{path}: {bad[0]}{more}")
    for err in bad:
        print(f"skipped invalid {path}: {err}", file=sys.stderr)

    def good_rows() -> Iterator[NewMessage]:
        for item in read_csv(path, templates):
            if isinstance(item, NewMessage) and (item.from_addr or has_default_from):
                yield item
    return good_rows(), good


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A rich progress bar on a terminal for large imports; silent otherwise."""
    if total < 5000 or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("enqueue", total=total)
        yield lambda n: bar.advance(task, n)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from .daemon import Daemon
    from .delivery import Session

    async with open_db(settings.db) as db:
        daemon = Daemon(db, settings, [Session(settings) for _ in range(settings.concurrency)])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        try:
            stats = await daemon.run(once=args.once)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    if stats.session_errors and stats.sent == 0 and stats.released:
        print(f"error: could not deliver: {stats.session_errors[-1]}", file=sys.stderr)
        return 1
    return 0


async def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    async with open_db(settings.db) as db, db.write():
        expired = await queue.expire_leases(db, time.time())
    for e in expired:
        log.warning("row=%s mid=%s worker=%s sending->unknown reason=lease expired (recover)",
                    e.id, e.mid, e.worker)
    if args.json:
        print(json.dumps([{"id": e.id, "message_id": e.mid, "worker": e.worker} for e in expired]))
    else:
        print(f"{len(expired)} expired claim(s) moved to unknown")
    return 0


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    from . import admin

    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_db(settings.db) as db:
        n = await admin.resolve(db, args.ids, args.resolution, actor=actor, now=time.time(),
                                reason=args.reason)
    print(f"resolved {n} message(s) as {args.resolution}")
    return 0


async def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    from . import admin

    paused = args.command == "pause"
    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_db(settings.db) as db:
        if args.campaign:
            await admin.set_campaign_paused(db, args.campaign, paused, actor=actor, now=time.time(),
                                            reason=args.reason)
        else:
            await admin.set_paused(db, paused, actor=actor, now=time.time(), reason=args.reason)
    what = f"campaign {args.campaign}" if args.campaign else "all sending"
    print(f"{what} {'paused' if paused else 'resumed'}")
    return 0


async def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.redacted(), indent=2, default=str))
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    policy = settings.policy()
    now = time.time()
    async with open_db(settings.db, readonly=True) as db:
        counts = await queries.state_counts(db)
        workers = await queries.worker_counts(db, now)
        paused = await queries.paused(db)
        deferred = await queries.deferred_counts(db)
        budgets = await queries.sender_budgets(
            db, (policy.rate.count, policy.rate.period) if policy.rate else None, policy.daily_cap, now)
    if args.json:
        print(json.dumps({**counts, "workers": {"alive": workers.alive, "stopped": workers.stopped,
                                                "presumed_dead": workers.presumed_dead},
                          "paused": paused, "deferred": deferred, "budget": budgets}))
        return 0
    for state, n in counts.items():
        print(f"{state:<10} {n:>9}")
    print(f"{'total':<10} {sum(counts.values()):>9}")
    print(f"workers    {workers.alive} alive, {workers.stopped} stopped, {workers.presumed_dead} presumed dead")
    flag = paused["global"]
    if isinstance(flag, dict):
        print(f"PAUSED     all sending, by {flag['by']}: {flag['reason']}")
    for name, reason in dict(paused["campaigns"]).items():  # type: ignore[call-overload]
        print(f"PAUSED     campaign {name}: {reason}")
    for reason, n in deferred.items():
        print(f"deferred   {n} by {reason}")
    for sender, budget in budgets.items():
        print(f"budget     {sender}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in budget.items()))
    return 0


async def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from .sink import run_forever

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_forever(args.host, args.port, args.maildir, stop)
    except OSError as exc:
        raise UsageError(f"sink: cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc
    return 0


async def cmd_observe(args: argparse.Namespace, settings: Settings) -> int:
    from .mailreader import open_mailbox
    from .observe import observe, progress_bar

    mailbox = open_mailbox(args.maildir, args.mbox)
    async with open_db(settings.db) as db:
        with progress_bar(mailbox) as advance:
            stats = await observe(db, mailbox, now=time.time(), progress=advance)
    print(stats.summary())
    return 0


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from . import report, report_text
    from .mailreader import open_mailbox
    from .observe import observe, progress_bar

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    mailbox = open_mailbox(args.maildir, args.mbox) if args.maildir or args.mbox else None
    async with open_db(settings.db, readonly=mailbox is None) as db:
        if mailbox is not None:
            with progress_bar(mailbox) as advance:
                stats = await observe(db, mailbox, now=time.time(), progress=advance)
            print(stats.summary(), file=sys.stderr if args.json else sys.stdout)
        now = time.time()
        window = await report.resolve_window(db, args.since, args.until, now,
                                             fixed_end=args.fail_on_anomaly)
        found = await report.build_report(db, window.since, now, until=window.until,
                                          sources=[mailbox.source] if mailbox else (),
                                          limit=args.limit)
    found = replace(found, window=window)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(report_text.render(found, title=f"Duplicate report for {settings.db}"), end="")
    return 3 if args.fail_on_anomaly and found.anomalies else 0


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from .mailreader import open_mailbox
    from .observe import progress_bar, reconcile

    mailbox = open_mailbox(args.maildir, args.mbox)
    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_db(settings.db) as db:
        with progress_bar(mailbox) as advance:
            stats, changed = await reconcile(db, mailbox, actor=actor, now=time.time(),
                                             progress=advance)
        left = (await queries.state_counts(db))["unknown"]
    print(stats.summary())
    for r in changed:
        print(f"row {r.row} {r.message_id} to {r.recipient}: unknown -> sent (found in mailbox)")
    print(f"reconciled {len(changed)} unknown message(s); {left} still unknown")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from . import demo, report_text

    if not args.verbose:
        logging.getLogger("sender").setLevel(logging.ERROR)
    sample = demo.find_sample(args.sample)
    async with demo.workspace(args.keep) as workdir:
        result = await demo.run_demo(settings, sample, workdir)
        print(demo.summary(result))
        print(report_text.render(result.report, title="Duplicate report for the demo queue "
                                                       "(its whole history)"), end="")
    return 0


COMMANDS = {"init": cmd_init, "enqueue": cmd_enqueue, "run": cmd_run, "status": cmd_status,
            "recover": cmd_recover, "resolve": cmd_resolve, "pause": cmd_pause, "resume": cmd_pause,
            "config": cmd_config,
            "sink": cmd_sink, "observe": cmd_observe, "report": cmd_report,
            "reconcile": cmd_reconcile, "demo": cmd_demo}

_SETTING_FLAGS = ("db", "smtp_host", "smtp_port", "concurrency", "worker", "smtp_starttls", "smtp_tls",
                  "smtp_timeout", "lease", "poll", "batch", "retry_delay", "max_attempts", "grace",
                  "heartbeat", "recipient_cap", "rate", "daily_cap", "max_age", "pause_after_errors")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("aiosqlite").setLevel(logging.WARNING)
        logging.getLogger("mail.log").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        flags = {name: getattr(args, name) for name in _SETTING_FLAGS if hasattr(args, name)}
        settings = config.load(flags, config_path=args.config)
        return asyncio.run(COMMANDS[args.command](args, settings))
    except SenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
