"""Command models: outside input validated at the boundary (DESIGN §4).

Every command is a JSON object with a ``type``; the models here parse it once into typed fields.
``keys()`` names what makes a retry safe: the natural key of the command (a transfer id, a CFDI
UUID, the id of what it creates) and the caller's ``idempotency_key`` when given.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)

from ledger.commands.fields import (
    CLEAN,
    CLEAN_MULTILINE,
    Comments,
    Email,
    FutureDate,
    Id,
    IdempotencyKey,
    Instant,
    Label,
    Money,
    Name,
    Reason,
    SaleId,
    Secret,
    SecretGuess,
    time_errors,
)
from ledger.commands.profiles import ClientProfile, ClientProfileChange, DistributorProfile
from ledger.credit_codes import code_digest

# Re-exported for the command models of other modules: every text and time field of a command
# uses one of these types (``ledger/commands/fields.py``).
__all__ = [
    "CLEAN",
    "CLEAN_MULTILINE",
    "COMMAND_ADAPTER",
    "AnyCommand",
    "Command",
    "Comments",
    "Email",
    "FutureDate",
    "Id",
    "IdempotencyKey",
    "Instant",
    "Label",
    "Money",
    "Name",
    "Reason",
    "SaleId",
    "Secret",
    "SecretGuess",
    "time_errors",
]

RFC_SHAPE = r"^[A-Za-zÑñ&]{3,4}[0-9]{6}[A-Za-z0-9]{3}$"
"""Letters, a date and a homoclave: the shape of an RFC, without the date and digit checks."""
Quantity = Annotated[int, Field(gt=0, le=1_000_000_000, strict=True)]
Unit = Literal["stamps", "points"]
RfcText = Annotated[str, StringConstraints(min_length=1, max_length=20), CLEAN]
"""An RFC as given; the handler checks it in full (``invalid_rfc``)."""


class Command(BaseModel):
    """Fields every command may carry, and ``actor``, which every command must carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey | None = None
    # Who acts (DESIGN §4a): required, so a command without it is ``invalid_command`` naming
    # ``actor``. Who may act on what is decided by ``ledger/commands/auth.py``.
    actor: Id

    # Commands that create an aggregate are keyed by the id they create: a repeat with other
    # fields is then ``already_exists`` rather than ``idempotency_conflict``.
    creates: ClassVar[bool] = False
    # The code a repeat of a natural key with other fields gets (``code_redeemed`` for a code
    # redeemed to another target).
    conflict_code: ClassVar[str] = "idempotency_conflict"
    # Fields that never enter the idempotency fingerprint (a credit code, a NIP).
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def secret_fingerprint(self) -> dict[str, str]:
        """What stands in for the secret fields in the fingerprint (never the secrets)."""
        return {}

    def natural_keys(self) -> tuple[str, ...]:
        """Keys the command's own fields make (ids it creates, transfer ids, CFDI UUIDs)."""
        return ()

    def keys(self) -> tuple[str, ...]:
        """Every idempotency key of this command."""
        keys = self.natural_keys()
        if self.idempotency_key is not None:
            keys = (*keys, f"key:{self.idempotency_key}")
        return keys


# Catalogue and network -----------------------------------------------------------------------


class OpenMasterAccount(Command):
    """Opens the platform's master account."""

    type: Literal["OpenMasterAccount"] = "OpenMasterAccount"
    # The first master account of a ledger may open itself without an actor (DESIGN §4a).
    actor: Id | None = None  # type: ignore[assignment]
    master_id: Id
    name: Name
    rfc: RfcText
    email: Email | None = None
    """The platform administrator's login (indexed: no client may use it as its admin login)."""
    creates: ClassVar[bool] = True

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the id it creates."""
        return (f"id:{self.master_id}",)


class DefinePackage(Command):
    """Adds a package to a seller's catalogue."""

    type: Literal["DefinePackage"] = "DefinePackage"
    seller_id: Id
    package_id: Id
    # Required unless ``retire`` (checked by the handler, which names the missing field).
    unit: Unit | None = None
    quantity: Quantity | None = None
    price: Money | None = None
    audience: Literal["client", "distributor"] | None = None
    validity_days: Annotated[int, Field(gt=0, le=3660)] | None = None
    services: Annotated[
        tuple[Annotated[str, StringConstraints(min_length=1, max_length=50), CLEAN], ...],
        Field(max_length=50),
    ] = ()
    # A package id is defined once: ``replaces`` says a new definition replaces the old one on
    # purpose; ``retire`` takes the package off sale (``PackageRetired``).
    replaces: bool = False
    retire: bool = False


