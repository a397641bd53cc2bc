"""Benchmarks for the sender: ``python -m bench`` prints one table and exits.

Everything runs on loopback, in temporary folders, bounded in count and time. Each figure is
the median of ``--repeat`` runs (3 by default) because the machine is small and shared.

Modules, one benchmark each: ``e2e`` (sender vs a bare aiosmtplib loop into one sink process),
``pipeline`` (claim -> build -> record with the null transport), ``claims`` (the claim
transaction vs its raw SQL), ``memory`` (peak RSS of the daemon and of ``enqueue`` on a big
queue) and ``monitor`` (the read queries on a big database). ``common`` builds databases fast
with raw SQL into the real schema; ``sink``, ``bare`` and ``daemon_child`` are the helper
processes.
"""
