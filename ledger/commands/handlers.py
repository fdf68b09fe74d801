"""Imports every handler module so each command's handler is registered with the engine."""

from ledger.commands import accounts, billing, codes, entitlements, holds, movements, network

__all__ = ["accounts", "billing", "codes", "entitlements", "holds", "movements", "network"]
