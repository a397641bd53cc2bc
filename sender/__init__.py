"""An outbound email sender over one SQLite queue that cannot send the same email twice.

Import direction: ``tui`` depends on ``sender``; ``sender`` never imports textual.
"""

from __future__ import annotations

__version__ = "0.1.0"