class RegisterDistributor(Command):
    """Registers a distributor under a parent (the master account or a distributor)."""

    type: Literal["RegisterDistributor"] = "RegisterDistributor"
    distributor_id: Id
    parent_id: Id
    profile: DistributorProfile
    creates: ClassVar[bool] = True

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the id it creates."""
        return (f"id:{self.distributor_id}",)


class _StatusCommand(Command):
    distributor_id: Id
    action: ClassVar[str] = ""


class ValidateDistributor(_StatusCommand):
    """The parent validates a distributor."""

    type: Literal["ValidateDistributor"] = "ValidateDistributor"
    action: ClassVar[str] = "validate"


class ActivateDistributor(_StatusCommand):
    """The parent activates a distributor until ``expires_on``."""

    type: Literal["ActivateDistributor"] = "ActivateDistributor"
    expires_on: FutureDate
    action: ClassVar[str] = "activate"


class SuspendDistributor(_StatusCommand):
    """The parent suspends a distributor."""

    type: Literal["SuspendDistributor"] = "SuspendDistributor"
    action: ClassVar[str] = "suspend"


class ReactivateDistributor(_StatusCommand):
    """The parent reactivates a suspended distributor."""

    type: Literal["ReactivateDistributor"] = "ReactivateDistributor"
    action: ClassVar[str] = "reactivate"


class RenewDistributor(_StatusCommand):
    """The parent renews a distributor until ``expires_on``."""

    type: Literal["RenewDistributor"] = "RenewDistributor"
    expires_on: FutureDate
    action: ClassVar[str] = "renew"


class CancelDistributor(_StatusCommand):
    """The parent cancels a distributor."""

    type: Literal["CancelDistributor"] = "CancelDistributor"
    action: ClassVar[str] = "cancel"


class PurgeDistributor(Command):
    """The parent purges a distributor cancelled 30 days ago or more (once)."""

    type: Literal["PurgeDistributor"] = "PurgeDistributor"
    distributor_id: Id

    def natural_keys(self) -> tuple[str, ...]:
        """A distributor is purged once; a repeat (``ledger purge-due`` again) replays."""
        return (f"purge:{self.distributor_id}",)


class DefineSubscriptionProduct(Command):
    """The master account lists a yearly subscription (Multinivel or an MKL) at a pre-IVA price."""

    type: Literal["DefineSubscriptionProduct"] = "DefineSubscriptionProduct"
    seller_id: Id
    product: Label
    kind: Literal["multinivel", "mkl"]
    annual_price: Money
    licence_points: Annotated[int, Field(ge=0, le=1_000_000_000, strict=True)] = 0
    """The points a licence of this MKL's software costs (``GenerateLicence``); 0: free."""


class ContractSubscription(Command):
    """A distributor contracts a catalogue subscription, pro rata until its expiry."""

    type: Literal["ContractSubscription"] = "ContractSubscription"
    distributor_id: Id
    product: Label


class ConvertClientToDistributor(Command):
    """A client's distributor turns the client into a sub-distributor of its own."""

    type: Literal["ConvertClientToDistributor"] = "ConvertClientToDistributor"
    client_id: Id
    distributor_id: Id
    creates: ClassVar[bool] = True

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the distributor id it creates."""
        return (f"id:{self.distributor_id}",)


class ChangeSettings(Command):
    """A seller changes its global settings."""

    type: Literal["ChangeSettings"] = "ChangeSettings"
    seller_id: Id
    bulk_stamp_price: Money | None = None
    allow_pcc_stamp_purchase: bool | None = None
    allow_pcc_point_purchase: bool | None = None
    unlimited_cti_fee_points: Annotated[int, Field(gt=0, le=1_000_000, strict=True)] | None = None


# Purchases and transfers ---------------------------------------------------------------------


class BuyPackage(Command):
    """A distributor buys ``count`` packages from its seller."""

    type: Literal["BuyPackage"] = "BuyPackage"
    buyer_id: Id
    seller_id: Id
    package_id: Id
    count: Annotated[int, Field(gt=0, le=10_000, strict=True)] = 1
    pay_with: Literal["money", "points"] = "money"


class _Transfer(Command):
    transfer_id: Id
    from_id: Id
    to_id: Id
    quantity: Quantity
    # None: the seller's price list (``ledger.commands.pricing``).
    amount: Money | None = None

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the transfer id."""
        return (f"transfer:{self.transfer_id}",)


