"""The private Postfix + Dovecot, started once per test session and stopped at its end.

Without the binaries (or without root) the interop tests skip with one line; in CI (``CI`` set)
that skip is a failure instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.relay import Relay, missing
from tests.support import need

FIGURES = Path(os.environ.get("SENDER_INTEROP_FIGURES", "/tmp/sender-interop-figures.jsonl"))


@pytest.fixture(scope="session")
def postfix() -> Iterator[Relay]:
    reason = missing()
    need(f"interop: {reason}" if reason else None, in_ci=f"interop tests cannot run in CI: {reason}")
    # Not under pytest's tmp_path: its 0700 parents keep the postfix user out.
    root = Path(tempfile.mkdtemp(prefix="sender-interop-"))
    relay = Relay(root)
    try:
        relay.setup()
        relay.start()
        yield relay
    finally:
        relay.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def relay(postfix: Relay) -> Relay:
    """The session's relay with an empty mailbox and Postfix running."""
    if not postfix.listening("open"):
        postfix.postfix("start")
    postfix.clear()
    return postfix


def record(scenario: str, **figures: object) -> None:
    """Append one scenario's figures (delivered, failed, retried, attempts, drain time) for the report."""
    with FIGURES.open("a") as out:
        out.write(json.dumps({"scenario": scenario, **figures}) + "\n")
