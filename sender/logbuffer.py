"""Log lines of ``run`` written once per turn of the daemon's loop instead of once per line.

The sender logs one line per transition (``row=… sending->sent …``): thousands a second at full
speed. A plain ``StreamHandler`` formats each line with its own ``strftime`` and hands it to the
kernel with its own ``write()``. ``TurnBuffer`` keeps the formatted lines of one turn and writes
them with one ``write()`` when the loop flushes (``Daemon(on_turn=…)``), at exit
(``logging.shutdown``), when ``capacity`` lines are waiting, or at once for a warning or worse,
so an operator sees trouble without delay. What a SIGKILL can lose is the INFO lines of the turn
under way; every transition is also in the queue's SendLog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SecondFormatter(logging.Formatter):
    """``logging.Formatter``'s default ``asctime`` (``2026-12-03 11:38:11,123``), with the
    ``strftime`` part computed once per second instead of once per line."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"


class TurnBuffer(logging.Handler):
    """Formats each record at once (so its arguments are captured) and writes the lines in bulk."""

    def __init__(self, stream: TextIO, capacity: int = 512, flush_level: int = logging.WARNING) -> None:
        super().__init__()
        self.stream = stream
        self.capacity = capacity
        self.flush_level = flush_level
        self._lines: list[str] = []
        self.setFormatter(SecondFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # logging's own contract: a bad record never stops the program
            self.handleError(record)
            return
        if record.levelno >= self.flush_level or len(self._lines) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        self.acquire()
        try:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing left to tell
            pass
        finally:
            self.release()


def install(stream: TextIO, level: int) -> TurnBuffer:
    """Route the root logger through one ``TurnBuffer`` (what ``logging.basicConfig`` would do
    with a ``StreamHandler``); returns it, so the daemon can flush it per turn."""
    handler = TurnBuffer(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def turn_flusher() -> Callable[[], None] | None:
    """The flush of the root logger's ``TurnBuffer``, if the command line installed one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, TurnBuffer):
            return handler.flush
    return None
