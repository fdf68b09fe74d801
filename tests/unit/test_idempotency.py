"""Exactly once (DESIGN §3.3): repeats replay, conflicts are refused, rejections leave no trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.storage.memory import MemoryStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.models import TransferStamps
from ledger.errors import Rejected
from ledger.outcome import Outcome
from tests import support
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    buy,
    command,
    consume,
    network_fixture,
    rejection,
)
from tests.support import transfer_stamps as transfer

CFDI = "0f8fad5b-d9cb-469f-a165-70867728950e"

# A ledger on the in-memory store with the standard network and 3 stamps on C1's CTI; D1's
# price list prices the transfers.
lg = network_fixture(
    command("ChangeSettings", DISTRIBUTOR, seller_id=DISTRIBUTOR, bulk_stamp_price="0.50"),
    cti_stamps=3,
)


def store(lg: Ledger) -> MemoryStore:
    """The ledger's in-memory store."""
    assert isinstance(lg.store, MemoryStore)
    return lg.store


def trace(lg: Ledger) -> tuple[int, int]:
    """How many events and keys are recorded."""
    return len(store(lg).stored_events()), store(lg).key_count()


def replay_of(first: Outcome) -> Outcome:
    """What a repeat of the command that gave ``first`` must return (the secrets shown once
    left out: a code, its NIP, a generated CTI password)."""
    fields = {f: getattr(first, f) for f in first.__struct_fields__}
    return Outcome(**{**fields, "replayed": True, "code": None, "nip": None, "cti_password": None})


# Repeats ---------------------------------------------------------------------------------------


def test_a_repeat_returns_the_first_outcome_and_records_nothing(lg: Ledger) -> None:
    """The same transfer again is replayed: same outcome, no new event or key."""
    first = lg.execute(transfer())
    after_first = trace(lg)
    again = lg.execute(transfer())
    assert again == replay_of(first)
    assert trace(lg) == after_first
    assert (lg.balance(DISTRIBUTOR), lg.balance(CTI)) == (9_987, 13)


def test_a_repeat_with_other_fields_is_idempotency_conflict(lg: Ledger) -> None:
    """The same transfer id with another quantity is refused."""
    lg.execute(transfer())
    rejected = rejection(lg, transfer(quantity=11))
    assert rejected.code == "idempotency_conflict"
    assert rejected.details == {"key": "transfer:T1"}


def test_a_repeat_in_the_same_batch_is_replayed(lg: Ledger) -> None:
    """Two copies in one execute_many move the stamps once."""
    first, second = lg.execute_many([transfer(), transfer()])
    assert isinstance(first, Outcome)
    assert second == replay_of(first)
    assert lg.balance(CTI) == 13


def test_a_conflict_in_the_same_batch_is_refused(lg: Ledger) -> None:
    """A second transfer with the same id but other fields in one batch is refused."""
    _, second = lg.execute_many([transfer(), transfer(quantity=2)])
    assert isinstance(second, Rejected)
    assert second.code == "idempotency_conflict"
    assert lg.balance(CTI) == 13


def test_a_model_and_a_dict_with_the_same_fields_are_the_same_command(lg: Ledger) -> None:
    """Idempotency compares what the caller gave, however it was given."""
    first = lg.execute(
        TransferStamps(
            transfer_id="T1",
            from_id=DISTRIBUTOR,
            to_id=CTI,
            quantity=10,
            actor=DISTRIBUTOR,
        )
    )
    assert lg.execute(transfer()) == replay_of(first)


def test_a_repeat_is_replayed_even_when_it_would_now_be_refused(lg: Ledger) -> None:
    """A repeat is never judged afresh: a consumed CFDI replays after the stamps ran out."""
    first = lg.execute(consume(cfdi_uuid=CFDI))
    lg.execute(consume())
    lg.execute(consume())
    assert lg.balance(CTI) == 0
    assert lg.execute(consume(cfdi_uuid=CFDI)) == replay_of(first)


def test_a_cfdi_is_consumed_once_across_accounts(lg: Ledger) -> None:
    """A CFDI UUID already stamped on one CTI is refused on another."""
    lg.execute(consume(cfdi_uuid=CFDI))
    lg.execute(register())
    lg.execute(transfer(transfer_id="T2", to_id="C2-cti"))
    assert rejection(lg, consume("C2-cti", cfdi_uuid=CFDI)).code == "idempotency_conflict"


def test_a_cfdi_uuid_in_other_letter_case_is_the_same_cfdi(lg: Ledger) -> None:
    """UUIDs are case-insensitive: the upper-case retry of a CFDI replays it."""
    first = lg.execute(consume(cfdi_uuid=CFDI))
    assert lg.execute(consume(cfdi_uuid=CFDI.upper())) == replay_of(first)
    assert lg.balance(CTI) == 2


# Rejections leave no trace ---------------------------------------------------------------------


def test_a_refused_cfdi_is_stamped_after_a_top_up(lg: Ledger) -> None:
    """A consumption refused for lack of stamps records no key; its retry is judged afresh."""
    for _ in range(3):
        lg.execute(consume())
    assert rejection(lg, consume(cfdi_uuid=CFDI)).code == "insufficient_stamps"
    lg.execute(transfer(quantity=1))
    outcome = lg.execute(consume(cfdi_uuid=CFDI))
    assert (outcome.replayed, outcome.balance_after) == (False, 0)


