"""The sending loop: claim -> deliver -> record, with heartbeats, leases and graceful stop.

One task (``run``) owns the database connection and does all writes: each turn records the
outcomes that arrived since the last turn *and* claims just enough due rows for the sessions
that are free now, in a single durable transaction. Sessions never touch the database, so a
slow SMTP server can never hold a write lock, and one fsync serves many messages.

With ``--prefetch P`` (2 by default) the turn also claims up to P rows per session to wait ready,
so a session that finishes starts its next message without waiting for a commit; unstarted claims
are handed back as ``released`` whenever sending stops or is held. Each session runs in one
long-lived task (``_lane``) that is handed its claims one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import socket
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import compose
from .config import Settings
from .delivery import Transport
from .errors import DeliveryError, QueueUnusable, StoreError
from .fence import Fenced, steady
from .guard import NOT_STARTED, ClaimGuard
from .pace import Outage, Pace
from .store import flags as admin
from .store import sending as queue
from .store.claims import Claim
from .store.engine import DbClock, Store
from .store.sending import RELAY_ERRORS, Outcome, Reason

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

DEFAULT_PREFETCH = Settings.prefetch

MAX_BACKOFF = 6 * 3600.0
CLOCK_WARN = 1.0  # a host clock this many seconds off the database's (or drifting by it) is logged
DB_GIVE_UP_ONCE = 300.0  # a cron run waits this long for a locked or failing database, then exits 1
THROTTLED = "throttled, no attempt counted: "  # the reply of a claim the relay asked us to send later
_RETRY_HINT = re.compile(r"(?:try|retry|again|wait)\D{0,40}?(\d{1,6})\s*(s|secs?|seconds?|m|mins?|minutes?)\b",
                         re.IGNORECASE)


@dataclass
class RunStats:
    claimed: int = 0
    sent: int = 0
    retry: int = 0
    failed: int = 0
    unknown: int = 0
    released: int = 0
    expired: int = 0
    session_errors: list[str] = field(default_factory=list)
    stop_reason: str | None = None  # the relay refused the client or account: what to fix


def backoff(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with +-20% jitter: base, 2*base, 4*base... capped at six hours."""
    jitter = (rng or random).uniform(0.8, 1.2)
    return min(MAX_BACKOFF, base * (2 ** min(max(0, attempt - 1), 40))) * jitter  # 2**40 s: past any cap


def retry_hint(reply: str) -> float | None:
    """Seconds from a "try again in N seconds/minutes" style reply, if the relay gave one."""
    match = _RETRY_HINT.search(reply or "")
    if not match:
        return None
    seconds = float(match.group(1)) * (60 if match.group(2).lower().startswith("m") else 1)
    return min(MAX_BACKOFF, max(1.0, seconds))


class _Lane:
    """One session and the long-lived task that sends on it, one claim at a time: handing a
    claim over costs one future, not a task per message."""

    __slots__ = ("handoff", "session", "task")

    def __init__(self, session: Transport) -> None:
        self.session = session
        self.task: asyncio.Task[None] | None = None
        self.handoff: asyncio.Future[Claim] | None = None


