"""The signer API's wire models (docs/openapi.json is generated from these): what a client
sends, validated at the door, and what it gets back."""

from __future__ import annotations

from typing import Annotated, Literal

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


# --- batch, dry run, wallets ---

#: A batch submission holds at most this many withdrawals.
MAX_BATCH = 100
#: One request derives at most this many deposit addresses.
MAX_DEPOSIT_ADDRESSES = 100
#: A deposit address's label: the customer reference it is bound to (coordinator/deposits.py).
DepositLabel = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")]


class WithdrawalBatchCreate(BaseModel):
    """Withdrawals submitted as one unit: every one checked before any is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    withdrawals: Annotated[list[WithdrawalCreate], Field(min_length=1, max_length=MAX_BATCH)]


class BatchItemAccepted(Accepted):
    """One withdrawal of an accepted batch; `replayed`: submitted before under its
    `client_request_id` with the same body (this is the withdrawal that made)."""

    replayed: bool


class BatchAccepted(BaseModel):
    """The answer to a batch: one entry per withdrawal, in the batch's order."""

    items: list[BatchItemAccepted]


class ApprovalsRequired(BaseModel):
    """The officers' approvals the matched rule asks for."""

    group: str
    k: int
    counted: list[str] = Field(default_factory=list, description="approvals that count already")
    missing: int


class PolicyEvaluation(BaseModel):
    """The policy's dry run of a withdrawal: what the coordinator's screen decides, with
    nothing stored (docs/api.md, "Policy dry run")."""

    outcome: Literal["ALLOW", "REQUIRE_APPROVAL", "DENY", "BLOCK"]
    #: the evaluator's machine-readable reason (`no_rule`, `rule_allow`, `approvals_pending`…)
    reason: str
    rule_id: str | None = None
    rule_action: str | None = None
    reasons: list[str] = Field(default_factory=list, description="the evaluator's explanation")
    policy_hash: str
    policy_version: int
    approvals_required: ApprovalsRequired | None = None
    blacklisted: bool
    #: where the service's screen would move the withdrawal: QUEUED (for the nodes, which
    #: refuse a DENY themselves), PENDING_APPROVAL, or REJECTED (the sanctions list)
    screening_status: Status
    #: the withdrawal this client already made with this `client_request_id` and body
    replay_of: str | None = None


class WalletAddress(BaseModel):
    chain_id: int
    address: str


class WalletInfo(BaseModel):
    """A policy wallet: its own address (the key's root path), the same on every EVM chain."""

    name: str
    policy_wallet: str
    tier: str | None = None
    threshold: int
    address: str
    chains: list[int]
    addresses: list[WalletAddress]
    deposit_addresses: int = Field(description="deposit addresses derived so far")


class AssetBalance(BaseModel):
    chain_id: int
    asset: str
    #: decimal text in the asset's units
    amount: str
    #: the same in the asset's smallest unit (wei, 10^-6 USDT), as decimal text
    units: str
    decimals: int
    #: the token's contract; null for the chain's native coin
    contract: str | None = None


class WalletBalances(BaseModel):
    wallet: str
    address: str
    balances: list[AssetBalance]


class DepositAddressesCreate(BaseModel):
    """`count` deposit addresses of the wallet; with `labels` (one customer reference each)
    the request is idempotent: a label asked again gets its address again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: ChainId
    count: Annotated[int, Field(ge=1, le=MAX_DEPOSIT_ADDRESSES)]
    labels: Annotated[list[DepositLabel], Field(max_length=MAX_DEPOSIT_ADDRESSES)] | None = None


class DepositAddress(BaseModel):
    address: str
    label: str
    index: int = Field(description="the child index under the deposit branch")
    path: str = Field(description="the BIP32 path under the wallet key")


class DepositAddressBatch(BaseModel):
    wallet: str
    chain_id: int
    items: list[DepositAddress]