class TransferStamps(_Transfer):
    """A distributor transfers stamps to a client's CTI or a sub-distributor."""

    type: Literal["TransferStamps"] = "TransferStamps"


class TransferPoints(_Transfer):
    """A distributor transfers points to a client or a sub-distributor."""

    type: Literal["TransferPoints"] = "TransferPoints"


class MassTransferLine(BaseModel):
    """One line of a mass transfer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_id: Id
    quantity: Quantity
    amount: Money | None = None


class MassTransfer(Command):
    """Stamps to many accounts at once: all lines or none."""

    type: Literal["MassTransfer"] = "MassTransfer"
    batch_id: Id
    from_id: Id
    unit: Unit = "stamps"
    lines: Annotated[tuple[MassTransferLine, ...], Field(min_length=1, max_length=10_000)]

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the batch id (each line's transfer id derives from it)."""
        return (f"batch:{self.batch_id}",)


class ReclaimStamps(Command):
    """A distributor takes unused stamps back from its client's CTI, crediting the client.

    The credit line (a negative sale for the CTI's client) gives back ``amount``, else what the
    price list charges for those stamps.
    """

    type: Literal["ReclaimStamps"] = "ReclaimStamps"
    transfer_id: Id
    from_cti_id: Id
    quantity: Quantity
    reason: Reason
    # What the credit line gives back to the client; None: the seller's price list.
    amount: Money | None = None

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the transfer id."""
        return (f"transfer:{self.transfer_id}",)


# Clients and stamping accounts ---------------------------------------------------------------


class RegisterClient(Command):
    """A distributor registers a client; its default standard CTI opens with it."""

    type: Literal["RegisterClient"] = "RegisterClient"
    client_id: Id
    distributor_id: Id
    profile: ClientProfile
    nic: Annotated[str, StringConstraints(min_length=1, max_length=50), CLEAN] | None = None
    cti_id: Id | None = None
    cti_password: Secret | None = None
    """The default CTI's password; when omitted, one is generated and shown once."""
    creates: ClassVar[bool] = True
    # A password never enters the fingerprint (see ``engine.given_fields``).
    secret_fields: ClassVar[frozenset[str]] = frozenset({"cti_password"})

    def default_cti_id(self) -> str:
        """The id of the default CTI (given, or derived from the client id)."""
        return self.cti_id or f"{self.client_id}-cti"

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the ids it creates."""
        return (f"id:{self.client_id}", f"id:{self.default_cti_id()}")


class UpdateClientProfile(Command):
    """Changes the fields of a client's profile it names (``null`` clears an optional one)."""

    type: Literal["UpdateClientProfile"] = "UpdateClientProfile"
    client_id: Id
    profile: ClientProfileChange


class TagClient(Command):
    """Sets a client's classification (favourite, dropped, colour)."""

    type: Literal["TagClient"] = "TagClient"
    client_id: Id
    favourite: bool | None = None
    dropped: bool | None = None
    colour: Annotated[str, StringConstraints(max_length=30), CLEAN] | None = None


class AssignAdminProfile(Command):
    """Sets the login that administers a client."""

    type: Literal["AssignAdminProfile"] = "AssignAdminProfile"
    client_id: Id
    email: Email
    mobile: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ]{10,15}$", max_length=16)]


