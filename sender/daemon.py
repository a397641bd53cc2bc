"""The sending loop: claim -> deliver -> record, with heartbeats, leases and graceful stop.

One task (``run``) owns the database connection and does all writes: each turn records the
outcomes that arrived since the last turn *and* claims just enough due rows for the sessions
that are free now, in a single durable transaction. Sessions never touch the database, so a
slow SMTP server can never hold a write lock, and one fsync serves many messages.

With ``--prefetch P`` the turn also claims up to P rows per session to wait ready, so a session
that finishes starts its next message without waiting for a commit; unstarted claims are handed
back as ``released`` whenever sending stops or is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import compose, queue
from .config import Settings
from .db import Database
from .delivery import Transport
from .errors import DeliveryError, StoreError
from .queue import Claim, Outcome

log = logging.getLogger(__name__)

MAX_BACKOFF = 6 * 3600.0
DB_GIVE_UP_ONCE = 300.0  # a cron run waits this long for a locked or failing database, then exits 1
NOT_STARTED = "not started: "  # the reply of a claim handed back before any session began it
FLUSH_AFTER = 0.2  # with --prefetch, outcomes wait at most this long for a batch to share a commit
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


def backoff(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with +-20% jitter: base, 2*base, 4*base... capped at six hours."""
    jitter = (rng or random).uniform(0.8, 1.2)
    return min(MAX_BACKOFF, base * (2 ** max(0, attempt - 1))) * jitter


def retry_hint(reply: str) -> float | None:
    """Seconds from a "try again in N seconds/minutes" style reply, if the relay gave one."""
    match = _RETRY_HINT.search(reply or "")
    if not match:
        return None
    seconds = float(match.group(1)) * (60 if match.group(2).lower().startswith("m") else 1)
    return min(MAX_BACKOFF, max(1.0, seconds))


