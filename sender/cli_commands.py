"""The commands other than ``enqueue``: each parses nothing, calls the store, prints, returns an exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from .config import Settings
from .errors import UsageError
from .queuefile import FILE_MODE, set_mode
from .store import counts, flags, sending
from .store.db import SCHEMA_VERSION
from .store.engine import Store, db_now, engine_for, open_store

if TYPE_CHECKING:
    from .mailreader import MailSource

log = logging.getLogger(__name__)


def check_db_dir(path: str) -> None:
    """A ``--db`` no engine takes, or a missing folder for a queue file, is a usage error (exit 2),
    found before SQLite fails to create the file."""
    if engine_for(path).name != "sqlite":
        return
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: folder {folder} does not exist")


def open_source(args: argparse.Namespace) -> MailSource:
    """``--maildir``, ``--mbox`` or ``--imap URL`` (password from ``SENDER_IMAP_PASSWORD``)."""
    from .mailreader import open_mailbox

    if getattr(args, "imap", None):
        from .imap import open_imap

        return open_imap(args.imap, os.environ.get("SENDER_IMAP_PASSWORD"), args.imap_ca)
    return open_mailbox(args.maildir, args.mbox)


async def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    check_db_dir(settings.db)
    engine = engine_for(settings.db)
    if engine.name != "sqlite":  # a server's database: no file, no mode
        if args.mode is not None:
            raise UsageError(f"--mode: {settings.db} is not a queue file")
        async with open_store(settings.db, create=True) as db:
            print(f"{db.path}: queue database ready (schema version {engine.schema_version})")
        return 0
    async with open_store(settings.db, create=True, mode=args.mode or FILE_MODE):
        if args.mode is not None:
            set_mode(settings.db, args.mode)
    mode = os.stat(settings.db).st_mode & 0o777
    print(f"{settings.db}: queue database ready (schema version {SCHEMA_VERSION}, mode {mode:04o})")
    if mode & 0o007:
        log.warning("%s is readable by others (mode %04o; it holds recipients and bodies): "
                    "python -m sender init --db %s --mode 0600", settings.db, mode, settings.db)
    return 0


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from .daemon import Daemon
    from .delivery import pool
    from .logbuffer import turn_flusher

    sessions = pool(settings)
    async with open_store(settings.db) as db:
        daemon = Daemon(db, settings, sessions, on_turn=turn_flusher())
        await _relay_warnings(db, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        try:
            stats = await daemon.run(once=args.once)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if settings.smtp_tls_insecure:

            await flags.set_flag(db, "tls_insecure", None, actor=settings.worker, now=await db_now(db))
    if args.once and stats.stop_reason:
        print(f"error: could not deliver: {stats.stop_reason}", file=sys.stderr)
        return 1
    if stats.session_errors and stats.sent == 0 and stats.released:
        print(f"error: could not deliver: {stats.session_errors[-1]}", file=sys.stderr)
        return 1
    return 0


async def _relay_warnings(db: Store, settings: Settings) -> None:
    """Said loudly at every start: no certificate verification, credentials allowed in clear."""

    if settings.smtp_allow_plaintext_auth and settings.smtp_user:
        log.warning("--allow-plaintext-auth: credentials may cross an unencrypted connection (meant for "
                    "a loopback test relay only)")
    if settings.smtp_tls_insecure:
        log.warning("--tls-insecure: the relay's certificate is NOT verified; anyone on the path can "
                    "read the mail and the password")
        await flags.set_flag(db, "tls_insecure", "1", actor=settings.worker, now=await db_now(db))


async def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    from .journal import evidence_for

    async with open_store(settings.db) as db:
        expired = await sending.recover(db, await db_now(db), evidence_for(db.path))
    reasons = {"scheduled": "lease expired, never started (start journal)",
               "sent": "lease expired, the relay's 250 is in the start journal"}
    for e in expired:
        why = reasons.get(e.state, "lease expired")
        log.warning("row=%s mid=%s worker=%s sending->%s reason=%s (recover)", e.row, e.mid, e.worker,
                    e.state, why)
    if args.json:
        print(json.dumps([{"id": e.row, "message_id": e.mid, "worker": e.worker, "state": e.state}
                          for e in expired]))
    else:
        released = sum(e.state == "scheduled" for e in expired)
        delivered = sum(e.state == "sent" for e in expired)
        print(f"{len(expired) - released - delivered} expired claim(s) moved to unknown"
              + (f"; {released} never started (start journal), back to scheduled" if released else "")
              + (f"; {delivered} delivered (the relay's 250 in the start journal), recorded sent"
                 if delivered else ""))
    return 0


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    from .store import operator

    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_store(settings.db) as db:
        n = await operator.resolve(db, args.ids, args.resolution, actor=actor, now=await db_now(db),
                                reason=args.reason)
    print(f"resolved {n} message(s) as {args.resolution}")
    if args.resolution == "requeue":
        print(operator.REQUEUE_RISK)
    return 0


async def cmd_bulk(args: argparse.Namespace, settings: Settings) -> int:
    """``retry`` / ``cancel``: count what the filter selects; with ``--yes``, change it."""
    from .policy import parse_duration
    from .store import operator
    from .store.selection import Selection

    span = parse_duration(args.since, "--since") if args.since else None
    if args.reply_match is not None and not args.reply_match.strip():
        raise UsageError("--reply-match: the text must not be empty")
    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_store(settings.db, readonly=not args.yes) as db:
        now = await db_now(db)
        sel = Selection(states=tuple(dict.fromkeys(args.state or ())), campaign=args.campaign,
                        reply_match=args.reply_match, since=None if span is None else now - span,
                        since_label=args.since or "", rows=tuple(dict.fromkeys(args.row or ())))
        done = await operator.bulk(db, args.command, sel, actor=actor, now=now, yes=args.yes,
                                reason=args.reason)
    verb = {"retry": "retried", "cancel": "cancelled"}[args.command]
    if done.done:
        print(f"{verb} {done.count} message(s) (filter: {done.filter})")
    else:
        print(f"{done.count} message(s) would be {verb} (filter: {done.filter}); "
              "nothing changed: add --yes to act")
    return 0


async def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:

    paused = args.command == "pause"
    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_store(settings.db) as db:
        if args.campaign:
            await flags.set_campaign_paused(db, args.campaign, paused, actor=actor, now=await db_now(db),
                                            reason=args.reason)
        else:
            await flags.set_paused(db, paused, actor=actor, now=await db_now(db), reason=args.reason)
    what = f"campaign {args.campaign}" if args.campaign else "all sending"
    print(f"{what} {'paused' if paused else 'resumed'}")
    return 0


async def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.redacted(), indent=2, default=str))
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    policy = settings.policy()
    async with open_store(settings.db, readonly=True) as db:
        now = await db_now(db)
        states = await counts.state_counts(db)
        workers = await counts.worker_counts(db, now)
        paused = await flags.paused(db)
        relay = await flags.relay_flags(db)
        deferred = await counts.deferred_counts(db)
        budgets = await counts.sender_budgets(
            db, (policy.rate.count, policy.rate.period) if policy.rate else None, policy.daily_cap, now)
    if args.json:
        print(json.dumps({**states, "workers": {"alive": workers.alive, "stopped": workers.stopped,
                                                "presumed_dead": workers.presumed_dead},
                          "paused": paused, "deferred": deferred, "budget": budgets, **relay}))
        return 0
    for state, n in states.items():
        print(f"{state:<10} {n:>9}")
    print(f"{'total':<10} {sum(states.values()):>9}")
    print(f"workers    {workers.alive} alive, {workers.stopped} stopped, {workers.presumed_dead} presumed dead")
    flag = paused["global"]
    if isinstance(flag, dict):
        print(f"PAUSED     all sending, by {flag['by']}: {flag['reason']}")
    for name, reason in dict(paused["campaigns"]).items():  # type: ignore[call-overload]
        print(f"PAUSED     campaign {name}: {reason}")
    for reason, n in deferred.items():
        print(f"deferred   {n} by {reason}")
    pace = relay["pace"]
    if isinstance(pace, dict):
        print(f"pace       throttled: {pace['sessions']} of {pace['of']} sessions, {pace['spacing_s']}s "
              f"between messages ({pace['worker']}; last: {pace['last']})")
    if relay["tls_insecure"]:
        print(f"WARNING    worker {relay['tls_insecure']} runs with --tls-insecure: certificates not verified")
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
    from .observe import observe, progress_bar

    mailbox = open_source(args)
    async with open_store(settings.db) as db:
        with progress_bar(mailbox) as advance:
            stats = await observe(db, mailbox, now=await db_now(db), progress=advance,
                                  rules=settings.feedback_rules())
    print(stats.summary())
    return 0


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:

    from . import report
    from .observe import observe, progress_bar
    from .report import text as report_text

    mailbox = open_source(args) if args.maildir or args.mbox or args.imap else None
    async with open_store(settings.db, readonly=mailbox is None) as db:
        if mailbox is not None:
            with progress_bar(mailbox) as advance:
                stats = await observe(db, mailbox, now=await db_now(db), progress=advance)
            print(stats.summary(), file=sys.stderr if args.json else sys.stdout)
        now = await db_now(db)
        window = await report.resolve_window(db, args.since, args.until, now,
                                             fixed_end=args.fail_on_anomaly)
        found = await report.build_report(db, window, now, sources=[mailbox.source] if mailbox else (),
                                          limit=args.limit)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(report_text.render(found, title=f"Duplicate report for {settings.db}"), end="")
    return 3 if args.fail_on_anomaly and found.anomalies else 0


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from .observe import progress_bar, reconcile

    mailbox = open_source(args)
    actor = args.actor or os.environ.get("USER") or "operator"
    async with open_store(settings.db) as db:
        with progress_bar(mailbox) as advance:
            stats, changed = await reconcile(db, mailbox, actor=actor, now=await db_now(db),
                                             progress=advance, rules=settings.feedback_rules())
        left = (await counts.state_counts(db))["unknown"]
    print(stats.summary())
    for r in changed:
        print(f"row {r.row} {r.mid} to {r.recipient}: unknown -> sent (found in mailbox)")
    print(f"reconciled {len(changed)} unknown message(s); {left} still unknown")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from . import demo
    from .report import text as report_text

    if not args.verbose:
        logging.getLogger("sender").setLevel(logging.ERROR)
    sample = demo.find_sample(args.sample)
    async with demo.workspace(args.keep) as workdir:
        result = await demo.run_demo(settings, sample, workdir)
        print(demo.summary(result))
        print(report_text.render(result.report, title="Duplicate report for the demo queue "
                                                       "(its whole history)"), end="")
    return 0