class OpenStampingAccount(Command):
    """Opens a CTI for a client: standard, or unlimited paid in points for a year."""

    type: Literal["OpenStampingAccount"] = "OpenStampingAccount"
    cti_id: Id
    client_id: Id
    kind: Literal["standard", "unlimited"] = "standard"
    password: Secret | None = None
    """When omitted, a password is generated and shown once (outcome ``cti_password``)."""
    rfc_lock: RfcText | None = None
    creates: ClassVar[bool] = True

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the id it creates."""
        return (f"id:{self.cti_id}",)


class BlockStampingAccount(Command):
    """Blocks a CTI."""

    type: Literal["BlockStampingAccount"] = "BlockStampingAccount"
    cti_id: Id


class ReactivateStampingAccount(Command):
    """Reactivates a blocked CTI."""

    type: Literal["ReactivateStampingAccount"] = "ReactivateStampingAccount"
    cti_id: Id


class ResetStampingPassword(Command):
    """Sets a new password on a CTI."""

    type: Literal["ResetStampingPassword"] = "ResetStampingPassword"
    cti_id: Id
    password: Secret


class RenewUnlimitedAccount(Command):
    """Pays another year of an unlimited CTI from the client's points."""

    type: Literal["RenewUnlimitedAccount"] = "RenewUnlimitedAccount"
    cti_id: Id


class VerifyStampingCredentials(Command):
    """Checks a CTI's id and password; a wrong password is recorded as a failed check."""

    type: Literal["VerifyStampingCredentials"] = "VerifyStampingCredentials"
    cti_id: Id
    password: SecretGuess

    @field_validator("idempotency_key")
    @classmethod
    def _never_replayed(cls, value: str | None) -> str | None:
        # The password is not part of a fingerprint, so a replayed check would answer another
        # password's result: every check is judged afresh.
        if value is not None:
            msg = "a credentials check is never replayed: send it without idempotency_key"
            raise ValueError(msg)
        return value

    def keys(self) -> tuple[str, ...]:
        """None: every check is judged afresh."""
        return ()


class ConfigureAutoTopUp(Command):
    """When a consumption leaves fewer than ``minimum`` stamps, send ``credit`` at ``amount``."""

    type: Literal["ConfigureAutoTopUp"] = "ConfigureAutoTopUp"
    cti_id: Id
    minimum: Quantity
    credit: Quantity
    # None: priced by the price list each time the rule fires.
    amount: Money | None = None


class DisableAutoTopUp(Command):
    """Turns automatic top-up off."""

    type: Literal["DisableAutoTopUp"] = "DisableAutoTopUp"
    cti_id: Id