class Daemon:
    def __init__(self, db: Database, settings: Settings, sessions: Sequence[Transport],
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.settings = settings
        self.sessions = list(sessions)
        self.clock = clock
        self.stats = RunStats()
        self.policy = settings.policy()
        self._error_streak = 0
        self.worker_id = 0
        self._free: list[Transport] = list(sessions)
        self._ready: deque[Claim] = deque()  # claimed ahead (``--prefetch``), not started yet
        self._pending: list[Outcome] = []
        self._pending_since = 0.0
        # Strictly just in time (the default), every free session and every outcome is served at
        # once. With --prefetch, claims and outcomes are written in batches of at least half the
        # ready pool: fewer, larger transactions while the pool keeps every session busy.
        self.prefetch = 0 if self.policy.timed else settings.prefetch
        self._refill_at = max(1, self.prefetch * len(self.sessions) // 2)
        self._inflight: dict[int, tuple[Claim, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._hold_until = 0.0
        self._session_failures = 0
        self._db_down_since: float | None = None
        self._db_retry = 0.1
        self._stop_now = asyncio.Event()

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
        s = self.settings
        self.worker_id = await queue.register_worker(self.db, s.worker, os.getpid(), socket.gethostname(),
                                                     self.clock())
        log.info("worker %s (id %d) started: concurrency %d, prefetch %d, %s", s.worker, self.worker_id,
                 len(self.sessions), self.prefetch, "once" if once else "daemon")
        if s.prefetch and not self.prefetch:
            log.warning("--prefetch %d ignored: a rate, daily cap or send window needs each claim sent at once",
                        s.prefetch)
        next_beat = 0.0
        stop_deadline: float | None = None
        try:
            while True:
                self._wake.clear()
                now = self.clock()
                if self._stopping:
                    stop_deadline = stop_deadline or now + s.grace
                held = now < self._hold_until
                limit = 0 if (self._stopping or held) else self._claim_limit()
                flush = self._flush_due(now)
                claimed: list[Claim] = []
                try:
                    if now >= next_beat:
                        await self._heartbeat(now)
                        next_beat = now + s.heartbeat
                    if flush or limit:
                        claimed = await self._exchange(limit, now)
                    self._db_down_since = None
                except StoreError as exc:
                    if stop_deadline is not None and (now >= stop_deadline or self._stop_now.is_set()):
                        raise
                    await self._database_trouble(exc, once)
                    continue
                if stop_deadline is not None and (not self._inflight or now >= stop_deadline):
                    break
                if (once and not self._stopping and not self._inflight and not self._pending
                        and not self._ready and not claimed):
                    break
                if held and self._ready:
                    self._release_ready(f"sending held for {self._hold_until - now:.0f}s",
                                        self._hold_until)
                    continue
                self._dispatch()
                if claimed and len(claimed) == limit and self._free:
                    continue
                wait = max(0.0, next_beat - now)
                if not self._inflight and not self._pending:
                    wait = min(wait, s.poll if not held else self._hold_until - now)
                if self._pending:
                    wait = min(wait, max(0.0, self._pending_since + FLUSH_AFTER - now))
                if stop_deadline is not None:
                    wait = min(wait, max(0.0, stop_deadline - now))
                timer = asyncio.get_running_loop().call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
        finally:
            await self._shutdown()
        return self.stats

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

    async def _exchange(self, limit: int, now: float) -> list[Claim]:
        batch, self._pending = self._pending, []
        streak, pause_reason = self._error_streak_after(batch)
        try:
            turn = await queue.exchange(self.db, batch, worker=self.settings.worker,
                                        worker_id=self.worker_id, limit=limit, lease=self.settings.lease,
                                        now=now, policy=self.policy, pause_reason=pause_reason,
                                        read_pauses=bool(self._ready))
        except StoreError:
            self._pending = batch + self._pending  # never lose an outcome: write it next turn
            raise
        claims = turn.claims
        self._error_streak = 0 if pause_reason else streak
        if pause_reason:
            log.error("sending paused: %s (resume with: python -m sender resume)", pause_reason)
        if pause_reason or turn.paused:
            self._release_ready("sending paused", None)
        elif turn.paused_campaigns:
            self._release_ready("campaign paused", None, turn.paused_campaigns)
        for outcome in batch:
            self._log_outcome(outcome)
        self._ready.extend(claims)
        self.stats.claimed += len(claims)
        return claims

    def _claim_limit(self) -> int:
        """Rows to claim now: one per free session, plus up to ``--prefetch`` per session ready."""
        room = len(self._free) + self.prefetch * len(self.sessions) - len(self._ready)
        if room < self._refill_at and not (self._free and not self._ready):
            return 0
        return min(room, self.settings.batch)

    def _flush_due(self, now: float) -> bool:
        """Outcomes are written now: a batch's worth, nothing else to wait for, stopping, or late."""
        return bool(self._pending) and (
            len(self._pending) >= self._refill_at or not (self._inflight or self._ready)
            or self._stopping or now >= self._pending_since + FLUSH_AFTER)

    def _turn_due(self) -> bool:
        """Whether a turn of the loop would write now (always, when claiming just in time)."""
        return not self._inflight or self._claim_limit() > 0 or self._flush_due(self.clock())

    def _outcome(self, outcome: Outcome) -> None:
        if not self._pending:
            self._pending_since = self.clock()
        self._pending.append(outcome)

    def _dispatch(self) -> None:
        """Start claimed messages on free sessions (the oldest claim first)."""
        if self._stopping or self.clock() < self._hold_until:
            return
        while self._free and self._ready:
            claim = self._ready.popleft()
            task = asyncio.create_task(self._deliver(self._free.pop(), claim))
            self._inflight[claim.id] = (claim, task)

    def _release_ready(self, reason: str, due_at: float | None, campaigns: frozenset[str] | None = None) -> None:
        """Hand back claims that no session started (of ``campaigns``, or all): provably not
        sent, so ``released``."""
        keep: deque[Claim] = deque()
        while self._ready:
            claim = self._ready.popleft()
            if campaigns is not None and claim.campaign not in campaigns:
                keep.append(claim)
                continue
            self._outcome(Outcome(claim.id, claim.token, "released", None, NOT_STARTED + reason,
                                  due_at or self.clock(), claim.mid, claim.recipient))
        self._ready = keep

    async def _heartbeat(self, now: float) -> None:
        tokens = {claim.token for claim, _task in self._inflight.values()} | {c.token for c in self._ready}
        expired = await queue.heartbeat(self.db, self.worker_id, tokens, self.settings.lease, now)
        for e in expired:
            self.stats.expired += 1
            log.warning("row=%s mid=%s worker=%s sending->unknown reason=lease expired (worker %s presumed dead)",
                        e.id, e.mid, self.settings.worker, e.worker)

    async def _shutdown(self) -> None:
        self._release_ready("worker stopping", None)
        tasks = [task for _claim, task in self._inflight.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if self._pending:
                batch = self._pending
                await queue.record(self.db, batch, self.clock())
                self._pending = []
                for outcome in batch:
                    self._log_outcome(outcome)
            await queue.stop_worker(self.db, self.worker_id, self.clock())
        except StoreError:
            for o in self._pending:
                log.error("row=%s mid=%s outcome %s could not be recorded; the row stays sending and "
                          "becomes unknown when its lease expires", o.id, o.mid, o.status)
            raise
        finally:
            await asyncio.gather(*(session.close() for session in self.sessions), return_exceptions=True)
        log.info("worker %s stopped: sent %d, retry %d, failed %d, unknown %d, released %d",
                 self.settings.worker, self.stats.sent, self.stats.retry, self.stats.failed,
                 self.stats.unknown, self.stats.released)

    # --- one message --------------------------------------------------------------------------

    async def _deliver(self, session: Transport, claim: Claim) -> None:
        outcome: Outcome | None = None
        pause = 0.0
        try:
            outcome, pause = await self._attempt(session, claim)
        except asyncio.CancelledError:
            phase = getattr(session, "phase", "dot")
            status: queue.OutcomeStatus = (
                "released" if phase in ("idle", "connect", "mail", "rcpt", "data") else "unknown")
            outcome = Outcome(claim.id, claim.token, status, None,
                              f"stopped during {phase}", self.clock(), claim.mid, claim.recipient)
            raise
        finally:
            if outcome is not None:
                self._outcome(outcome)
            self._inflight.pop(claim.id, None)
            if pause > 0:
                self._hold_until = max(self._hold_until, self.clock() + pause)
            self._free.append(session)
            self._dispatch()
            # Wake the loop when it has work; the first waiting outcome also starts its flush timer.
            if outcome is None or pause > 0 or len(self._pending) == 1 or self._turn_due():
                self._wake.set()

    async def _attempt(self, session: Transport, claim: Claim) -> tuple[Outcome, float]:
        def done(status: queue.OutcomeStatus, code: int | None, reply: str,
                 due_at: float | None = None) -> Outcome:
            return Outcome(claim.id, claim.token, status, code, reply, due_at, claim.mid, claim.recipient)

        try:
            envelope = compose.envelope(claim, self.settings, self.clock())
        except (ValueError, TypeError, LookupError) as exc:
            return done("failed", None, f"cannot build message: {exc}"), 0.0
        try:
            code, reply = await session.send(envelope)
        except DeliveryError as err:
            return self._classified(claim, err, done)
        except Exception as exc:  # a bug, not an SMTP answer: the data may have left, so never resend
            log.exception("row=%s mid=%s unexpected error while sending", claim.id, claim.mid)
            return done("unknown", None, f"internal error while sending: {exc!r}"), 0.0
        self._session_failures = 0
        return done("sent", code, reply), 0.0

    def _classified(self, claim: Claim, err: DeliveryError,
                    done: Callable[..., Outcome]) -> tuple[Outcome, float]:
        s = self.settings
        now = self.clock()
        if err.kind == "ambiguous":
            return done("unknown", err.code, err.reply), 0.0
        if err.kind == "permanent":
            return done("failed", err.code, err.reply), 0.0
        if err.session_level:
            self._session_failures += 1
            pause = backoff(min(s.retry_delay, 5.0), self._session_failures)
            self.stats.session_errors.append(str(err))
            log.warning("session error (%s): holding claims for %.1fs", err, pause)
            return done("released", err.code, f"not attempted: {err}", now + pause), pause
        if claim.attempt >= s.max_attempts:
            return done("failed", err.code, f"gave up after {claim.attempt} attempts: {err.reply}"), 0.0
        delay = retry_hint(err.reply) or backoff(s.retry_delay, claim.attempt)
        return done("retry", err.code, err.reply, now + delay), 0.0

    def _error_streak_after(self, batch: Sequence[Outcome]) -> tuple[int, str | None]:
        """``--pause-after-errors N``: N relay failures in a row pause all sending until an operator resumes."""
        streak = self._error_streak
        for o in batch:
            if o.status == "sent":
                streak = 0
            elif not o.reply.startswith(("cannot build", NOT_STARTED)):
                streak += 1
        limit = self.settings.pause_after_errors
        if not limit or streak < limit or not batch:
            return streak, None
        last = batch[-1]
        code = f"{last.code} " if last.code else ""
        return streak, (f"auto-paused by {self.settings.worker} after {streak} consecutive relay errors; "
                        f"last: {code}{last.reply}")[:500]

    def _log_outcome(self, o: Outcome) -> None:
        setattr(self.stats, o.status, getattr(self.stats, o.status) + 1)
        level = logging.INFO if o.status in ("sent", "released") else logging.WARNING
        to_state = queue.STATE_OF[o.status]
        log.log(level, "row=%s mid=%s to=%s worker=%s sending->%s outcome=%s reply=%s",
                o.id, o.mid, o.recipient, self.settings.worker, to_state, o.status,
                (f"{o.code} " if o.code else "") + o.reply.replace("\n", " ")[:200])
