"""``python -m ledger``: the same command line as ``ledger``."""

from __future__ import annotations

import sys

from adapters.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