class MassAutoTopUp(Command):
    """A distributor sells each selected CTI its automatic top-up now: all or none."""

    type: Literal["MassAutoTopUp"] = "MassAutoTopUp"
    batch_id: Id
    distributor_id: Id
    cti_ids: Annotated[tuple[Id, ...], Field(min_length=1, max_length=10_000)]

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the batch id (each line's transfer id derives from it)."""
        return (f"batch:{self.batch_id}",)


CFDI_UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
CfdiUuid = Annotated[
    str, StringConstraints(max_length=36, pattern=CFDI_UUID_PATTERN, to_upper=True)
]
"""A CFDI UUID, upper-cased: hex digits have no case, so the same CFDI retried in other letters
is a repeat (its key and the fingerprint of the fields given say so). pydantic upper-cases it
in its core, with no Python call per command."""


class ConsumeStamp(Command):
    """One stamped CFDI consumes one stamp (the hot path)."""

    type: Literal["ConsumeStamp"] = "ConsumeStamp"
    cti_id: Id
    cfdi_uuid: CfdiUuid
    # The shape of an RFC (cheap enough for the hot path); the full check happens at registration.
    issuer_rfc: Annotated[str, StringConstraints(pattern=RFC_SHAPE, min_length=12, max_length=13)]
    stamped_at: Instant | None = None

    def natural_keys(self) -> tuple[str, ...]:
        """A CFDI UUID is consumed once, forever."""
        return (f"cfdi:{self.cfdi_uuid}",)


HOLD_EXPIRES_IN_S_DEFAULT = 300
HOLD_EXPIRES_IN_S_MAX = 86_400
"""Bounds of a hold's life: five minutes unless the caller asks, at most one day."""


class ReserveStamp(Command):
    """Sets one stamp aside for a CFDI until it is posted, voided or expires (a hold)."""

    type: Literal["ReserveStamp"] = "ReserveStamp"
    hold_id: Id
    cti_id: Id
    cfdi_uuid: CfdiUuid
    issuer_rfc: Annotated[str, Field(pattern=RFC_SHAPE, min_length=12, max_length=13)]
    expires_in_s: Annotated[int, Field(ge=1, le=HOLD_EXPIRES_IN_S_MAX, strict=True)] = (
        HOLD_EXPIRES_IN_S_DEFAULT
    )

    def natural_keys(self) -> tuple[str, ...]:
        """A hold id is opened once."""
        return (f"hold:{self.hold_id}",)


class PostReservation(Command):
    """A hold becomes the consumption of its CFDI (``stamped_at`` defaults to the clock)."""

    type: Literal["PostReservation"] = "PostReservation"
    hold_id: Id
    stamped_at: Instant | None = None

    def natural_keys(self) -> tuple[str, ...]:
        """A hold is posted once (the same post again replays)."""
        return (f"hold-post:{self.hold_id}",)


class VoidReservation(Command):
    """A hold closes without a consumption: its stamp goes back to its lot."""

    type: Literal["VoidReservation"] = "VoidReservation"
    hold_id: Id

    def natural_keys(self) -> tuple[str, ...]:
        """A hold is voided once (the same void again replays)."""
        return (f"hold-void:{self.hold_id}",)


class AssignPackage(Command):
    """A seller grants a client package (stamps with a validity) to a CTI."""

    type: Literal["AssignPackage"] = "AssignPackage"
    grant_id: Id
    seller_id: Id
    cti_id: Id
    package_id: Id

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the grant id."""
        return (f"transfer:{self.grant_id}",)


class ClientBuyPackage(Command):
    """A client buys a package of its distributor's price list through its panel (PCC)."""

    type: Literal["ClientBuyPackage"] = "ClientBuyPackage"
    client_id: Id
    package_id: Id
    cti_id: Id | None = None
    purchase_id: Id | None = None

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the purchase id when given (it is also the sale id)."""
        return (f"transfer:{self.purchase_id}",) if self.purchase_id else ()


class SpendPoints(Command):
    """A client (or a distributor, of its own inventory) pays points for a product."""

    type: Literal["SpendPoints"] = "SpendPoints"
    client_id: Id | None = None
    # Instead of ``client_id``: a distributor spends its own points (DESIGN §4a).
    distributor_id: Id | None = Field(default=None, validate_default=True)
    product: Label
    points: Quantity
    spend_id: Id | None = None

    @field_validator("distributor_id", mode="after")
    @classmethod
    def _one_holder(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Declared after ``client_id``: exactly one of the two names whose points are spent
        # (a ``client_id`` that failed its own check is reported already).
        if "client_id" in info.data and (value is None) == (info.data["client_id"] is None):
            msg = "name exactly one of client_id and distributor_id"
            raise ValueError(msg)
        return value

    @property
    def holder_id(self) -> str:
        """Whose points are spent: the client's wallet or the distributor's inventory."""
        holder = self.client_id or self.distributor_id
        assert holder is not None  # the validator requires one
        return holder

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the spend id when given."""
        return (f"spend:{self.spend_id}",) if self.spend_id else ()


class IssueCreditCode(Command):
    """A distributor sets credits aside behind a code and NIP (shown once, in the outcome)."""

    type: Literal["IssueCreditCode"] = "IssueCreditCode"
    code_id: Id
    distributor_id: Id
    unit: Unit
    quantity: Quantity
    amount: Money | None = None
    expires_on: FutureDate | None = None
    creates: ClassVar[bool] = True

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the code id (the issuer's own key, never the secret code)."""
        return (f"id:{self.code_id}",)


class RedeemCreditCode(Command):
    """The bearer of a code and its NIP moves the credits to a CTI (stamps) or a wallet (points)."""

    type: Literal["RedeemCreditCode"] = "RedeemCreditCode"
    code: Annotated[str, Field(min_length=16, max_length=40, pattern=r"^[0-9A-Za-z -]+$")]
    nip: Annotated[str, Field(max_length=6, pattern=r"^[0-9]{6}$")]
    to_id: Id
    conflict_code: ClassVar[str] = "code_redeemed"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"code", "nip"})

    def code_digest(self) -> str:
        """The SHA-256 of the normalised code (what the ledger keeps instead of the code)."""
        return code_digest(self.code)

    def natural_keys(self) -> tuple[str, ...]:
        """A code is redeemed once: keyed by its digest, never by the code itself."""
        return (f"redeem:{self.code_digest()}",)

    def secret_fingerprint(self) -> dict[str, str]:
        """The code's digest stands in for the code; the NIP never enters the fingerprint."""
        return {"code_sha256": self.code_digest()}


