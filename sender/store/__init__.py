"""The store: every SQL statement the sender runs, grouped by what it changes.

``db`` (the connection wrapper) and ``schema`` (the migrations) sit under ``claims`` (choose and
move due rows), ``enqueue``, ``sending`` (record outcomes, leases, workers), ``operator``
(resolve, retry, cancel, bulk), ``flags`` (pause and pace), ``suppressions`` and the read side
(``views``, ``search``, ``health``, ``counts``, ``reports``). Nothing outside this package holds
SQL; ``tests/test_architecture.py`` enforces it.
"""
