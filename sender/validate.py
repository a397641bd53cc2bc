"""Typed checks for every value a user gives: command-line flags, ``SENDER_*`` variables, sender.toml.

One path for all three: argparse's ``type=`` (through ``flag_type``) and the config loader call
the same checker, so ``--lease nan`` and ``lease = nan`` are refused in the same words, before
anything is opened. A checker takes what the source produced (a string from argv or the
environment; a string, number, boolean or array from TOML) and returns the typed value, or raises
``UsageError`` with the reason (the caller names the source). Refused on purpose: ``nan`` and
``inf``, numbers out of range, fractions for counts, booleans for numbers, anything but a string
where text is expected, and an empty string where a name is required.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

_INT = re.compile(r"^\s*[+-]?[0-9]{1,30}\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


@dataclass(frozen=True)
class Number:
    """A finite number in ``[low, high]``; ``whole`` numbers refuse fractions (a count)."""

    low: float
    high: float
    whole: bool = False
    unit: str = ""

    def describe(self) -> str:
        kind = "whole number" if self.whole else "number"
        unit = f" of {self.unit}" if self.unit else ""
        return f"{kind}{unit} from {_fmt(self.low)} to {_fmt(self.high)}"

    def __call__(self, value: Any) -> int | float:
        wrong = UsageError(f"must be a {self.describe()}, got {_shown(value)}")
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, str):
            text = value.strip()
            if not text.isascii():  # int() and float() take other scripts' digits: "٣" is 3
                raise wrong
            if self.whole:
                if not _INT.match(text):
                    raise wrong
                number: int | float = int(text)
            else:
                try:
                    number = float(text)
                except ValueError:
                    raise wrong from None
        elif isinstance(value, int) or (isinstance(value, float) and not self.whole):
            number = value
        else:
            raise wrong
        if not (isinstance(number, int) or math.isfinite(number)):
            raise wrong
        if not self.low <= number <= self.high:
            raise wrong
        return int(number) if self.whole else float(number)


@dataclass(frozen=True)
class Text:
    """A string (never an array, number or boolean), non-empty unless ``empty``, no control characters.

    A ``secret`` is never repeated in an error message."""

    empty: bool = False
    longest: int = 4096
    secret: bool = False
    path: bool = False  # a file name may hold undecodable bytes (surrogate escapes from argv)
    shape: tuple[str, str] | None = None  # (regular expression, what it means), e.g. a host name

    def describe(self) -> str:
        if self.shape is not None:
            return self.shape[1]
        return "string" if self.empty else "non-empty string"

    def __call__(self, value: Any) -> str:
        shown = "" if self.secret else f", got {_shown(value)}"
        if not isinstance(value, str):
            raise UsageError(f"must be a string (in sender.toml: quoted){shown}")
        if not value.strip() and not self.empty:
            raise UsageError(f"must not be empty{shown}")
        if (_PATH_CONTROL if self.path else _CONTROL).search(value):
            raise UsageError(f"must not contain control characters or undecodable bytes{shown}")
        if len(value) > self.longest:
            raise UsageError(f"must be at most {self.longest} characters")
        if self.shape is not None and not re.fullmatch(self.shape[0], value):
            raise UsageError(f"must be {self.shape[1]}{shown}")
        return value


@dataclass(frozen=True)
class Flag:
    """A boolean: ``true``/``false`` in TOML; 1/0, true/false, yes/no, on/off as text."""

    def describe(self) -> str:
        return "boolean"

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise UsageError(f"must be true or false (1/0, yes/no, on/off), got {_shown(value)}")


@dataclass(frozen=True)
class FileMode:
    """An octal file mode for the queue: owner read-write, optionally the group's; never others'."""

    allowed: tuple[int, ...] = (0o600, 0o640, 0o660)

    def describe(self) -> str:
        return "octal mode: " + ", ".join(f"{m:04o}" for m in self.allowed)

    def __call__(self, value: Any) -> int:
        text = value.strip().lower().removeprefix("0o") if isinstance(value, str) else ""
        mode = int(text, 8) if re.fullmatch(r"[0-7]{3,4}", text) else None
        if mode not in self.allowed:
            raise UsageError(f"must be one of {', '.join(f'{m:04o}' for m in self.allowed)} "
                             f"(others never get access to the queue), got {_shown(value)}")
        return mode


Check = Callable[[Any], Any]


def flag_type(check: Check) -> Callable[[str], Any]:
    """The argparse ``type=`` for a checker: a refusal becomes argparse's one-line exit-2 error."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(check, "__name__", type(check).__name__)
    return parse


ROW_ID = Number(1, 2**63 - 1, whole=True)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME = (rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*", "an ASCII host name (punycode for an international one)")
NAME = Text(longest=200)  # --campaign, --actor: stored and shown, so decodable text
REASON = Text(empty=True, longest=500)
PORT = Number(1, 65535, whole=True)