class Daemon:
    def __init__(self, db: Store, settings: Settings, sessions: Sequence[Transport],
                 clock: Callable[[], float] | None = None, on_turn: Callable[[], None] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.sessions = list(sessions)
        # The queue's clock (database time, measured at start and every heartbeat) unless a test
        # gives its own.
        self._db_clock: DbClock | None = None
        if clock is None:
            clock = self._db_clock = DbClock()
        self.clock = clock
        self._on_turn = on_turn  # e.g. the log buffer's flush: once per turn of the loop
        self.stats = RunStats()
        self.policy = settings.policy()
        self._error_streak = 0
        self.worker_id = 0
        self._lanes = [_Lane(session) for session in self.sessions]
        self._free: list[_Lane] = list(self._lanes)
        self._ready: deque[Claim] = deque()  # claimed ahead (``--prefetch``), not started yet
        self._pending: list[Outcome] = []
        self._exposed = 0  # outcomes waiting that a crash would leave unknown (no 250 journaled)
        self._noted: set[int] = set()  # rows whose 250 is in the start journal, outcome not yet queued
        # Strictly just in time (--prefetch 0), every free session is served at once. With --prefetch
        # (the default), claims are made in batches of at least half the ready pool: fewer, larger
        # transactions while the pool keeps every session busy. An outcome a crash would leave
        # unknown is written at the next turn; one whose 250 the start journal holds (a crash
        # records it sent) waits for the next claim's commit, up to ``_hold_max`` of them.
        self.prefetch = 0 if self.policy.timed else settings.prefetch
        self._refill_at = max(1, self.prefetch * len(self.sessions) // 2)
        # Outcomes whose 250 the start journal holds are safe from a crash: claiming ahead, they
        # wait for the turn's claim (or up to this many, or an idle moment) to share its commit.
        self._hold_max = self._refill_at if self.prefetch else 1
        self._inflight: dict[int, tuple[Claim, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._notified = False  # the engine wakes the loop when rows are made due (``_wakeups``)
        self._stopping = False
        self._hold_until = 0.0
        self.pace = Pace(len(self.sessions))
        self.outage = Outage(settings.max_hold)
        self._pace_dirty = False
        self._pace_shown = False
        self._next_start = 0.0
        self._halted: str | None = None  # a stop reason: no claims, no starts
        self._pause_request: str | None = None  # the daemon pauses all sending with this reason
        self._once = False
        self._db_down_since: float | None = None
        self._db_retry = 0.1
        self._stop_now = asyncio.Event()
        self._next_beat = 0.0
        self._stop_deadline: float | None = None  # set when a stop begins: now + --grace
        self._beat_now = False
        self.guard = ClaimGuard(settings, db.path, self.clock, self._stalled)
        self._unusable: QueueUnusable | None = None  # set once: the queue file must not be written again

    # --- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: stop claiming, finish in-flight sends. Second call: stop now."""
        if self._stopping:
            log.warning("second stop signal: abandoning %d in-flight sends (their leases will expire)",
                        len(self._inflight))
            self._stop_now.set()
            for _claim, task in self._inflight.values():
                task.cancel()
        else:
            log.info("stopping: no new claims, %d in flight (grace %.0fs)",
                     len(self._inflight), self.settings.grace)
            self._stopping = True
        self._release_ready("worker stopping", None)
        self._wake.set()

    # --- main loop ----------------------------------------------------------------------------

    async def run(self, *, once: bool) -> RunStats:
        """Turns of the loop until the work is done (``once``) or a stop has been served."""
        await self._start(once)
        try:
            async with self._wakeups(once) as notified:
                self._notified = notified
                while await self._turn(once):
                    pass
        finally:
            self.guard.stop_ticking()
            await self._shutdown()
        return self.stats

    def _wakeups(self, once: bool) -> AbstractAsyncContextManager[bool]:
        """The engine's wake-ups while the daemon runs (``--once`` exits when done: none)."""
        if once:
            return contextlib.nullcontext(False)
        return self.db.engine.wakeups(self.db, self._wake.set, self.settings.poll)

    async def _start(self, once: bool) -> None:
        s = self.settings
        self._once = once
        host = socket.gethostname()
        await self._sync_clock()
        self.worker_id = await queue.register_worker(self.db, s.worker, os.getpid(), host, self.clock(),
                                                     s.heartbeat)
        await self.guard.open(self.db, self.worker_id, host)
        await self.db.optimize(at_open=True)
        log.info("worker %s (id %d) started: concurrency %d, prefetch %d, %s", s.worker, self.worker_id,
                 len(self.sessions), self.prefetch, "once" if once else "daemon")
        if s.prefetch and not self.prefetch:
            level = logging.INFO if s.prefetch == DEFAULT_PREFETCH else logging.WARNING  # said, not asked for
            log.log(level, "--prefetch %d ignored: a rate, daily cap or send window needs each claim sent at once",
                    s.prefetch)

    async def _turn(self, once: bool) -> bool:
        """One turn: write (heartbeat, outcomes, claims), start what was claimed, then wait for
        something to do. False when the loop is done."""
        self._wake.clear()
        now, anchor = self.clock(), steady()
        if self._stopping:
            self._stop_deadline = self._stop_deadline or now + self.settings.grace
        held = now < self._hold_until
        limit = 0 if (self._stopping or held) else self._claim_limit()
        try:
            claimed = await self._write(now, anchor, limit)
        except QueueUnusable as exc:
            await self._give_up(exc)
            raise
        except StoreError as exc:
            if self._stop_deadline is not None and (now >= self._stop_deadline or self._stop_now.is_set()):
                raise
            await self._database_trouble(exc, once)
            return True
        if self._finished(once, now, claimed):
            return False
        if held and self._ready:
            self._release_ready(f"sending held for {self._hold_until - now:.0f}s", self._hold_until)
            return True
        self._dispatch()
        if claimed and len(claimed) == limit and self._free:
            return True  # a full batch with sessions still free: claim again at once
        until_due = await self._until_due(limit, claimed)
        await self._sleep(self._next_wait(now, held, until_due))
        return True

    async def _write(self, now: float, anchor: float, limit: int) -> list[Claim]:
        """The turn's one trip to the queue: the heartbeat when due, then outcomes and claims."""
        beat = now >= self._next_beat or self._beat_now
        flush = bool(self._pending) and (beat or self._flush_due())
        self.db.check_file()
        if beat:
            self._beat_now = False
            await self._heartbeat(now, anchor)
            self._next_beat = now + self.settings.heartbeat
        claimed: list[Claim] = []
        if flush or limit or self._pause_request:
            claimed = await self._exchange(limit, now, anchor)
        self._db_down_since = None
        return claimed

    def _finished(self, once: bool, now: float, claimed: list[Claim]) -> bool:
        """A stop whose sends are done (or whose grace ran out), or a ``--once`` run with nothing left."""
        if self._stop_deadline is not None and (not self._inflight or now >= self._stop_deadline):
            return True
        return (once and not self._stopping and not self._inflight and not self._pending
                and not self._ready and not claimed)

    async def _until_due(self, limit: int, claimed: list[Claim]) -> float | None:
        """Seconds until the next row a claim could take is due, when the engine wakes the daemon
        and this turn wanted more rows than it got: a notification says a row was made due, not
        that its due time has come. By the daemon's clock, the one its claims judge by; None when
        nothing is waiting or the row is due already (held elsewhere: the poll looks again)."""
        if not self._notified or not limit or len(claimed) >= limit:
            return None
        try:
            due = await queue.next_due(self.db)
        except StoreError:
            return None  # the next turn's write meets the trouble and says so
        wait = None if due is None else due - self.clock()
        return wait if wait is not None and wait > 0 else None

    def _next_wait(self, now: float, held: bool, until_due: float | None) -> float:
        """Until the next heartbeat, the pace's next start, the next poll or hold end, the next
        due row (``until_due``), or the grace."""
        wait = max(0.0, self._next_beat - now)
        if self._ready and self._free:
            wait = min(wait, max(0.01, self._next_start - now))  # the pace's spacing
        if not self._inflight and not self._pending:
            wait = min(wait, self.settings.poll if not held else self._hold_until - now)
        if until_due is not None:
            wait = min(wait, until_due)
        if self._stop_deadline is not None:
            wait = min(wait, max(0.0, self._stop_deadline - now))
        return wait

    async def _sleep(self, wait: float) -> None:
        """Sleep until ``wait`` runs out or a finished send or a signal wakes the loop."""
        if self._on_turn is not None:
            self._on_turn()
        timer = asyncio.get_running_loop().call_later(wait, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    async def _database_trouble(self, exc: StoreError, once: bool) -> None:
        """The queue cannot be written: stop claiming, keep outcomes in memory, retry."""
        now = self.clock()
        if self._db_down_since is None:
            self._db_down_since = now
            self._db_retry = 0.1
        down = now - self._db_down_since
        log.error("database unavailable for %.0fs (%s): claims stopped, %d outcomes held in memory, "
                  "%d in flight; retrying in %.1fs", down, exc, len(self._pending), len(self._inflight),
                  self._db_retry)
        if once and down > DB_GIVE_UP_ONCE:
            raise exc
        self._hold_until = max(self._hold_until, now + self._db_retry)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_now.wait(), timeout=self._db_retry)
        self._db_retry = min(self._db_retry * 2, 10.0)

    async def _give_up(self, exc: QueueUnusable) -> None:
        """A damaged or replaced queue file: claim nothing more, let in-flight sends finish (within
        ``--grace``), write nothing more; the outcomes held are logged by ``_shutdown``."""
        self._unusable = exc
        self._stopping = True
        self._release_ready("queue file unusable", None)
        log.error("%s: claiming stopped; waiting up to %.0fs for %d in-flight send(s); their outcomes "
                  "and %d held will not be written", exc, self.settings.grace, len(self._inflight),
                  len(self._pending))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.grace
        while self._inflight and loop.time() < deadline:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), deadline - loop.time())

    async def _exchange(self, limit: int, now: float, anchor: float) -> list[Claim]:
        batch, self._pending, exposed, self._exposed = self._pending, [], self._exposed, 0
        pause_reason = self._pause_request
        try:
            turn = await queue.exchange(self.db, batch, worker=self.settings.worker,
                                        worker_id=self.worker_id, limit=limit, lease=self.settings.lease,
                                        now=now, policy=self.policy, pause_reason=pause_reason,
                                        read_pauses=bool(self._ready))
        except StoreError:
            self._pending = batch + self._pending  # never lose an outcome: write it next turn
            self._exposed += exposed
            raise
        claims = turn.claims
        self.guard.granted(claims, anchor, now)
        if pause_reason and pause_reason == self._pause_request:
            self._pause_request = self._halted = None  # paused: resumes when an operator resumes
        if pause_reason:
            log.error("sending paused: %s (resume with: python -m sender resume)", pause_reason)
        if pause_reason or turn.paused:
            self._release_ready("sending paused", None)
        elif turn.paused_campaigns:
            self._release_ready("campaign paused", None, turn.paused_campaigns)
        self.guard.settled(batch)
        for outcome in batch:
            self._log_outcome(outcome)
        self._ready.extend(claims)
        self.stats.claimed += len(claims)
        return claims

    def _claim_limit(self) -> int:
        """Rows to claim now: one per free session, plus up to ``--prefetch`` per session ready
        (sessions as many as the pace allows: one while probing a relay after an outage)."""
        if self._halted:
            return 0
        cap = self._session_cap()
        free = max(0, min(len(self._free), cap - len(self._inflight)))
        room = free + self.prefetch * cap - len(self._ready)
        if room < self._refill_at and not (free and not self._ready):
            return 0
        return max(0, min(room, self.settings.batch))

    def _session_cap(self) -> int:
        return 1 if self.outage.probing else self.pace.active

    def _turn_due(self) -> bool:
        """Whether a turn of the loop would write now: outcomes are due, a claim is due, or idle."""
        return self._flush_due() or not self._inflight or self._claim_limit() > 0

    def _flush_due(self) -> bool:
        """Whether the outcomes waiting must be written now, without waiting for a claim: one that a
        crash would leave ``unknown`` waits, enough wait, or no session is busy."""
        return bool(self._pending) and (self._exposed > 0 or len(self._pending) >= self._hold_max
                                        or not self._inflight or self._stopping)

    def _outcome(self, outcome: Outcome) -> None:
        if outcome.row in self._noted:
            self._noted.discard(outcome.row)
        else:
            self._exposed += 1
        self._pending.append(outcome)
        if outcome.status == "sent":
            self._error_streak = 0
        elif outcome.reason in RELAY_ERRORS:
            self._error_streak += 1
            self._pause_after_errors(outcome)

    def _pause_after_errors(self, last: Outcome) -> None:
        """``--pause-after-errors N``: the N-th relay failure in a row stops this worker starting
        messages at once (claims waiting are handed back) and pauses all sending at the next
        write, until an operator resumes."""
        limit = self.settings.pause_after_errors
        if not limit or self._error_streak < limit or self._pause_request:
            return
        code = f"{last.code} " if last.code else ""
        self._pause_request = self._halted = (
            f"auto-paused by {self.settings.worker} after {self._error_streak} consecutive relay errors; "
            f"last: {code}{last.reply}")[:500]
        self._error_streak = 0
        self._release_ready("sending paused", None)

    def _dispatch(self, *, between_turns: bool = False) -> None:
        """Start claimed messages on free sessions (the oldest claim first). ``between_turns``: a
        session just finished, and the turn's check of the queue file is not fresh: check it again
        before a waiting claim starts (a lost ``-wal`` may have taken the claim's commit with it)."""
        if self._stopping or self.clock() < self._hold_until or self._halted:
            return
        if between_turns and self._ready:
            try:
                self.db.check_file()
            except QueueUnusable:
                return  # the loop's own check raises it at once (``_deliver`` wakes it)
        while self._free and self._ready and len(self._inflight) < self._session_cap():
            now = self.clock()
            if now < self._next_start:
                break
            self._next_start = now + self.pace.spacing
            claim = self._ready.popleft()
            lane = self._free.pop()
            if lane.task is None or lane.task.done():
                lane.task = asyncio.create_task(self._lane(lane))
            if lane.handoff is None:
                lane.handoff = asyncio.get_running_loop().create_future()
            lane.handoff.set_result(claim)
            self._inflight[claim.row] = (claim, lane.task)

    def _release_ready(self, reason: str, due_at: float | None, campaigns: frozenset[str] | None = None) -> None:
        """Hand back claims that no session started (of ``campaigns``, or all): provably not
        sent, so ``released``."""
        keep: deque[Claim] = deque()
        while self._ready:
            claim = self._ready.popleft()
            if campaigns is not None and claim.campaign not in campaigns:
                keep.append(claim)
                continue
            self.guard.forget(claim.row)
            self._outcome(Outcome.of(claim, "released", "not_started", NOT_STARTED + reason,
                                     due_at=due_at or self.clock()))
        self._ready = keep

    async def _sync_clock(self) -> None:
        if self._db_clock is not None:
            before = self._db_clock.offset
            offset = await self._db_clock.sync(self.db)
            if abs(offset - before) >= CLOCK_WARN:
                log.warning("worker %s: this host's clock is %+.1fs off the queue's (database time is used)",
                            self.settings.worker, -offset)

    async def _heartbeat(self, now: float, anchor: float) -> None:
        await self._sync_clock()
        held = [claim for claim, _task in self._inflight.values()] + list(self._ready)
        beat = await queue.heartbeat(self.db, self.worker_id, {c.token for c in held},
                                     self.settings.lease, now, self.guard.evidence)
        await self._publish_pace(now)
        lost = self.guard.renewed(held, beat.kept, anchor, now)
        if lost:
            self._drop_lost(lost)
        for e in beat.expired:
            self.stats.expired += 1
            if e.state == "scheduled":
                log.info("row=%s mid=%s worker=%s sending->scheduled reason=lease expired, never started "
                         "(start journal of worker %s)", e.row, e.mid, self.settings.worker, e.worker)
                continue
            if e.state == "sent":
                log.info("row=%s mid=%s worker=%s sending->sent reason=lease expired, the relay's 250 is in "
                         "the start journal of worker %s", e.row, e.mid, self.settings.worker, e.worker)
                continue
            log.warning("row=%s mid=%s worker=%s sending->unknown reason=lease expired (worker %s presumed dead)",
                        e.row, e.mid, self.settings.worker, e.worker)

    def _stalled(self) -> None:
        """The fence saw the loop stall: re-validate every claim with the store at once."""
        log.warning("worker %s: event loop stalled (over %.1fs); re-validating %d claim(s) before "
                    "sending another byte", self.settings.worker, self.guard.fence.stall_after,
                    len(self._inflight) + len(self._ready))
        self._beat_now = True
        self._wake.set()

    def _drop_lost(self, lost: set[int]) -> None:
        """Claims the store no longer holds for us (expired, requeued while we were frozen): the
        waiting ones are dropped now, the in-flight ones stop at their next fence check."""
        log.warning("worker %s: the store no longer holds %d of its claims (rows %s; expired or "
                    "resolved while it was away): none will be sent by this worker", self.settings.worker,
                    len(lost), ", ".join(map(str, sorted(lost))))
        waiting = [c for c in self._ready if c.row in lost]
        self._ready = deque(c for c in self._ready if c.row not in lost)
        for claim in waiting:
            self._outcome(self.guard.lost(claim))

    async def _shutdown(self) -> None:
        self._release_ready("worker stopping", None)
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for claim, _task in list(self._inflight.values()):  # handed to a session that never began it
            self._inflight.pop(claim.row)
            self.guard.forget(claim.row)
            self._outcome(Outcome.of(claim, "released", "not_started", NOT_STARTED + "worker stopping",
                                     due_at=self.clock()))
        clean = False
        try:
            if self._unusable is not None:
                raise self._unusable
            if self._pending:
                batch = self._pending
                await queue.record(self.db, batch, self.clock())
                self._pending = []
                self.guard.settled(batch)
                for outcome in batch:
                    self._log_outcome(outcome)
            await self._publish_pace(self.clock(), final=True)
            await queue.stop_worker(self.db, self.worker_id, self.clock())
            clean = True
            await self.db.optimize()
        except StoreError:
            for o in self._pending:
                log.error("row=%s mid=%s outcome %s could not be recorded (reply: %s); the row stays "
                          "sending and becomes unknown when its lease expires", o.row, o.mid, o.status,
                          o.reply[:200])
            raise
        finally:
            await self.guard.close(clean=clean)
            await asyncio.gather(*(session.close() for session in self.sessions), return_exceptions=True)
        log.info("worker %s stopped: sent %d, retry %d, failed %d, unknown %d, released %d",
                 self.settings.worker, self.stats.sent, self.stats.retry, self.stats.failed,
                 self.stats.unknown, self.stats.released)
        if self._on_turn is not None:
            self._on_turn()

    # --- one message --------------------------------------------------------------------------

    async def _lane(self, lane: _Lane) -> None:
        """Send on one session for the daemon's whole life: wait for a claim, deliver it, again."""
        loop = asyncio.get_running_loop()
        while True:
            if lane.handoff is None:
                lane.handoff = loop.create_future()
            claim = await lane.handoff
            lane.handoff = None
            await self._deliver(lane, claim)

    async def _deliver(self, lane: _Lane, claim: Claim) -> None:
        session = lane.session
        outcome: Outcome | None = None
        pause = 0.0
        try:
            outcome, pause = await self._attempt(session, claim)
        except asyncio.CancelledError:
            phase = session.phase
            status: queue.OutcomeStatus = (
                "released" if phase in ("idle", "connect", "ehlo", "tls", "auth", "mail", "rcpt", "data")
                else "unknown")
            outcome = Outcome.of(claim, status, "stopping", f"stopped during {phase}", due_at=self.clock())
            raise
        finally:
            if outcome is not None:
                self._outcome(outcome)
            self._inflight.pop(claim.row, None)
            self.guard.forget(claim.row)
            if pause > 0:
                self._hold_until = max(self._hold_until, self.clock() + pause)
            self._free.append(lane)
            self._dispatch(between_turns=True)
            # Wake the loop when it has work (an outcome to write always is).
            if outcome is None or pause > 0 or self._turn_due():
                self._wake.set()

    async def _attempt(self, session: Transport, claim: Claim) -> tuple[Outcome, float]:
        def done(status: queue.OutcomeStatus, code: int | None, reply: str,
                 due_at: float | None = None, reason: Reason = "relay") -> Outcome:
            return Outcome.of(claim, status, reason, reply, code=code, due_at=due_at)

        try:
            envelope = compose.envelope(claim, self.settings, self.clock())
        except (ValueError, TypeError, LookupError) as exc:
            return done("failed", None, f"cannot build message: {exc}", reason="build"), 0.0
        started = self.clock()
        try:
            code, reply = await session.send(envelope, self.guard.check(claim))
        except Fenced as fenced:
            return self.guard.fenced(claim, fenced), 0.0
        except DeliveryError as err:
            return self._classified(claim, err, done, started)
        except Exception as exc:  # a bug, not an SMTP answer: the data may have left, so never resend
            log.exception("row=%s mid=%s unexpected error while sending", claim.row, claim.mid)
            return done("unknown", None, f"internal error while sending: {exc!r}", reason="internal"), 0.0
        if self.guard.delivered(claim, code, reply):  # before anything else: a crash now leaves it sent
            self._noted.add(claim.row)
        self._relay_reached()
        self._pace_dirty |= self.pace.accepted()
        return done("sent", code, reply, reason="delivered"), 0.0

    def _classified(self, claim: Claim, err: DeliveryError, done: Callable[..., Outcome],
                    started: float) -> tuple[Outcome, float]:
        """One failed attempt, by the action ``sender.classify`` gave it (docs/failures.md)."""
        s = self.settings
        now = self.clock()
        if err.phase in ("mail", "rcpt", "data", "dot"):
            self._relay_reached()
        if err.kind == "unknown":
            return done("unknown", err.code, err.reply), 0.0
        if err.kind == "failed":
            return done("failed", err.code, err.reply), 0.0
        if err.kind == "stop":
            reason = f"{err.code} {err.reply}" if err.code else err.reply
            self._halt(reason)
            return done("released", None, f"not attempted: {reason}", now, "refused"), 0.0
        if err.kind == "outage":
            return done("released", err.code, f"not attempted: {err}", self._outage(err, started, now),
                        "outage"), 0.0
        if err.kind == "throttle":
            self._pace_dirty |= self.pace.throttled(f"{err.code or ''} {err.reply}".strip(), started, now)
            delay = self.pace.release_delay(retry_hint(err.reply))
            log.warning("relay throttling (%s): %d of %d sessions, %.2fs between messages; row %s due in %.0fs",
                        err, self.pace.active, self.pace.sessions, self.pace.spacing, claim.row, delay)
            return done("released", err.code, f"{THROTTLED}{err.reply}", now + delay, "throttled"), 0.0
        if claim.attempt >= s.max_attempts:
            return done("failed", err.code, f"gave up after {claim.attempt} attempts: {err.reply}"), 0.0
        delay = retry_hint(err.reply) or backoff(s.retry_delay, claim.attempt)
        return done("retry", err.code, err.reply, now + delay), 0.0

    def _halt(self, reason: str) -> None:
        """A refusal of the client or account: no session starts another message. ``--once`` exits 1
        with the reason; the daemon sets the global pause flag with it (next turn) and waits for a
        resume."""
        self.stats.session_errors.append(reason)
        if self._halted is None:
            log.error("sending stopped: %s", reason)
            self._halted = reason
            self.stats.stop_reason = reason
            if not self._once:
                self._pause_request = f"relay refused {self.settings.worker}: {reason}"[:500]
        self._release_ready("sending stopped", None)

    def _outage(self, err: DeliveryError, started: float, now: float) -> float:
        """Back off once per round (sessions failing together count once); the hold's end is
        when the released claim is due again."""
        self.stats.session_errors.append(str(err))
        hold = self.outage.failed(started, now)
        if hold is not None:
            self._hold_until = max(self._hold_until, now + hold)
            log.warning("relay unavailable (%s): round %d, holding claims for %.1fs, then one session probes",
                        err, self.outage.rounds, hold)
        return max(self._hold_until, now)

    def _relay_reached(self) -> None:
        if self.outage.reached():
            log.info("relay reachable again: all %d sessions resume", self.pace.active)
            self._hold_until = 0.0
            self._wake.set()

    async def _publish_pace(self, now: float, final: bool = False) -> None:
        """Show a slowed pace in the flags table (``status --json``: ``pace``); cleared when back
        to full speed or on stop."""
        if not (self._pace_dirty or (final and self._pace_shown)):
            return
        self._pace_dirty = False
        slowed = self.pace.slowed and not final
        if not slowed and not self._pace_shown:
            return
        value = json.dumps(self.pace.to_json(self.settings.worker)) if slowed else None
        await admin.set_flag(self.db, "pace", value, actor=self.settings.worker, now=now)
        self._pace_shown = slowed

    def _log_outcome(self, o: Outcome) -> None:
        setattr(self.stats, o.status, getattr(self.stats, o.status) + 1)
        level = logging.INFO if o.status in ("sent", "released") else logging.WARNING
        to_state = queue.STATE_OF[o.status]
        log.log(level, "row=%s mid=%s to=%s worker=%s sending->%s outcome=%s reply=%s",
                o.row, o.mid, o.recipient, self.settings.worker, to_state, o.status,
                (f"{o.code} " if o.code else "") + o.reply.replace("\n", " ")[:200])
