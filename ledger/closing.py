"""What closes at the end of a ``with`` block: the ledger, verify's spill."""

from __future__ import annotations

from typing import Self


class Closing:
    """A resource used as ``with X(...) as x:``: leaving the block closes it, raised or not."""

    def close(self) -> None:
        """Releases what the resource holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