class CancelCreditCode(Command):
    """The issuer cancels an active code (or closes an expired one): its credits come back."""

    type: Literal["CancelCreditCode"] = "CancelCreditCode"
    code_id: Id


class GenerateLicence(Command):
    """A yearly licence of a software product for a client, under the distributor's MKL."""

    type: Literal["GenerateLicence"] = "GenerateLicence"
    client_id: Id
    product: Label
    licence_id: Id | None = None

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the licence id when given."""
        return (f"licence:{self.licence_id}",) if self.licence_id else ()


class BuyUserSeat(Command):
    """A client's distributor sells it a yearly extra-user seat (renewing a lapsed one first)."""

    type: Literal["BuyUserSeat"] = "BuyUserSeat"
    seat_id: Id
    client_id: Id
    price: Money

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the seat id."""
        return (f"seat:{self.seat_id}",)


class RenewUserSeat(Command):
    """The client's distributor sells another year of a seat, ahead of its lapse."""

    type: Literal["RenewUserSeat"] = "RenewUserSeat"
    seat_id: Id
    price: Money


class AddPortalUser(Command):
    """A portal user of a client takes a free seat."""

    type: Literal["AddPortalUser"] = "AddPortalUser"
    user_id: Id
    client_id: Id
    email: Email
    creates: ClassVar[bool] = True

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the id it creates."""
        return (f"id:{self.user_id}",)


class DeactivatePortalUser(Command):
    """A portal user can no longer log in; it keeps its seat."""

    type: Literal["DeactivatePortalUser"] = "DeactivatePortalUser"
    user_id: Id


class ChangePortalUser(Command):
    """A portal user's seat goes to another e-mail (and is active again)."""

    type: Literal["ChangePortalUser"] = "ChangePortalUser"
    user_id: Id
    email: Email


class DeletePortalUser(Command):
    """A portal user is deleted; its seat is lost for good."""

    type: Literal["DeletePortalUser"] = "DeletePortalUser"
    user_id: Id


class RegisterInvoice(Command):
    """Marks sales of a seller as invoiced; a sale is invoiced once."""

    type: Literal["RegisterInvoice"] = "RegisterInvoice"
    seller_id: Id
    invoice_ref: Label
    sale_ids: Annotated[tuple[SaleId, ...], Field(min_length=1, max_length=10_000)]

    def natural_keys(self) -> tuple[str, ...]:
        """Keyed by the invoice reference of the seller."""
        return (f"invoice:{self.seller_id}:{self.invoice_ref}",)


AnyCommand = Annotated[
    OpenMasterAccount
    | DefinePackage
    | RegisterDistributor
    | ValidateDistributor
    | ActivateDistributor
    | SuspendDistributor
    | ReactivateDistributor
    | RenewDistributor
    | CancelDistributor
    | PurgeDistributor
    | DefineSubscriptionProduct
    | ContractSubscription
    | ConvertClientToDistributor
    | ChangeSettings
    | BuyPackage
    | TransferStamps
    | TransferPoints
    | MassTransfer
    | ReclaimStamps
    | RegisterClient
    | UpdateClientProfile
    | TagClient
    | AssignAdminProfile
    | OpenStampingAccount
    | BlockStampingAccount
    | ReactivateStampingAccount
    | ResetStampingPassword
    | RenewUnlimitedAccount
    | VerifyStampingCredentials
    | ConfigureAutoTopUp
    | DisableAutoTopUp
    | MassAutoTopUp
    | ConsumeStamp
    | ReserveStamp
    | PostReservation
    | VoidReservation
    | AssignPackage
    | ClientBuyPackage
    | SpendPoints
    | IssueCreditCode
    | RedeemCreditCode
    | CancelCreditCode
    | GenerateLicence
    | BuyUserSeat
    | RenewUserSeat
    | AddPortalUser
    | DeactivatePortalUser
    | ChangePortalUser
    | DeletePortalUser
    | RegisterInvoice,
    Field(discriminator="type"),
]

COMMAND_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyCommand)
