"""Who an e-mail address administers: the index behind ``admin_profile_not_allowed``."""

from __future__ import annotations

from datetime import datetime

from ledger.domain import Aggregate, Created, Event


def admin_profile_id(email: str) -> str:
    """The stream of an e-mail address (``:`` keeps it apart from caller-chosen ids)."""
    return f"admin:{email.strip().lower()}"


class AdminProfile(Aggregate):
    """The accounts one e-mail address administers, by role."""

    email: str
    master_accounts: list[str]
    distributors: list[str]
    clients: list[str]

    class Claimed(Created, frozen=True, kw_only=True):
        """The address was first used as an administrator login."""

        email: str

        def apply(self, aggregate: AdminProfile) -> None:
            """Starts with no accounts."""
            aggregate.email = self.email
            aggregate.master_accounts = []
            aggregate.distributors = []
            aggregate.clients = []

    class AccountAdded(Event, frozen=True, kw_only=True):
        """The address administers ``account_id`` in ``role``."""

        role: str
        account_id: str

        def apply(self, aggregate: AdminProfile) -> None:
            """Adds the account to its role."""
            accounts = {
                "master": aggregate.master_accounts,
                "distributor": aggregate.distributors,
                "client": aggregate.clients,
            }[self.role]
            if self.account_id not in accounts:
                accounts.append(self.account_id)

    @classmethod
    def claim(cls, email: str, at: datetime) -> AdminProfile:
        """A new index entry for ``email``."""
        return cls.create(cls.Claimed, admin_profile_id(email), at, email=email.strip().lower())

    def administers_platform_or_distributor(self) -> bool:
        """Whether the address logs into a master account or a distributor."""
        return bool(self.master_accounts or self.distributors)

    def add(self, role: str, account_id: str, at: datetime) -> None:
        """Records that the address administers ``account_id``."""
        self.trigger(self.AccountAdded, at, role=role, account_id=account_id)
