"""The lease fence: a worker never sends a byte of a message once its claim's lease may have lapsed.

The store holds each claim with ``lease_until = now + lease``, ``now`` being the wall-clock time
read at the start of the turn that claimed it (or of the heartbeat that last extended it). Any
other process expires the claim when *its* wall clock passes ``lease_until`` (a daemon's
heartbeat, ``recover``). The worker keeps its own deadline per claim, anchored at the same
instant but measured by a clock no step can move (``CLOCK_BOOTTIME``, which also counts a
suspended machine; ``monotonic`` elsewhere), and earlier by a safety margin::

    deadline = anchor + lease - margin        (and, by the wall clock, lease_until - margin)

so the worker's deadline always comes before the recoverer's view of the lease. The session asks
the fence before each command of a message (``mail``, ``rcpt``, ``data``) and right before the
end-of-data marker (``dot``). Past the deadline, or for a claim the store no longer confirms, the
check raises ``Fenced``: the message is not started, or its transaction is cut before the final
dot (the server discards it).

A stall of the event loop longer than the heartbeat interval (SIGSTOP, a suspended VM, a
blocking call) is noticed by a ticker on the steady clock; from then on every claim is suspect,
and a check waits (never longer than the claim's deadline) for a heartbeat that *began after the
stall* to confirm, in the store, that the claim is still ``sending`` under its token.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .errors import SenderError

MARGIN_SHARE = 0.2  # of the lease: the worker's deadline comes this much before the store's
MARGIN_MAX = 15.0  # seconds; a long lease needs no longer margin than this
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)

FenceCheck = Callable[[str], Awaitable[None]]  # what a session calls at "mail" and at "dot"


def steady() -> float:
    """Seconds by a clock that wall-clock steps cannot move; on Linux it also runs during suspend."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


def margin(lease: float) -> float:
    """How much earlier than the store the worker gives up a claim."""
    return min(lease * MARGIN_SHARE, MARGIN_MAX)


class Fenced(SenderError):
    """A session may not go on with this message: its lease may have lapsed, or it is not ours."""

    def __init__(self, point: str, reason: str) -> None:
        self.point = point
        self.reason = reason
        super().__init__(f"lease fence at {point}: {reason}")


@dataclass(slots=True)
class _Hold:
    token: str
    anchor: float  # steady time of the turn that set the lease in the store
    steady_until: float
    wall_until: float
    lost: bool = False


class Fence:
    """Per-claim deadlines of one worker, renewed only by what the store acknowledged."""

    def __init__(self, lease: float, heartbeat: float, *, clock: Callable[[], float] = steady,
                 wall: Callable[[], float] = time.time,
                 on_stall: Callable[[], None] | None = None) -> None:
        self.lease = lease
        self.margin = margin(lease)
        self.stall_after = max(heartbeat, 0.05)
        self._clock = clock
        self._wall = wall
        self._on_stall = on_stall
        self._holds: dict[int, _Hold] = {}
        self._seen = clock()
        self.stalled_at = -math.inf  # steady time the latest stall was noticed
        self.stalls = 0
        self._renewal = asyncio.Event()
        self._ticker: asyncio.TimerHandle | None = None

    # --- what the store acknowledged ---------------------------------------------------------

    def granted(self, claims: Iterable[tuple[int, str]], anchor: float, wall: float) -> None:
        """Claims committed by a turn that began at ``anchor`` (steady) / ``wall`` (its ``now``)."""
        for row, token in claims:
            self._holds[row] = _Hold(token, anchor, anchor + self.lease - self.margin,
                                     wall + self.lease - self.margin)

    def renewed(self, asked: Iterable[tuple[int, str]], kept: set[int], anchor: float,
                wall: float) -> list[int]:
        """A heartbeat that began at ``anchor`` extended the leases of ``kept`` (rows still
        ``sending`` under our token); the other rows it asked about are lost. Returns those."""
        lost = []
        for row, token in asked:
            hold = self._holds.get(row)
            if hold is None or hold.token != token:
                continue
            if row in kept and not hold.lost:
                self.granted([(row, token)], anchor, wall)
            else:
                hold.lost = True
                lost.append(row)
        self._renewal.set()
        self._renewal = asyncio.Event()
        return lost

    def forget(self, row: int) -> None:
        self._holds.pop(row, None)

    def lost(self, row: int) -> bool:
        hold = self._holds.get(row)
        return hold is None or hold.lost

    # --- stalls ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Note that the event loop is running now; a gap longer than the heartbeat is a stall."""
        now = self._clock()
        if now - self._seen > self.stall_after:
            self.stalled_at = now
            self.stalls += 1
            if self._on_stall is not None:
                self._on_stall()
        self._seen = now

    def start(self) -> None:
        """Tick every half heartbeat, so any longer gap is a stall of the whole loop."""
        self._seen = self._clock()

        def beat() -> None:
            self.tick()
            self._ticker = asyncio.get_running_loop().call_later(self.stall_after / 2, beat)

        self._ticker = asyncio.get_running_loop().call_later(self.stall_after / 2, beat)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # --- the check ---------------------------------------------------------------------------

    def left(self, row: int) -> float:
        """Seconds this worker may still send for ``row`` (0 or less: it may not)."""
        hold = self._holds.get(row)
        if hold is None or hold.lost:
            return 0.0
        return min(hold.steady_until - self._clock(), hold.wall_until - self._wall())

    async def check(self, row: int, point: str) -> None:
        """Return when ``row`` may take its next step; raise ``Fenced`` when it never may."""
        while True:
            self.tick()
            hold = self._holds.get(row)
            if hold is None or hold.lost:
                raise Fenced(point, "the store no longer holds this claim for this worker")
            left = self.left(row)
            if left <= 0:
                raise Fenced(point, f"the lease may have lapsed ({-left:.1f}s past this worker's "
                                    f"deadline, the lease less a {self.margin:.1f}s margin)")
            if hold.anchor >= self.stalled_at:
                return
            renewal = self._renewal
            try:
                await asyncio.wait_for(renewal.wait(), left)
            except TimeoutError:
                continue
