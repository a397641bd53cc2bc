"""The README tells the truth about how to run the tests and which commands exist.

CI runs the README's test command verbatim (the last line of ``.ci/run``), so the two cannot
drift apart; and every ``python -m sender <command>`` the README mentions must be a real
subcommand of the command line.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)]


def _help_commands() -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "sender", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout.split("COMMAND", 1)[-1]
    return set(re.findall(r"^ {4}([a-z][a-z-]*)", listing, re.M))


def test_readme_test_command_is_what_ci_runs() -> None:
    """The second sh block under Quick start is exactly the last line of .ci/run."""
    blocks = _sh_blocks(_section("Quick start"))
    assert len(blocks) >= 2
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    assert blocks[1] == ci_lines[-1].strip()


def test_every_command_the_readme_names_exists() -> None:
    """Each `python -m sender <command>` in the README is listed by `python -m sender --help`."""
    named = set(re.findall(r"python -m sender\s+([a-z][a-z-]*)", README))
    available = _help_commands()
    assert {"init", "enqueue", "run", "status", "sink"} <= named
    assert named <= available, f"README names unknown commands: {sorted(named - available)}"


def test_command_reference_covers_the_core_commands() -> None:
    """The command reference has a section for each core command and documents the exit codes."""
    reference = _section("Command reference")
    for command in ("init", "enqueue", "run", "status", "sink"):
        assert f"### `{command}`" in reference
    for code in ("`0`", "`1`", "`2`"):
        assert code in reference
    for var in ("SENDER_DB", "SENDER_FROM", "SENDER_SMTP_USER", "SENDER_SMTP_PASSWORD", "SENDER_CONFIG"):
        assert var in reference
