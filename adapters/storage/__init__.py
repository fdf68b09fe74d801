"""Storage adapters: the SQLite/PostgreSQL event store, its codec, the in-process store of
``memory://``, the view database and the audit sources. Imports ``ledger/``, never ``adapters.cli``.
"""
