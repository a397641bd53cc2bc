"""The monitor: a Textual TUI over the sender's queue (``python -m tui --db PATH``).

It reads through ``sender.store.views`` and ``sender.report`` on a read-only connection and acts
through ``sender.store.operator`` on a short-lived writable one; it holds no SQL of its own.
"""
