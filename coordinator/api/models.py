"""The signer API's wire models (docs/openapi.json is generated from these): what a client
sends, validated at the door, and what it gets back."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.lifecycle import Status
from coordinator.fees import FeeLevel

#: A client's own id for a withdrawal: unique forever per client (custody.md §2.5).
ClientRequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
WithdrawalId = Annotated[str, Field(pattern=r"^wd_[0-9a-f]{32}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Asset = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9._-]{0,15}$")]
#: EIP-55 is checked by the service (a 422 naming the wrong character), so the shape only here.
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
#: Decimal text in the asset's units ("12.5" USDT), never a JSON number (custody.md §2.2).
Amount = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,29})(\.[0-9]{1,30})?$")]
ChainId = Annotated[int, Field(ge=1, le=2**53 - 1)]


class WithdrawalCreate(BaseModel):
    """Pay `amount` of `asset` on `chain_id` from `wallet` to `destination`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_request_id: ClientRequestId
    wallet: Name
    chain_id: ChainId
    asset: Asset
    destination: Address
    amount: Amount
    fee_level: FeeLevel = FeeLevel.MEDIUM
    note: Annotated[str, Field(max_length=500)] = ""


class Withdrawal(BaseModel):
    """A withdrawal as the service holds it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    client_request_id: str
    status: Status
    sub_status: str
    terminal: bool
    wallet: str
    chain_id: int
    asset: str
    destination: str
    amount: str
    fee_level: FeeLevel
    note: str
    reason_code: str | None = None
    reason: str | None = None
    rule_id: str | None = None
    policy_hash: str | None = None
    tx_hash: str | None = None
    approvals: list[str] = Field(default_factory=list, description="officers who approved")
    created_at: float
    updated_at: float


class Accepted(BaseModel):
    """The answer to a submission: its id and where it stands (202: never waiting on signing)."""

    id: str
    status: Status
    client_request_id: str


class WithdrawalPage(BaseModel):
    items: list[Withdrawal]
    #: pass as `cursor` for the next page; null on the last one
    next_cursor: str | None = None


class WithdrawalEvent(BaseModel):
    event_id: int
    withdrawal_id: str
    status: Status
    sub_status: str
    created_at: float


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    nodes_up: list[int]
    nodes_down: list[int]
    chains: dict[str, bool]