def test_a_refused_transfer_id_can_be_used_again(lg: Ledger) -> None:
    """A transfer refused for lack of inventory leaves its id free."""
    assert rejection(lg, transfer(quantity=20_000)).code == "insufficient_inventory"
    assert lg.execute(transfer(quantity=5)).balance_after == 9_992


def test_a_batch_with_a_refused_command_keeps_the_others_exact(lg: Ledger) -> None:
    """A command that fails halfway through its events is dropped; the rest count exactly once."""
    results = lg.execute_many(
        [
            transfer(quantity=5),
            {**register(), "cti_id": "C2"},
            transfer(quantity=7, transfer_id="T2"),
        ]
    )
    assert [r.code if isinstance(r, Rejected) else "ok" for r in results] == [
        "ok",
        "already_exists",
        "ok",
    ]
    assert (lg.balance(DISTRIBUTOR), lg.balance(CTI)) == (9_985, 15)
    assert lg.engine.current("C2") is None


# Defaults the ledger fills in ------------------------------------------------------------------


def test_a_retried_consumption_without_stamping_time_replays(
    lg: Ledger, clock: ManualClock
) -> None:
    """The ledger's clock fills stamped_at; a later retry without it is the same command."""
    first = lg.execute(consume(cfdi_uuid=CFDI))
    clock.advance(timedelta(hours=30))
    assert lg.execute(consume(cfdi_uuid=CFDI)) == replay_of(first)
    assert lg.balance(CTI) == 2


def test_a_retried_consumption_with_another_stamping_time_conflicts(lg: Ledger) -> None:
    """A stamping time given by the caller is part of the command."""
    at = datetime(2026, 1, 5, 17, 0, tzinfo=UTC).isoformat()
    lg.execute(consume(cfdi_uuid=CFDI, stamped_at=at))
    other = datetime(2026, 1, 5, 17, 1, tzinfo=UTC).isoformat()
    assert rejection(lg, consume(cfdi_uuid=CFDI, stamped_at=other)).code == "idempotency_conflict"


def test_a_retry_that_now_gives_a_default_is_other_fields(lg: Ledger) -> None:
    """Only fields the caller gave are compared: giving stamped_at on the retry is a change."""
    lg.execute(consume(cfdi_uuid=CFDI))
    at = datetime(2026, 1, 5, 18, 0, tzinfo=UTC).isoformat()
    assert rejection(lg, consume(cfdi_uuid=CFDI, stamped_at=at)).code == "idempotency_conflict"


# Idempotency keys ------------------------------------------------------------------------------


def test_an_idempotency_key_makes_a_purchase_safe_to_retry(lg: Ledger) -> None:
    """A purchase retried with its key is bought once and replays its sale."""
    first = lg.execute(buy(idempotency_key="order-1"))
    assert lg.execute(buy(idempotency_key="order-1")) == replay_of(first)
    assert lg.balance(DISTRIBUTOR) == 10_997


def test_an_idempotency_key_with_other_fields_is_idempotency_conflict(lg: Ledger) -> None:
    """The same key on a different purchase is refused."""
    lg.execute(buy(idempotency_key="order-1"))
    rejected = rejection(lg, buy(count=2, idempotency_key="order-1"))
    assert rejected.code == "idempotency_conflict"


def test_an_idempotency_key_on_another_command_type_conflicts(lg: Ledger) -> None:
    """A key names one command, whatever its type."""
    lg.execute(buy(idempotency_key="k-1"))
    tag = command("TagClient", DISTRIBUTOR, client_id=CLIENT, favourite=True, idempotency_key="k-1")
    rejected = rejection(lg, tag)
    assert rejected.code == "idempotency_conflict"


def test_purchases_without_a_key_are_not_deduplicated(lg: Ledger) -> None:
    """Without a key, two purchases are two purchases."""
    lg.execute(buy())
    lg.execute(buy())
    assert lg.balance(DISTRIBUTOR) == 11_997


# Ids that create -------------------------------------------------------------------------------


def register(profile_name: str = "Ana") -> dict[str, Any]:
    """RegisterClient C2 under D1."""
    return support.register_client("C2", name=profile_name, email="ana@example.com")


def test_a_repeated_registration_replays_with_its_cti(lg: Ledger) -> None:
    """RegisterClient retried returns the same CTI id."""
    first = lg.execute(register())
    assert lg.execute(register()) == replay_of(first)
    assert first.cti_id == "C2-cti"


def test_a_registration_with_other_data_is_already_exists(lg: Ledger) -> None:
    """The same id with another profile is a different client: already_exists."""
    lg.execute(register())
    assert rejection(lg, register("Otra")).code == "already_exists"


# Ids derived by the ledger ---------------------------------------------------------------------


def mass() -> dict[str, Any]:
    """A mass transfer of two lines to C1's CTI."""
    return support.mass_transfer((CTI, 1), (CTI, 2))


def test_a_repeated_mass_transfer_replays(lg: Ledger) -> None:
    """A mass transfer retried with its batch id moves nothing more."""
    first = lg.execute(mass())
    assert lg.execute(mass()) == replay_of(first)
    assert lg.balance(CTI) == 6


def test_a_caller_transfer_id_never_clashes_with_a_derived_line_id(lg: Ledger) -> None:
    """Derived ids contain ":", which caller ids cannot, so a look-alike id is its own transfer."""
    first = lg.execute(mass())
    assert first.sale_ids == ("B1:1", "B1:2")
    assert rejection(lg, transfer(transfer_id="B1:2")).code == "invalid_command"
    assert lg.execute(transfer(transfer_id="B1.2")).replayed is False
    assert lg.balance(CTI) == 6 + 10
