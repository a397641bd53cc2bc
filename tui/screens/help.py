"""The ``?`` screen: every key, and what the ``/`` filter matches."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Monitor keys

| Key | Does |
|---|---|
| `1` … `5` | Queue, In flight, Workers, Duplicates, Log |
| `↑` `↓` `PgUp` `PgDn` | move in the table |
| `ctrl+Home` `ctrl+End` | first / last row (on the Log, `ctrl+Home` follows again) |
| `Enter` | open the selected message: fields, every attempt, observed copies, audit |
| `/` | search (Queue: every message in the store) or filter this tab; Enter applies |
| `Escape` | clear this tab's filter; back from a dialog or the detail view |
| `n` `N` | Queue search, Duplicates: next / previous page |
| `s` `S` | sort by the next / previous column (a header click sorts by that column) |
| `f` | Log: follow the newest attempt, or stop following |
| `space` | mark / unmark the message under the cursor |
| `A` | bulk action on the marked messages, or on everything the Queue search matches |
| `c` | cancel the selected **scheduled** message |
| `t` | retry the selected **failed** message (same Message-ID) |
| `u` | resolve the selected **unknown** message: sent, failed or requeue |
| `p` | pause sending for every daemon (asks why) / resume |
| `[` `]` | Duplicates: shorter / longer report window |
| `r` | refresh now |
| `ctrl+s` | save a screenshot (SVG) to the current folder or `--screenshots DIR` |
| `ctrl+p` | command palette: every action by name |
| `?` | this help |
| `q` | quit |

Every action asks for confirmation (a bulk action shows the exact count and the filter) and
writes one audit row; `--read-only` hides them all.

**Search (Queue).** Terms, all of which must hold: `#123` a row; `<…>` a Message-ID; a
state (`failed`, `unknown`, `scheduled`, …) or `state:NAME`; `campaign:NAME` or a campaign's
name; `reply:TEXT` (`reply:"too much mail"`) in the last reply, among failed messages
unless a state is named (`unknown reply:lost`); `since:1h` changed in the last hour;
`erin@example.com` exactly; any other word a part of the address (`erin.00149`). The result
says "N of M": M is the true total (a state's at any size, any other up to 50,000, then
"50,000+").

**Filter (other tabs).** On the Log: a recipient or Message-ID (exact, any age), a row
(`123` or `#123`), or, among the most recent 20,000 attempts, a status or a fragment. On In
flight, Workers and Duplicates (the page on screen) it keeps the rows that contain the text.

**Health.** Under the counts: sent, retried and failed attempts of the last full minute, the
commonest error reply of the last 5 minutes, the relay's pace when it throttles, and failures
per minute over 30 minutes. A red banner: sending paused (who, when, why) or a failure storm
(failures outnumber sends over 5 minutes). A worker is presumed dead after 3 missed heartbeats
(15 s at the default interval).

Times are UTC. The display connection is read-only (`mode=ro`); actions open their own
short-lived writable connection.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
