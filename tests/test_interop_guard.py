"""The interop suite cannot silently pass CI: without Postfix it skips with one line on a
developer's machine, and fails when ``CI`` is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _interop_without_postfix(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(Path(sys.executable).parent)  # no postfix, no dovecot on PATH
    env["SENDER_INTEROP_FIGURES"] = str(tmp_path / "figures.jsonl")
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/interop/test_postfix.py::test_rejected_recipient_domain"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_interop_skips_with_one_line_without_postfix(tmp_path: Path) -> None:
    """No Postfix and no CI: the interop tests skip, naming what is missing."""
    proc = _interop_without_postfix(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SKIPPED" in proc.stdout and "postfix is not on PATH" in proc.stdout


def test_interop_fails_in_ci_without_postfix(tmp_path: Path) -> None:
    """No Postfix with CI set: the run fails instead of skipping."""
    proc = _interop_without_postfix(tmp_path, ci=True)
    assert proc.returncode != 0
    assert "interop tests cannot run in CI" in proc.stdout
