"""The ``ledger`` command line (``adapters.cli.main:main``) and the demo. Top layer: imports
``ledger/`` and ``adapters.storage``; nothing imports it but the entry points.
"""
