"""The daemon's guard over its claims: the lease fence, the start journal, and the evidence it
reads when it recovers other workers' claims (docs/design.md: "The lease fence", "The start
journal"). The daemon tells it what the store acknowledged; sessions ask it, through the
callable of ``check``, before ``MAIL FROM`` and before the final dot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from .config import Settings
from .errors import StoreError
from .fence import Fence, FenceCheck, Fenced
from .journal import NoMarks, StartMarks, evidence_for, open_marks
from .store.claims import Claim
from .store.engine import Store
from .store.sending import Outcome, Reason

log = logging.getLogger(__name__)

NOT_STARTED = "not started: "  # the reply of a claim handed back before any session began it
NOT_DELIVERED = "not delivered: "  # the reply of a transaction the fence cut before the final dot


class ClaimGuard:
    def __init__(self, settings: Settings, db_path: str, clock: Callable[[], float],
                 on_stall: Callable[[], None]) -> None:
        self.worker = settings.worker
        self.clock = clock
        self.fence = Fence(settings.lease, settings.heartbeat, wall=clock, on_stall=on_stall)
        self.marks: StartMarks = NoMarks()
        self.evidence = evidence_for(db_path)
        if settings.heartbeat >= settings.lease - self.fence.margin:
            log.warning("--heartbeat %.1fs is not shorter than the lease less its fence margin (%.1fs): "
                        "claims will lapse between heartbeats and their messages will not be sent",
                        settings.heartbeat, settings.lease - self.fence.margin)

    async def open(self, db: Store, worker_id: int, host: str) -> None:
        """The worker is registered: start its journal and the fence's stall ticker."""
        self.marks = await open_marks(db, worker_id, host)
        self.fence.start()

    def stop_ticking(self) -> None:
        self.fence.stop()

    async def close(self, *, clean: bool) -> None:
        """``clean``: every outcome is stored, so the journal is removed."""
        self.fence.stop()
        await self.marks.close(clean=clean)

    # --- what the store acknowledged ---------------------------------------------------------

    def granted(self, claims: Iterable[Claim], anchor: float, now: float) -> None:
        self.fence.granted(((c.row, c.token) for c in claims), anchor, now)

    def renewed(self, held: Sequence[Claim], kept: set[int], anchor: float, now: float) -> set[int]:
        """A heartbeat begun at ``anchor`` kept ``kept``; returns the held rows it did not keep."""
        return set(self.fence.renewed(((c.row, c.token) for c in held), kept, anchor, now))

    def settled(self, outcomes: Iterable[Outcome]) -> None:
        """These outcomes are committed: their start marks are no longer needed."""
        self.marks.settled(o.row for o in outcomes)

    def forget(self, row: int) -> None:
        self.fence.forget(row)

    # --- what sessions ask -------------------------------------------------------------------

    def check(self, claim: Claim) -> FenceCheck:
        return partial(self._point, claim)

    async def _point(self, claim: Claim, point: str) -> None:
        """The fence, and at ``mail`` the start mark, written before ``MAIL FROM`` leaves (a
        mark that cannot be written, nor the journal removed, stops the message). A mark that
        took a round trip to the database is followed by a second check: passing it proves the
        mark was committed before this worker's deadline, so before any recoverer looked."""
        await self.fence.check(claim.row, point)
        if point == "mail":
            try:
                await self.marks.started(claim.row, claim.token)
            except (OSError, StoreError) as exc:
                raise Fenced(point, f"the start journal cannot be written: {exc}") from exc
            await self.fence.check(claim.row, point)

    def delivered(self, claim: Claim, code: int, reply: str) -> bool:
        """The relay accepted the message: journal it, so that a crash before the outcome is
        stored records it ``sent`` rather than ``unknown``. Best effort (without the entry a
        crash leaves it ``unknown``, as before); True when it was noted."""
        try:
            return self.marks.delivered(claim.row, claim.token, code, reply)
        except OSError as exc:
            log.warning("row=%s start journal: the delivery could not be noted (%s); a crash before "
                        "its outcome is stored leaves it unknown", claim.row, exc)
            return False

    def fenced(self, claim: Claim, fenced: Fenced) -> Outcome:
        """Not started, or cut before the final dot: provably not delivered, so ``released``
        (no attempt). The store applies it only while our claim token still holds the row."""
        what = "not started" if fenced.point == "mail" else f"transaction cut before the final dot (at {fenced.point})"
        log.warning("row=%s mid=%s worker=%s lease fence: %s: %s", claim.row, claim.mid, self.worker, what,
                    fenced.reason)
        if fenced.point == "mail":
            return self.released(claim, f"{NOT_STARTED}lease fence: {fenced.reason}")
        return self.released(claim, f"{NOT_DELIVERED}cut at {fenced.point}: lease fence: {fenced.reason}",
                             "not_delivered")

    def lost(self, claim: Claim) -> Outcome:
        """A waiting claim the store no longer holds for us: never started."""
        self.fence.forget(claim.row)
        return self.released(claim, NOT_STARTED + "lease fence: the claim was lost while this worker stalled")

    def released(self, claim: Claim, reply: str, reason: Reason = "not_started") -> Outcome:
        return Outcome.of(claim, "released", reason, reply, due_at=self.clock())
