"""Payouts on an EVM chain: from "pay this amount of this asset to this address" to a transaction
mined with the registry's confirmations — native coin or ERC-20, threshold-signed by the nodes,
each of which decides it on its own policy.

A payout moves through states that are persisted before their side effect (docs/chains.md,
"Payouts"):

    accepted ──reserve nonce, fix payload──▶ reserved ──sign──▶ signed ──send──▶ sent
       ▲                                        │                                  │ mined
       └─── a transient signing failure ────────┤                                  ▼
                                                │ refused             confirmed ◀── mined
                                                ▼                                  │ reverted
                                              failed ◀─────────────────────────────┘

* Fees and gas are settled before the nonce is taken (`coordinator.fees`): a fee above the
  ceiling or a call that would revert costs no nonce.
* The nonce is reserved and the unsigned payload fixed in one transaction, then signed under the
  account's lock (`coordinator.nonces`); a refusal gives the nonce back, so nothing is left
  behind as a gap.  After a crash a reserved payout is signed again with the same payload and
  the same request id (the nodes accept the same request for the same bytes), and since the
  first signature was never stored, it was never sent.
* The signed bytes are stored before they are sent; re-sending them is idempotent (same hash),
  so a crash between store and send, or after the send, is repaired by sending again.
* The tracker (`track`) follows the receipt to the confirmations; a receipt that vanishes (a
  reorg) sends the same bytes again; a reverted transaction is failed with its reason.
* A signed payout not yet mined can be cancelled on chain (`cancel`): a 0-value self-send at
  its nonce, which the nodes sign only as the cancellation of what they signed for it.  One of
  the two is mined: the payout is then confirmed (the cancellation lost) or cancelled.  It is
  also how a nonce whose signed transaction the chain refuses is filled, so that every later
  nonce of the address can be mined.

A payout may be a batch (`PayoutRequest.legs`, built by `batch_request`): many recipients of
ether or of one token paid in one transaction through the chain's disperse contract, decided by
every node on every leg and on the total (policies/evaluator.py, batches); it moves through the
same states.  A token batch spends an ERC-20 allowance of the sender to the contract, so before
its nonce is taken (`_allowed`) the engine reads the allowance on chain and, when it falls short,
makes it: an `approve` of the batch's exact total (after an `approve` of zero when some allowance
is left, which tokens such as USDT require), each a payout of kind `allowance` of its own, with
its own nonce, signed by the nodes only to the policy's disperse contract
(signer/chains/allowance.py) and mined before the batch is estimated.  The batches of one token
from one address go one at a time (each waits for the one before to be mined), so the allowance
read is the one the batch will spend.

A sweep (`sweep`) moves a deposit address's whole balance of an asset to the wallet's own
address, signed with the deposit address's derived share; a token sweep's gas is sent to the
deposit address first by a payout of kind `gas` (`_fuelled`).  The nodes sign both only as
transfers between the wallet's own addresses (signer/chains/internal.py).

The payout id is the request id the nodes see: a payout is one request however often it is
retried, and a second payout with the same id but another body is refused (REQUEST_REUSED).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Final, TypeVar, cast

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.addresses import AddressRefused, check_destination, checked_address
from coordinator.errors import SigningFailed, SignRequestInvalid
from coordinator.fees import (
    Eip1559Fees,
    FeeAboveCeiling,
    FeeLevel,
    Fees,
    LegacyFees,
    estimate_gas,
    quote_fees,
)
from coordinator.nonces import NonceManager
from coordinator.quotes import Quoted, QuotesAhead, read_quotes
from coordinator.registry import Chain, ChainRegistry
from coordinator.rpc import (
    CallReverted,
    ChainRpc,
    ChainUnavailable,
    Receipt,
    TransactionRejected,
    WrongChain,
)
from coordinator.signing import SignOutcome
from coordinator.store import DepositAddressRow, PayoutRow
from coordinator.transactions import TransactionOps
from policies.approvals import Approval, parse_approval
from policies.document import AMOUNT_CONTEXT, amount_str
from policies.errors import PolicyError
from signer.chains.allowance import encode_approve
from signer.chains.disperse import MAX_LEGS, encode_disperse_ether, encode_disperse_token
from signer.chains.erc20 import encode_transfer
from signer.chains.evm import (
    ChainError,
    Eip1559Transfer,
    LegacyTransfer,
    Transfer,
    address_of,
    decode_signing_payload,
    intrinsic_gas,
    transaction_hash,
)
from signer.chains.replacement import MAX_BUMP, is_cancellation
from signer.errors import TesseraError
from signer.node import codec
from signer.node.faults import failpoint
from signer.problems import ErrorCode
from signer.protocol.hd import derive

log = logging.getLogger(__name__)

__all__ = [
    "PayoutEngine",
    "PayoutError",
    "PayoutKind",
    "PayoutRequest",
    "PayoutState",
    "batch_request",
]

T = TypeVar("T")
U = TypeVar("U")
#: What a caller of `PayoutEngine.drive` writes in the transaction that stores the signed
#: bytes: called with that session and the payout as it is being stored.
Signed = Callable[[Session, PayoutRow], None]

_AMOUNT: Final = re.compile(r"^(0|[1-9][0-9]{0,40})(\.[0-9]{1,36})?$")
_PAYOUT_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Refusals no retry changes (the policy, the bytes, the request): the payout fails.  Anything
# else (a node down, a session aborted, no signer set free) leaves it accepted for a retry.
FINAL_REFUSALS: Final = frozenset(
    {
        ErrorCode.POLICY_DENIED,
        ErrorCode.TRANSACTION_INVALID,
        ErrorCode.UNSUPPORTED_TRANSACTION,
        ErrorCode.INTENT_MISMATCH,
        ErrorCode.SENDER_MISMATCH,
        ErrorCode.REQUEST_REUSED,
        ErrorCode.RAW_SIGNING_REFUSED,
        ErrorCode.NO_POLICY,
        ErrorCode.VALIDATION,
        ErrorCode.RECEIPTS_MISSING,
        ErrorCode.ALLOWANCE_REFUSED,
        ErrorCode.INTERNAL_TRANSFER_REFUSED,
        ErrorCode.FEE_ABOVE_CEILING,
    }
)

#: The gas a token's `transfer` is funded for when the chain will not estimate it (USDT's
#: costs up to about 63,000; an estimate that works is used instead).
TOKEN_TRANSFER_GAS_BOUND: Final = 100_000
#: The id marks of the helper payouts the engine makes (an allowance for a token batch, gas
#: for a token sweep: `<payout>:allowance:<n>`), refused in a caller's payout id, so a caller
#: can never take or foresee one.
_HELPER_MARKS: Final = (":allowance:", ":gas:")
#: At most this many derived addresses are kept (`PayoutEngine._address`).
_ADDRESS_CACHE: Final = 4096
#: A request whose destination passed every check (`check`) is not checked again when it is
#: stored (`submit`, `admitted`) within this many seconds under the same policy version: the
#: signer API checks a withdrawal when it is submitted and stores its payout moments later.
#: Past that (a withdrawal that waited for officers), or under another policy version, the
#: checks run again.  The nodes decide the policy on their own either way.
CHECK_REUSE_SECONDS: Final = 5.0
#: At most this many helper transactions a payout waits for in one drive (for an allowance: a
#: reset to zero, the total, and one more if the allowance moved meanwhile).
_PREPARE_STEPS: Final = 3


class PayoutKind(StrEnum):
    PAYOUT = "payout"
    #: the ERC-20 approve a token batch spends (`PayoutRow.for_payout` names the batch)
    ALLOWANCE = "allowance"
    #: a deposit address's whole balance of an asset to the wallet's own address
    SWEEP = "sweep"
    #: ether from the wallet's address to a deposit address, the gas of its token sweep
    #: (`PayoutRow.for_payout` names the sweep)
    GAS = "gas"


class PayoutState(StrEnum):
    ACCEPTED = "accepted"
    RESERVED = "reserved"
    SIGNED = "signed"
    SENT = "sent"
    MINED = "mined"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset({PayoutState.CONFIRMED, PayoutState.FAILED, PayoutState.CANCELLED})


class PayoutError(TesseraError):
    """A payout that cannot go on: `code` says why, `payout_id` which one, `check` the check
    that failed when there is one (an address check's name)."""

    def __init__(
        self, payout_id: str, code: ErrorCode, detail: str, check: str | None = None
    ) -> None:
        self.payout_id = payout_id
        self.code = code
        self.detail = detail
        self.check = check
        super().__init__(f"payout {payout_id}: {detail}")


@dataclass(frozen=True)
class PayoutRequest:
    """Pay `amount` (decimal text in the asset's units: "12.5" USDT) of `asset` on `chain_id`
    from `wallet` (at BIP32 `path`) to `destination` (EIP-55)."""

    payout_id: str
    wallet: str
    chain_id: int
    asset: str
    destination: str
    amount: str
    initiator: str
    fee_level: FeeLevel = FeeLevel.MEDIUM
    path: tuple[int, ...] = ()
    approvals: Sequence[Approval] = field(default=(), compare=False)
    #: a batch: (recipient, amount text) per leg; `destination` is then the chain's disperse
    #: contract and `amount` the legs' sum (`batch_request` fills both)
    legs: tuple[tuple[str, str], ...] | None = None


def batch_request(
    chain: Chain,
    payout_id: str,
    wallet: str,
    asset: str,
    legs: Sequence[tuple[str, str]],
    initiator: str,
    *,
    fee_level: FeeLevel = FeeLevel.MEDIUM,
    path: tuple[int, ...] = (),
    approvals: Sequence[Approval] = (),
) -> PayoutRequest:
    """A payout of `legs` (recipient, amount text) in one transaction through `chain`'s
    disperse contract; the amounts are checked when it is submitted."""
    total = Decimal(0)
    for _recipient, amount in legs:
        # a malformed amount is left out here and refused, naming its leg, at submission
        if isinstance(amount, str) and _AMOUNT.match(amount):
            total = AMOUNT_CONTEXT.add(total, Decimal(amount))
    return PayoutRequest(
        payout_id=payout_id,
        wallet=wallet,
        chain_id=chain.chain_id,
        asset=asset,
        destination=chain.disperse or "",
        amount=amount_str(total),
        initiator=initiator,
        fee_level=fee_level,
        path=path,
        approvals=approvals,
        legs=tuple((recipient, amount) for recipient, amount in legs),
    )


@dataclass(frozen=True)
class _Call:
    """The transaction a payout makes, before fees and nonce."""

    to: str
    value: int
    data: bytes


def _stored(row: PayoutRow, value: T | None, what: str) -> T:
    """A field the payout's state guarantees; a row without it is a corrupt record."""
    if value is None:
        raise PayoutError(
            row.payout_id, ErrorCode.CORRUPT, f"a {row.state} payout without its {what}"
        )
    return value


def _path_text(path: tuple[int, ...]) -> str:
    return "/".join(str(i) for i in path)


def base_units(amount: str, decimals: int, what: str, *, zero: bool = False) -> int:
    """`amount` (decimal text) in units of 10^-decimals, exactly; refuses what does not fit,
    and zero unless `zero` (an allowance reset)."""
    if not isinstance(amount, str) or not _AMOUNT.match(amount):
        raise ValueError(f"{what}: an amount is decimal text like 12.5, without sign or exponent")
    try:
        value = Decimal(amount)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError(f"{what}: not a decimal amount") from None
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{what}: more than {decimals} decimal places")
    units = int(scaled)
    if units <= 0 and not zero:
        raise ValueError(f"{what}: the amount must be above zero")
    if units >= 2**256:
        raise ValueError(f"{what}: the amount does not fit a uint256")
    return units


class PayoutEngine:
    """Payouts of a coordinator's policy wallets on the registry's chains."""

    def __init__(
        self,
        coordinator: TransactionOps,
        registry: ChainRegistry,
        rpcs: Mapping[int, ChainRpc],
    ) -> None:
        self.coordinator = coordinator
        self.registry = registry
        self.rpcs = dict(rpcs)
        self.store = coordinator.store
        self.nonces = NonceManager(self.store)
        self._synced: set[tuple[int, str]] = set()
        self._addresses: dict[tuple[bytes, tuple[int, ...]], str] = {}
        #: payout id → (the request, the policy hash, when) of a destination check passed
        self._passed: dict[str, tuple[PayoutRequest, str, float]] = {}
        self._prepare_locks: dict[tuple[int, str, str], asyncio.Lock] = {}
        #: fee quotes and gas estimates asked ahead (`quote_ahead`)
        self.quotes = QuotesAhead()
        # one send at a time per account, so its signed transactions leave in nonce order
        self._send_locks: dict[tuple[int, str], asyncio.Lock] = {}
        #: how long a payout waits for a helper (an approve, gas) or an earlier batch to be mined
        self.settle_timeout = 180.0
        self.settle_poll = 0.2

    # --- the request -----------------------------------------------------------------------
    def _chain(self, payout_id: str, chain_id: int) -> tuple[Chain, ChainRpc]:
        if chain_id not in self.registry.chain_ids() or chain_id not in self.rpcs:
            raise PayoutError(
                payout_id, ErrorCode.UNKNOWN_CHAIN, f"chain {chain_id} is not configured"
            )
        return self.registry.chain(chain_id), self.rpcs[chain_id]

    def _call(self, request: PayoutRequest, chain: Chain) -> _Call:
        if request.legs is not None:
            return self._batch_call(request, chain)
        try:
            destination = checked_address(request.destination)
        except AddressRefused as exc:
            raise PayoutError(request.payout_id, exc.code, exc.detail, exc.check) from exc
        token = chain.token(request.asset)
        try:
            if request.asset == chain.native.symbol:
                value = base_units(request.amount, chain.native.decimals, "amount")
                return _Call(destination, value, b"")
            if token is None:
                raise PayoutError(
                    request.payout_id,
                    ErrorCode.UNKNOWN_CHAIN,
                    f"asset {request.asset} is not registered on chain {chain.chain_id}",
                )
            units = base_units(request.amount, token.decimals, "amount")
        except ValueError as exc:
            raise PayoutError(request.payout_id, ErrorCode.VALIDATION, str(exc)) from exc
        return _Call(token.address, 0, encode_transfer(destination, units))

    def _batch_call(self, request: PayoutRequest, chain: Chain) -> _Call:
        """The disperse call of a batch: every leg's address and amount checked, the request's
        destination the chain's disperse contract and its amount the exact sum."""
        legs = request.legs or ()

        def refuse(detail: str, code: ErrorCode = ErrorCode.VALIDATION) -> PayoutError:
            return PayoutError(request.payout_id, code, detail)

        if chain.disperse is None:
            raise refuse(
                f"chain {chain.chain_id} has no disperse contract in the registry: pay the "
                "batch one transaction per withdrawal",
                ErrorCode.UNKNOWN_CHAIN,
            )
        token = chain.token(request.asset)
        if request.asset != chain.native.symbol and token is None:
            raise refuse(
                f"asset {request.asset} is not registered on chain {chain.chain_id}",
                ErrorCode.UNKNOWN_CHAIN,
            )
        decimals = chain.native.decimals if token is None else token.decimals
        if not 1 <= len(legs) <= MAX_LEGS:
            raise refuse(f"a batch has 1 to {MAX_LEGS} legs, not {len(legs)}")
        recipients: list[str] = []
        values: list[int] = []
        for index, (recipient, amount) in enumerate(legs):
            try:
                recipients.append(checked_address(recipient))
            except AddressRefused as exc:
                raise PayoutError(
                    request.payout_id, exc.code, f"leg {index}: {exc.detail}", exc.check
                ) from exc
            try:
                values.append(base_units(amount, decimals, f"leg {index}"))
            except ValueError as exc:
                raise refuse(str(exc)) from exc
        if request.destination.lower() != chain.disperse.lower():
            raise refuse("a batch's destination is the chain's disperse contract")
        try:
            total = base_units(request.amount, decimals, "amount")
        except ValueError as exc:
            raise refuse(str(exc)) from exc
        if total != sum(values):
            raise refuse("a batch's amount is the sum of its legs")
        if token is None:
            return _Call(chain.disperse, total, encode_disperse_ether(recipients, values))
        # the contract moves the tokens with transferFrom: no ether goes along (`_allowed`)
        return _Call(chain.disperse, 0, encode_disperse_token(token.address, recipients, values))

    def _row_call(self, row: PayoutRow, chain: Chain) -> _Call:
        """The transaction a stored payout makes (its request was checked when submitted)."""
        if row.kind == PayoutKind.ALLOWANCE:
            token = chain.token(row.asset)
            if token is None:
                raise PayoutError(
                    row.payout_id,
                    ErrorCode.UNKNOWN_CHAIN,
                    f"asset {row.asset} is no longer registered on chain {chain.chain_id}",
                )
            units = base_units(row.amount, token.decimals, "amount", zero=True)
            return _Call(token.address, 0, encode_approve(row.destination, units))
        request = PayoutRequest(
            row.payout_id,
            row.wallet,
            row.chain_id,
            row.asset,
            row.destination,
            row.amount,
            row.initiator,
            legs=_stored_legs(row),
        )
        return self._call(request, chain)

    def own_addresses(self) -> set[str]:
        """Tessera's own addresses: each wallet's (its key at the root path)."""
        return {self._address(w.key_public, ()) for w in self.store.wallets() if w.policy_wallet}

    def _deposit_addresses(self, candidates: Iterable[str]) -> set[str]:
        """Which of `candidates` are deposit addresses (coordinator/deposits.py)."""
        wanted = {c for c in candidates if isinstance(c, str)}
        if not wanted:
            return set()
        with self.store.session() as session:
            found = session.exec(
                select(DepositAddressRow.address).where(
                    DepositAddressRow.address.in_(sorted(wanted))  # type: ignore[attr-defined]
                )
            )
            return set(found)

    async def _check_destination(self, request: PayoutRequest, chain: Chain, sender: str) -> None:
        try:
            policy = await self.coordinator.active_policy()
        except SigningFailed as exc:
            raise PayoutError(request.payout_id, exc.code, str(exc)) from exc
        passed = self._passed.pop(request.payout_id, None)
        if (
            passed is not None
            and passed[0] == request
            and passed[1] == policy.policy_hash()
            and time.monotonic() - passed[2] < CHECK_REUSE_SECONDS
        ):
            return  # these very checks passed moments ago, under this policy version
        tokens = [t.address for t in chain.tokens.values()]
        if request.legs is None:
            destinations = [("", request.destination)]
        else:  # the contract itself was checked in _batch_call; each leg is a destination
            destinations = [(f"leg {i}: ", leg[0]) for i, leg in enumerate(request.legs)]
        # paying a customer's deposit address is an internal movement too (a sweep's reverse)
        own = {sender, *self.own_addresses(), *self._deposit_addresses(d for _, d in destinations)}
        for prefix, destination in destinations:
            try:
                check_destination(
                    destination,
                    chain_id=chain.chain_id,
                    policy=policy,
                    own=own,
                    token_contracts=tokens,
                )
            except AddressRefused as exc:
                raise PayoutError(
                    request.payout_id, exc.code, prefix + exc.detail, exc.check
                ) from exc
        if len(self._passed) >= _ADDRESS_CACHE:
            self._passed.clear()  # checks not followed by a submission: forgotten, simply
        self._passed[request.payout_id] = (request, policy.policy_hash(), time.monotonic())

    def quote_ahead(self, request: PayoutRequest, sender: str | None = None) -> None:
        """Ask the chain now for the fee quote and gas estimate of a payout that will be
        stored and signed shortly (the signer API's withdrawal, while it is screened): used if
        it is signed within `coordinator.quotes.FRESH_SECONDS` (else asked again).  For a
        request `check` passed (`sender`: the address it gave, else derived again); anything
        it cannot quote is left to the payout's own reads."""
        try:
            chain, rpc = self._chain(request.payout_id, request.chain_id)
            call = self._call(request, chain)
            if sender is None:
                sender = self.sender_of(request.wallet, request.path)
        except TesseraError:
            return
        quoted = Quoted(chain.chain_id, sender, call.to, call.value, call.data, request.fee_level)
        self.quotes.ask(request.payout_id, rpc, chain, quoted)

    def forget_check(self, payout_id: str) -> None:
        """Drop the passed check kept for `payout_id` (a dry run's: no payout will follow)."""
        self._passed.pop(payout_id, None)

    def sender_of(self, wallet: str, path: tuple[int, ...]) -> str:
        return self._address(self.store.wallet(wallet).key_public, path)

    def _address(self, key_public: bytes, path: tuple[int, ...]) -> str:
        """The address of the key at `path` below the wallet key `key_public`: a pure function
        of the two (public BIP32 derivation), so it is kept per (key, path) — keyed by the
        stored key itself, never by a wallet's name, so a new key version is derived anew."""
        cached = self._addresses.get((key_public, path))
        if cached is None:
            key = codec.decode_key_public(key_public)
            cached = address_of(derive(key.public_key, key.chain_code, path).public_key)
            if len(self._addresses) >= _ADDRESS_CACHE:
                self._addresses.clear()  # deposit paths are many: bounded, simply
            self._addresses[(key_public, path)] = cached
        return cached

    async def check(self, request: PayoutRequest) -> str:
        """Refuse (`PayoutError`) a request that cannot be paid — its id, chain, asset, amount,
        the destination's checks — storing nothing; the sending address if it can."""
        sender, _stored_row = await self._checked(request)
        return sender

    @staticmethod
    def _check_id(payout_id: str) -> None:
        if not isinstance(payout_id, str) or not _PAYOUT_ID.match(payout_id):
            raise PayoutError(
                str(payout_id)[:40],
                ErrorCode.VALIDATION,
                "a payout id is 1-128 of A-Z a-z 0-9 . _ : -",
            )
        for mark in _HELPER_MARKS:
            if mark in payout_id:
                raise PayoutError(
                    payout_id[:40],
                    ErrorCode.VALIDATION,
                    f"a payout id does not contain {mark!r} (the engine's own payouts)",
                )

    async def _checked(self, request: PayoutRequest) -> tuple[str, PayoutRow | None]:
        self._check_id(request.payout_id)
        chain, _rpc = self._chain(request.payout_id, request.chain_id)
        self._call(request, chain)
        with self.store.session() as session:
            stored = session.get(PayoutRow, request.payout_id)
        if stored is not None:
            # it passed these checks when it was submitted, and its sender was derived then;
            # `submit` compares the request with it (another wallet or path: REQUEST_REUSED)
            return stored.sender, stored
        try:
            sender = self.sender_of(request.wallet, request.path)
        except TesseraError as exc:
            raise PayoutError(request.payout_id, ErrorCode.NOT_FOUND, str(exc)) from exc
        await self._check_destination(request, chain, sender)
        return sender, None

    async def submit(self, request: PayoutRequest) -> PayoutRow:
        """Persist the payout (state accepted), or return the one with this id if it is the
        same request; another request under the same id is REQUEST_REUSED.  Everything about
        the request is checked first (`check`): a refused request stores nothing."""
        sender, existing = await self._checked(request)
        row = self._accepted(request, sender)
        if existing is None:
            try:
                with self.store.session() as session:
                    session.add(row)
                    session.commit()
                return row
            except IntegrityError:
                # a concurrent submission of the same id got there first: compare with it
                existing = self.payout(request.payout_id)
        same: tuple[str, ...] = ("wallet", "path", "chain_id", "asset", "destination", "amount")
        same = (*same, "initiator", "fee_level", "legs")
        differing = [name for name in same if getattr(existing, name) != getattr(row, name)]
        if differing:
            raise PayoutError(
                request.payout_id,
                ErrorCode.REQUEST_REUSED,
                "the payout id is already used for another payout (differs in "
                f"{', '.join(differing)})",
            )
        if request.approvals and existing.state in (PayoutState.ACCEPTED, PayoutState.RESERVED):
            # approvals the officers gave since: the nodes see these when it is signed
            return self._update(request.payout_id, approvals=row.approvals)
        return existing

    async def admitted(self, request: PayoutRequest) -> PayoutRow | None:
        """The payout `submit` would store for `request` (accepted), after the same checks,
        for a caller that stores it in its own transaction (the signer API, with the
        withdrawal's SIGNING); None when a payout is stored under its id already (`submit`
        then compares the two)."""
        sender, existing = await self._checked(request)
        return None if existing is not None else self._accepted(request, sender)

    @staticmethod
    def _accepted(request: PayoutRequest, sender: str) -> PayoutRow:
        now = time.time()
        return PayoutRow(
            payout_id=request.payout_id,
            wallet=request.wallet,
            path=_path_text(request.path),
            chain_id=request.chain_id,
            sender=sender,
            asset=request.asset,
            destination=request.destination,
            amount=request.amount,
            fee_level=request.fee_level.value,
            initiator=request.initiator,
            state=PayoutState.ACCEPTED.value,
            approvals=_approvals_text(request.approvals),
            legs=None if request.legs is None else json.dumps([list(leg) for leg in request.legs]),
            created_at=now,
            updated_at=now,
        )

    def payout(self, payout_id: str) -> PayoutRow:
        with self.store.session() as session:
            row = session.get(PayoutRow, payout_id)
        if row is None:
            raise PayoutError(payout_id[:40], ErrorCode.NOT_FOUND, "no such payout")
        return row

    def payouts(self, states: Sequence[PayoutState] = ()) -> list[PayoutRow]:
        with self.store.session() as session:
            query = select(PayoutRow)
            if states:
                query = query.where(PayoutRow.state.in_([s.value for s in states]))  # type: ignore[attr-defined]
            return list(session.exec(query.order_by(PayoutRow.created_at)))  # type: ignore[arg-type]

    def _update(self, payout_id: str, *, also: Signed | None = None, **values: object) -> PayoutRow:
        """Write `values` into the payout; `also` adds the caller's own writes to the same
        transaction."""
        with self.store.session() as session:
            # one statement: the UPDATE and the row it left (RETURNING)
            row = session.execute(
                update(PayoutRow)
                .where(col(PayoutRow.payout_id) == payout_id)
                .values(**values, updated_at=time.time())
                .returning(PayoutRow)
            ).scalar_one_or_none()
            if row is None:
                raise PayoutError(payout_id[:40], ErrorCode.NOT_FOUND, "no such payout")
            if also is not None:
                also(session, row)
            session.commit()
            return cast(PayoutRow, row)

    # --- driving a payout --------------------------------------------------------------------
    async def pay(self, request: PayoutRequest) -> PayoutRow:
        """Submit and drive the payout until the chain holds it (sent) or it failed."""
        await self.submit(request)
        return await self.drive(request.payout_id, request.approvals)

    async def drive(
        self,
        payout_id: str,
        approvals: Sequence[Approval] = (),
        *,
        send: bool = True,
        signed: Signed | None = None,
        stored: PayoutRow | None = None,
    ) -> PayoutRow:
        """Bring the payout to sent (or failed); with `send` False stop once it is signed, so
        that a caller can persist its own state before the transaction leaves (the signer
        API's BROADCASTING) — in the very transaction that stores the signed bytes when it
        passes `signed` (called with that session and the payout, only if this drive signs
        it).  `stored`: the payout as the caller has just had it from `submit` (else read)."""
        row = stored if stored is not None and stored.payout_id == payout_id else None
        row = self.payout(payout_id) if row is None else row
        preparation = self._preparation(row) if row.state == PayoutState.ACCEPTED else None
        if preparation is not None:
            # what the payout needs on chain first (an allowance, gas), made and spent by one
            # payout of its address (and token) at a time
            key, prepare = preparation
            async with self._prepare_locks.setdefault(key, asyncio.Lock()):
                row = self.payout(payout_id)  # it may have moved on while this waited
                if row.state == PayoutState.ACCEPTED:
                    row = await prepare(row)
                if row.state == PayoutState.ACCEPTED:
                    row = await self._reserve_and_sign(row, approvals, signed)
        elif row.state == PayoutState.ACCEPTED:
            row = await self._reserve_and_sign(row, approvals, signed)
        elif row.state == PayoutState.RESERVED:
            async with self.nonces.lock(row.chain_id, row.sender):
                row = await self._sign(row, approvals, signed)
        if row.state == PayoutState.SIGNED and send:
            failpoint("payout.after_sign")
            row = await self._send(row)
        return row

    # --- what a payout needs on chain first ------------------------------------------------
    def _preparation(
        self, row: PayoutRow
    ) -> tuple[tuple[int, str, str], Callable[[PayoutRow], Awaitable[PayoutRow]]] | None:
        """The lock and the step that make what `row` needs before it takes its nonce: the
        allowance of a token batch (disperseToken spends it), the gas of a token sweep (the
        deposit address pays it); None for any other payout."""
        chain, _rpc = self._chain(row.payout_id, row.chain_id)
        if row.asset == chain.native.symbol:
            return None
        if row.kind == PayoutKind.PAYOUT and row.legs is not None:
            return (row.chain_id, row.sender, row.asset), self._allowed
        if row.kind == PayoutKind.SWEEP:
            return (row.chain_id, row.sender, ""), self._fuelled
        return None

    async def _allowed(self, row: PayoutRow) -> PayoutRow:
        """Make sure the sender's allowance to the disperse contract covers the token batch
        `row` (the token's lock held): the batch unchanged when it does; failed when an approve
        it needs was refused, reverted or cancelled; PayoutError when the chain is not there
        yet (the batch stays accepted, and the next drive goes on from what was done)."""
        chain, rpc = self._chain(row.payout_id, row.chain_id)
        token = _stored(row, chain.token(row.asset), f"token {row.asset} in the registry")
        disperse = _stored(row, chain.disperse, "chain's disperse contract")
        needed = base_units(row.amount, token.decimals, "amount")
        # an earlier batch of this token still to be mined spends from the same allowance
        for earlier in self._batches_in_flight(row):
            await self._until_mined(row.payout_id, earlier.payout_id)

        async def short() -> int | None:
            try:
                current = await rpc.token_allowance(token.address, row.sender, disperse)
            except ChainUnavailable as exc:
                raise PayoutError(row.payout_id, exc.code, str(exc)) from exc
            return None if current >= needed else current

        def make(current: int) -> PayoutRow:
            # USDT and its like refuse to move an allowance from one non-zero value to another
            amount = "0" if current > 0 else row.amount
            return self._new_helper(row, PayoutKind.ALLOWANCE, disperse, amount)

        return await self._prepared(row, PayoutKind.ALLOWANCE, short, make)

    async def _prepared(
        self,
        row: PayoutRow,
        kind: PayoutKind,
        short: Callable[[], Awaitable[int | None]],
        make: Callable[[int], PayoutRow],
    ) -> PayoutRow:
        """Bring about what payout `row` needs on chain before it takes its nonce (an allowance,
        gas): `short()` is None once it is there, else what there is; `make(what there is)`
        stores the next helper payout of `kind` for it, which is driven until mined.  The
        payout unchanged when it is ready; failed when a helper failed; PayoutError when the
        chain is not there yet (the payout stays accepted; the next drive goes on from here)."""
        for _step in range(_PREPARE_STEPS):
            current = await short()
            if current is None:
                return row
            made = self._helpers_of(row.payout_id, kind)
            last = made[-1] if made else None
            if last is not None and last.state in (PayoutState.FAILED, PayoutState.CANCELLED):
                reason = f"its {kind} {last.payout_id} {last.state}: {last.reason}"
                return self._update(
                    row.payout_id, state=PayoutState.FAILED.value, reason=reason[:500]
                )
            if last is not None and last.state not in (PayoutState.MINED, PayoutState.CONFIRMED):
                await self._until_mined(row.payout_id, last.payout_id)
                continue
            helper = make(current)
            await self._until_mined(row.payout_id, helper.payout_id)
        raise PayoutError(
            row.payout_id,
            ErrorCode.CHAIN_REJECTED,
            f"its {kind} is still short after {_PREPARE_STEPS} transactions; the next drive "
            "reads it again",
        )

    # --- sweeping a deposit address --------------------------------------------------------
    async def sweep(
        self,
        payout_id: str,
        wallet: str,
        chain_id: int,
        asset: str,
        path: tuple[int, ...],
        initiator: str,
        *,
        fee_level: FeeLevel = FeeLevel.MEDIUM,
    ) -> PayoutRow:
        """Sweep the whole balance of `asset` at the wallet's address at `path` (a deposit
        address) to the wallet's own address, and drive it until the chain holds it."""
        await self.submit_sweep(payout_id, wallet, chain_id, asset, path, initiator, fee_level)
        return await self.drive(payout_id)

    async def submit_sweep(
        self,
        payout_id: str,
        wallet: str,
        chain_id: int,
        asset: str,
        path: tuple[int, ...],
        initiator: str,
        fee_level: FeeLevel = FeeLevel.MEDIUM,
    ) -> PayoutRow:
        """Persist a sweep (state accepted), or return the one with this id if it is the same
        sweep; nothing is stored when there is nothing to sweep.  A token balance is swept as
        it is now; an ether balance is fixed when the nonce is taken (all of it but the gas)."""
        self._check_id(payout_id)
        chain, rpc = self._chain(payout_id, chain_id)
        if not path:
            raise PayoutError(
                payout_id, ErrorCode.VALIDATION, "the wallet's own address is not swept"
            )
        try:
            sender = self.sender_of(wallet, path)
            home = self.sender_of(wallet, ())
        except TesseraError as exc:
            raise PayoutError(payout_id, ErrorCode.NOT_FOUND, str(exc)) from exc
        with self.store.session() as session:
            existing = session.get(PayoutRow, payout_id)
        if existing is not None:
            same = (existing.kind, existing.wallet, existing.path, existing.chain_id)
            if same != (PayoutKind.SWEEP, wallet, _path_text(path), chain_id) or (
                existing.asset != asset
            ):
                raise PayoutError(
                    payout_id,
                    ErrorCode.REQUEST_REUSED,
                    "the payout id is already used for another payout",
                )
            return existing
        token = chain.token(asset)
        try:
            if asset == chain.native.symbol:
                held = await rpc.balance(sender)
                amount = "0"  # fixed with the fees, when the nonce is taken
            elif token is None:
                raise PayoutError(
                    payout_id,
                    ErrorCode.UNKNOWN_CHAIN,
                    f"asset {asset} is not registered on chain {chain_id}",
                )
            else:
                held = await rpc.token_balance(token.address, sender)
                amount = amount_str(Decimal(held).scaleb(-token.decimals))
        except ChainUnavailable as exc:
            raise PayoutError(payout_id, exc.code, str(exc)) from exc
        if held == 0:
            raise PayoutError(
                payout_id, ErrorCode.VALIDATION, f"{sender} holds no {asset}: nothing to sweep"
            )
        now = time.time()
        row = PayoutRow(
            payout_id=payout_id,
            wallet=wallet,
            path=_path_text(path),
            chain_id=chain_id,
            sender=sender,
            asset=asset,
            destination=home,
            amount=amount,
            fee_level=fee_level.value,
            initiator=initiator,
            state=PayoutState.ACCEPTED.value,
            created_at=now,
            updated_at=now,
            kind=PayoutKind.SWEEP.value,
        )
        try:
            with self.store.session() as session:
                session.add(row)
                session.commit()
                session.refresh(row)
            return row
        except IntegrityError:
            # a concurrent submission of the same id: compare with it
            return await self.submit_sweep(
                payout_id, wallet, chain_id, asset, path, initiator, fee_level
            )

    @staticmethod
    async def _sweep_gas(rpc: ChainRpc, row: PayoutRow, call: _Call) -> int:
        """The gas limit of a token sweep: the estimate, or — from a node that will not estimate
        for an account holding little or no ether (eth-tester checks the account could pay
        a whole block's gas) — what a token `transfer` costs at most.  A transfer that would
        revert is refused either way (CallReverted)."""
        try:
            return await estimate_gas(rpc, row.sender, call.to, call.value, call.data)
        except (CallReverted, ChainUnavailable, WrongChain):
            raise
        except ChainError:
            return TOKEN_TRANSFER_GAS_BOUND

    async def _fuelled(self, row: PayoutRow) -> PayoutRow:
        """Make sure the deposit address of token sweep `row` holds the ether its gas costs at
        the fees of now, sending it (twice the shortfall, room for the fees to move) from the
        wallet's own address when it does not."""
        chain, rpc = self._chain(row.payout_id, row.chain_id)
        call = self._row_call(row, chain)
        try:
            fees = await quote_fees(rpc, chain, FeeLevel(row.fee_level))
            cost = fees.per_gas * await self._sweep_gas(rpc, row, call)
        except TesseraError as exc:
            raise PayoutError(
                row.payout_id, getattr(exc, "code", ErrorCode.INTERNAL), str(exc)
            ) from exc

        async def short() -> int | None:
            try:
                held = await rpc.balance(row.sender)
            except ChainUnavailable as exc:
                raise PayoutError(row.payout_id, exc.code, str(exc)) from exc
            return None if held >= cost else held

        def make(held: int) -> PayoutRow:
            wei = 2 * cost - held
            amount = amount_str(Decimal(wei).scaleb(-chain.native.decimals))
            # from the wallet's own address (path "")
            return self._new_helper(
                row,
                PayoutKind.GAS,
                row.sender,
                amount,
                asset=chain.native.symbol,
                path="",
                sender=row.destination,
            )

        return await self._prepared(row, PayoutKind.GAS, short, make)

    def _batches_in_flight(self, row: PayoutRow) -> list[PayoutRow]:
        """The sender's other batches of the same token holding a nonce, not yet mined."""
        with self.store.session() as session:
            rows = session.exec(
                select(PayoutRow)
                .where(PayoutRow.chain_id == row.chain_id)
                .where(PayoutRow.sender == row.sender)
                .where(PayoutRow.asset == row.asset)
                .where(PayoutRow.kind == PayoutKind.PAYOUT.value)
                .where(PayoutRow.legs.is_not(None))  # type: ignore[union-attr]
                .where(PayoutRow.payout_id != row.payout_id)
                .where(
                    PayoutRow.state.in_(  # type: ignore[attr-defined]
                        [PayoutState.RESERVED, PayoutState.SIGNED, PayoutState.SENT]
                    )
                )
            ).all()
        return sorted(rows, key=lambda r: r.nonce if r.nonce is not None else -1)

    def _helpers_of(self, payout_id: str, kind: PayoutKind) -> list[PayoutRow]:
        """The helper payouts of `kind` made for a payout, oldest first."""
        with self.store.session() as session:
            rows = session.exec(
                select(PayoutRow)
                .where(PayoutRow.kind == kind.value)
                .where(PayoutRow.for_payout == payout_id)
            ).all()
        return sorted(rows, key=lambda r: r.created_at)

    def _new_helper(
        self,
        payout: PayoutRow,
        kind: PayoutKind,
        destination: str,
        amount: str,
        **differing: str,
    ) -> PayoutRow:
        """Store (accepted) the next helper payout of `kind` for `payout`: `amount` of its
        asset from its address to `destination`, but for the fields `differing` names."""
        number = len(self._helpers_of(payout.payout_id, kind)) + 1
        mark = f":{kind.value}:"
        payout_id = f"{payout.payout_id}{mark}{number}"
        if len(payout_id) > 128:  # the payout's id is long: a digest of it stands in
            digest = hashlib.sha256(payout.payout_id.encode()).hexdigest()[:32]
            payout_id = f"{payout.payout_id[:80]}{mark}{digest}:{number}"
        now = time.time()
        row = PayoutRow(
            payout_id=payout_id,
            wallet=payout.wallet,
            path=payout.path,
            chain_id=payout.chain_id,
            sender=payout.sender,
            asset=payout.asset,
            destination=destination,
            amount=amount,
            fee_level=payout.fee_level,
            initiator=payout.initiator,
            state=PayoutState.ACCEPTED.value,
            created_at=now,
            updated_at=now,
            kind=kind.value,
            for_payout=payout.payout_id,
        )
        for name, value in differing.items():
            setattr(row, name, value)
        with self.store.session() as session:
            session.add(row)
            session.commit()
            session.refresh(row)
        return row

    async def _until_mined(self, batch_id: str, payout_id: str) -> PayoutRow:
        """Drive payout `payout_id` and follow it until it is mined or ended; PayoutError (for
        the batch `batch_id`) when that takes longer than `settle_timeout`."""
        try:
            row = await self.drive(payout_id)
        except PayoutError as exc:
            raise PayoutError(batch_id, exc.code, f"{payout_id}: {exc.detail}") from exc
        deadline = time.monotonic() + self.settle_timeout
        while row.state not in TERMINAL and row.state != PayoutState.MINED:
            if row.state != PayoutState.SENT or time.monotonic() > deadline:
                raise PayoutError(
                    batch_id,
                    ErrorCode.CHAIN_UNAVAILABLE,
                    f"{payout_id} is {row.state}, not mined yet; the next drive waits again",
                )
            await asyncio.sleep(self.settle_poll)
            row = await self.track(payout_id)
        return row

    async def _ensure_synced(self, rpc: ChainRpc, sender: str) -> None:
        if (rpc.chain_id, sender) not in self._synced:
            await rpc.check_chain_id()
            await self.nonces.sync(rpc, sender)
            self._synced.add((rpc.chain_id, sender))

    async def _reserve_and_sign(
        self, row: PayoutRow, approvals: Sequence[Approval], signed: Signed | None = None
    ) -> PayoutRow:
        chain, rpc = self._chain(row.payout_id, row.chain_id)
        try:
            await self._ensure_synced(rpc, row.sender)
            level = FeeLevel(row.fee_level)
            if row.kind == PayoutKind.SWEEP:
                fees = await quote_fees(rpc, chain, level)
                if row.asset == chain.native.symbol:
                    row = await self._swept_ether(row, rpc, chain, fees)
                    if row.state == PayoutState.FAILED:
                        return row
                call = self._row_call(row, chain)
                # to the wallet's own address: 21,000 exactly, which its amount left for gas
                gas = await self._sweep_gas(rpc, row, call) if call.data else intrinsic_gas(b"")
            else:
                call = self._row_call(row, chain)
                quoted = Quoted(chain.chain_id, row.sender, call.to, call.value, call.data, level)
                # asked ahead when the payout was about to be stored (`quote_ahead`), or now
                ahead = await self.quotes.take(row.payout_id, quoted)
                fees, gas = ahead if ahead is not None else await read_quotes(rpc, chain, quoted)
        except TesseraError as exc:
            code = getattr(exc, "code", ErrorCode.INTERNAL)
            # nothing reserved yet: a refusal of the chain is final, its absence is not
            if code in (ErrorCode.CHAIN_REJECTED, ErrorCode.FEE_ABOVE_CEILING):
                return self._update(
                    row.payout_id, state=PayoutState.FAILED.value, reason=f"{code}: {exc}"
                )
            raise PayoutError(row.payout_id, code, str(exc)) from exc

        def payload_for(nonce: int) -> bytes:
            return _transaction(chain, nonce, fees, gas, call).signing_payload()

        async with self.nonces.lock(row.chain_id, row.sender):
            # A payout reserved before a crash and not yet signed holds a smaller nonce: it is
            # signed (or gives its nonce back) first, so that a nonce is only given out when
            # every smaller one holds a signed transaction — a refusal then never leaves a gap.
            for stale in self._unsigned(row.chain_id, row.sender):
                try:
                    await self._sign(stale, ())
                except PayoutError as exc:
                    raise PayoutError(
                        row.payout_id,
                        exc.code,
                        f"payout {stale.payout_id} holds nonce {stale.nonce} unsigned and could "
                        f"not be signed first: {exc.detail}",
                    ) from exc
            self.nonces.reserve(
                row.chain_id, row.sender, row.payout_id, payload_for, PayoutState.RESERVED.value
            )
            failpoint("payout.after_reserve")
            return await self._sign(self.payout(row.payout_id), approvals, signed)

    async def _swept_ether(
        self, row: PayoutRow, rpc: ChainRpc, chain: Chain, fees: Fees
    ) -> PayoutRow:
        """Fix an ether sweep's amount with the fees it will be signed at: the balance but the
        most its 21,000 gas may cost (an EIP-1559 transaction pays less: that rest stays)."""
        held = await rpc.balance(row.sender)
        wei = held - intrinsic_gas(b"") * fees.per_gas
        if wei <= 0:
            reason = f"{row.sender} holds {held} wei, not more than the gas of its sweep"
            return self._update(row.payout_id, state=PayoutState.FAILED.value, reason=reason)
        amount = amount_str(Decimal(wei).scaleb(-chain.native.decimals))
        return self._update(row.payout_id, amount=amount)

    def _unsigned(self, chain_id: int, sender: str) -> list[PayoutRow]:
        """The account's payouts holding a nonce but no signature, smallest nonce first."""
        with self.store.session() as session:
            rows = session.exec(
                select(PayoutRow)
                .where(PayoutRow.chain_id == chain_id)
                .where(PayoutRow.sender == sender)
                .where(PayoutRow.state == PayoutState.RESERVED.value)
            ).all()
        return sorted(rows, key=lambda r: r.nonce if r.nonce is not None else -1)

    async def _sign(
        self, row: PayoutRow, approvals: Sequence[Approval], signed: Signed | None = None
    ) -> PayoutRow:
        """Sign a reserved payout (the account's lock held); a refusal gives the nonce back.
        `signed` writes the caller's own record of it with the signed bytes (`drive`)."""
        payload = _stored(row, row.payload, "payload")
        nonce = _stored(row, row.nonce, "nonce")
        if not approvals:
            approvals = _stored_approvals(row)
        # The reservation (and the withdrawal before it) may be written without an fsync of
        # its own: on disk before any node acts on it (policies/sqlite.py `Sync`).
        await self.store.barrier()
        try:
            outcome = await self._signature(row, payload, approvals)
        except (SigningFailed, SignRequestInvalid) as exc:
            final = exc.code in FINAL_REFUSALS
            state = PayoutState.FAILED if final else PayoutState.ACCEPTED
            # the node's own words when it refused (its rule, the leg of a batch), else ours
            refusal = getattr(exc, "refusal", None)
            reason = f"{exc.code}: {refusal if refusal is not None else exc}"[:500]
            self.nonces.release(row.chain_id, row.sender, row.payout_id, nonce, state.value, reason)
            if final:
                return self.payout(row.payout_id)
            raise PayoutError(row.payout_id, exc.code, str(exc)) from exc
        transfer = decode_signing_payload(payload)
        raw = transfer.attach(outcome.signature)
        tx_hash = "0x" + transaction_hash(raw).hex()
        return self._update(
            row.payout_id, also=signed, raw=raw, tx_hash=tx_hash, state=PayoutState.SIGNED.value
        )

    async def _signature(
        self, row: PayoutRow, payload: bytes, approvals: Sequence[Approval]
    ) -> SignOutcome:
        """The nodes' signature of `payload` for the payout: a transaction the policy decides,
        or the allowance a token batch spends (which moves nothing, so no approvals)."""
        path = _stored_path(row)
        if row.kind == PayoutKind.ALLOWANCE:
            return await self.coordinator.sign_allowance(
                row.wallet, payload, request_id=row.payout_id, path=path
            )
        if row.kind in (PayoutKind.SWEEP, PayoutKind.GAS):
            # to the wallet's own address, or to the deposit address of the sweep it fuels
            to: tuple[int, ...] = ()
            if row.kind == PayoutKind.GAS:
                to = _stored_path(self.payout(_stored(row, row.for_payout, "sweep")))
            return await self.coordinator.sign_internal(
                row.wallet, payload, request_id=row.payout_id, path=path, destination_path=to
            )
        return await self.coordinator.sign_transaction(
            row.wallet,
            payload,
            request_id=row.payout_id,
            initiator=row.initiator,
            approvals=approvals,
            path=path,
        )

    def _signed_below(self, row: PayoutRow) -> list[PayoutRow]:
        """The account's signed payouts not yet sent whose nonce is below `row`'s, smallest
        first."""
        nonce = _stored(row, row.nonce, "nonce")
        with self.store.session() as session:
            rows = session.exec(
                select(PayoutRow)
                .where(PayoutRow.chain_id == row.chain_id)
                .where(PayoutRow.sender == row.sender)
                .where(PayoutRow.state == PayoutState.SIGNED.value)
                .where(PayoutRow.nonce < nonce)  # type: ignore[operator]
            ).all()
        return sorted(rows, key=lambda r: r.nonce if r.nonce is not None else -1)

    async def _send(self, row: PayoutRow) -> PayoutRow:
        """Send a signed payout, after the account's signed payouts of smaller nonces.

        Payouts are signed in nonce order under the account's lock but driven concurrently: a
        payout of nonce n+1 can reach here before the one of nonce n.  A node that cannot queue
        refuses n+1 ("nonce too high"), so each send takes the account's send lock and first
        sends what is signed below it; one of those that fails stays signed for its own drive
        (or `resume`), and this one is tried anyway."""
        key = (row.chain_id, row.sender)
        async with self._send_locks.setdefault(key, asyncio.Lock()):
            for earlier in self._signed_below(row):
                try:
                    await self._send_one(earlier)
                except PayoutError as exc:
                    log.info(
                        "payout %s: sent before %s failed: %s",
                        earlier.payout_id,
                        row.payout_id,
                        exc,
                    )
            row = self.payout(row.payout_id)
            if row.state != PayoutState.SIGNED:
                return row  # another payout's send took it along
            return await self._send_one(row)

    async def _send_one(self, row: PayoutRow) -> PayoutRow:
        raw = _stored(row, row.raw, "signed transaction")
        _chain, rpc = self._chain(row.payout_id, row.chain_id)
        try:
            await rpc.send_raw(raw)
        except ChainUnavailable as exc:
            # stored and signed: `resume` (or the next `drive`) sends it when the chain answers
            raise PayoutError(row.payout_id, exc.code, str(exc)) from exc
        except TransactionRejected as exc:
            if exc.nonce_too_low:
                # the nonce is used: by this version, or by one it replaces (a speed-up, the
                # payout a cancellation lost to); the tracker finds which
                for version in _versions(row):
                    if await rpc.receipt(bytes.fromhex(version[2:])) is not None:
                        return self._update(row.payout_id, state=PayoutState.SENT.value)
            # The bytes are signed and stored: the nonce is spoken for, never given back.  A
            # nonce too high (an earlier one not at the node yet) leaves it signed: the next
            # drive or `resume` sends it again.
            raise PayoutError(row.payout_id, exc.code, str(exc)) from exc
        failpoint("payout.after_send")
        return self._update(row.payout_id, state=PayoutState.SENT.value)

    # --- following it on chain ---------------------------------------------------------------
    async def track(self, payout_id: str) -> PayoutRow:
        """One look at the chain: move a sent or mined payout on, re-send it if a reorg dropped
        it or the node forgot it."""
        row = self.payout(payout_id)
        if row.state not in (PayoutState.SENT, PayoutState.MINED):
            return row
        chain, rpc = self._chain(payout_id, row.chain_id)
        tx_hash = bytes.fromhex(_stored(row, row.tx_hash, "transaction hash")[2:])
        receipt = await self._canonical_receipt(rpc, tx_hash)
        if receipt is None:
            # a version a speed-up replaced may be the one the chain took
            for earlier in json.loads(row.replaced):
                found = await self._canonical_receipt(rpc, bytes.fromhex(earlier["tx_hash"][2:]))
                if found is not None:
                    row = self._adopt(row, earlier)
                    tx_hash, receipt = found.tx_hash, found
                    break
        if receipt is None:
            if row.state == PayoutState.MINED or not await rpc.known(tx_hash):
                # the same signed bytes: same hash, same nonce
                await rpc.send_raw(_stored(row, row.raw, "signed transaction"))
            return self._update(
                payout_id, state=PayoutState.SENT.value, block_number=None, block_hash=None
            )
        depth = await rpc.block_number() - receipt.block_number + 1
        if depth < max(chain.confirmations, 1):
            return self._update(
                payout_id,
                state=PayoutState.MINED.value,
                block_number=receipt.block_number,
                block_hash="0x" + receipt.block_hash.hex(),
            )
        if not receipt.success:
            reason = await rpc.revert_reason_of(tx_hash, receipt.block_number)
            return self._mined(payout_id, receipt, PayoutState.FAILED, f"reverted: {reason}"[:500])
        if self._cancelling(row):
            reason = f"cancelled on chain: a 0-value self-send took nonce {row.nonce}"
            return self._mined(payout_id, receipt, PayoutState.CANCELLED, reason)
        return self._mined(payout_id, receipt, PayoutState.CONFIRMED, None)

    @staticmethod
    def _cancelling(row: PayoutRow) -> bool:
        """Whether the payout's current version is a cancellation (a payout itself never goes
        to its own sender: the address checks refuse an own address)."""
        payload = _stored(row, row.payload, "payload")
        return is_cancellation(decode_signing_payload(payload), row.sender)

    @staticmethod
    async def _canonical_receipt(rpc: ChainRpc, tx_hash: bytes) -> Receipt | None:
        receipt = await rpc.receipt(tx_hash)
        if receipt is not None and await rpc.block_hash(receipt.block_number) != receipt.block_hash:
            return None  # its block is no longer canonical
        return receipt

    def _adopt(self, row: PayoutRow, earlier: dict[str, str]) -> PayoutRow:
        """Make the mined earlier version the payout's transaction (the others stay listed),
        its unsigned payload with it: whether the payout was cancelled is read from it."""
        others = [e for e in json.loads(row.replaced) if e["tx_hash"] != earlier["tx_hash"]]
        others.append(_version(row))
        return self._update(
            row.payout_id,
            tx_hash=earlier["tx_hash"],
            raw=bytes.fromhex(earlier["raw"]),
            payload=bytes.fromhex(_stored(row, earlier.get("payload"), "replaced payload")),
            replaced=json.dumps(others),
        )

    # --- speeding a payout up ----------------------------------------------------------------
    async def speed_up(self, payout_id: str, level: FeeLevel = FeeLevel.HIGH) -> PayoutRow:
        """Replace a sent, not yet mined payout by the same transaction at the same nonce with
        higher fees (at least +12.5 %, and the fees of `level` now if higher; never above the
        registry's ceiling).  Every node decides it again and signs it only as a fee
        replacement of what it signed (signer/chains/replacement.py); until one is mined both
        versions are followed.  A cancellation in flight is sped up the same way (a faster
        cancellation)."""
        row, _old, new = await self._with_raised_fees(
            payout_id, level, (PayoutState.SENT,), "only a sent payout is sped up"
        )
        return await self._replace(row, new, cancellation=self._cancelling(row))

    async def cancel(self, payout_id: str, level: FeeLevel = FeeLevel.HIGH) -> PayoutRow:
        """Cancel a signed payout that is not mined: sign a 0-value self-send at its nonce with
        every fee raised as for a speed-up (the chain's pool takes it in place of the payout)
        and send it.  Every node signs it only as the cancellation of what it signed for the
        payout, from the same address (signer/chains/replacement.py).  The tracker follows both:
        whichever is mined decides — `confirmed` (too late to cancel) or `cancelled`.

        It also fills a nonce: a payout stuck `signed` because the chain refuses its bytes
        holds up every later nonce of its address; its cancellation is mined in its place."""
        row, old, bumped = await self._with_raised_fees(
            payout_id,
            level,
            (PayoutState.SIGNED, PayoutState.SENT),
            "only a signed or sent payout that is not mined is cancelled",
        )
        # a self-send: 21,000 gas, never more than the payout's (the nodes check both)
        gas = min(old.gas, intrinsic_gas(b""))
        new = replace(bumped, to=row.sender, value=0, data=b"", gas=gas)
        return await self._replace(row, new, cancellation=True)

    async def _with_raised_fees(
        self,
        payout_id: str,
        level: FeeLevel,
        states: tuple[PayoutState, ...],
        only: str,
    ) -> tuple[PayoutRow, Transfer, Transfer]:
        """The payout (in one of `states`, else VALIDATION saying `only`), its current unsigned
        transaction, and that transaction with every fee raised for a replacement."""
        row = self.payout(payout_id)
        if row.state not in states:
            raise PayoutError(payout_id, ErrorCode.VALIDATION, f"{only} (it is {row.state})")
        chain, rpc = self._chain(payout_id, row.chain_id)
        old = decode_signing_payload(_stored(row, row.payload, "payload"))
        try:
            quoted = await quote_fees(rpc, chain, level)
            return row, old, _bumped(old, quoted, chain)
        except TesseraError as exc:
            raise PayoutError(
                payout_id, getattr(exc, "code", ErrorCode.INTERNAL), str(exc)
            ) from exc

    async def _replace(self, row: PayoutRow, new: Transfer, *, cancellation: bool) -> PayoutRow:
        """Sign `new` in place of the payout's current version (a speed-up or a cancellation),
        keep the current one in `replaced`, and send it."""
        current = _version(row)
        path = _stored_path(row)
        async with self.nonces.lock(row.chain_id, row.sender):
            try:
                if cancellation:
                    outcome = await self.coordinator.sign_cancellation(
                        row.wallet, new.signing_payload(), request_id=row.payout_id, path=path
                    )
                else:
                    outcome = await self._signature(
                        row, new.signing_payload(), _stored_approvals(row)
                    )
            except (SigningFailed, SignRequestInvalid) as exc:
                # the payout stays as it was: its current version is still valid on chain
                raise PayoutError(row.payout_id, exc.code, str(exc)) from exc
            raw = new.attach(outcome.signature)
            replaced = [*json.loads(row.replaced), current]
            row = self._update(
                row.payout_id,
                payload=new.signing_payload(),
                raw=raw,
                tx_hash="0x" + transaction_hash(raw).hex(),
                replaced=json.dumps(replaced),
                state=PayoutState.SIGNED.value,
            )
        return await self._send(row)

    def _mined(
        self, payout_id: str, receipt: Receipt, state: PayoutState, reason: str | None
    ) -> PayoutRow:
        return self._update(
            payout_id,
            state=state.value,
            block_number=receipt.block_number,
            block_hash="0x" + receipt.block_hash.hex(),
            reason=reason,
        )

    async def wait(self, payout_id: str, timeout: float = 60.0, poll: float = 0.05) -> PayoutRow:
        """Track until the payout is confirmed or failed (or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        while True:
            row = await self.track(payout_id)
            if row.state in TERMINAL or time.monotonic() > deadline:
                return row
            await asyncio.sleep(poll)

    async def resume(self) -> list[PayoutRow]:
        """After a start: bring every unfinished payout on (accepted and reserved ones are
        signed, signed ones sent, sent and mined ones looked at once)."""
        out = []
        for row in self.payouts([s for s in PayoutState if s not in TERMINAL]):
            if row.state in (PayoutState.SENT, PayoutState.MINED):
                out.append(await self.track(row.payout_id))
            else:
                out.append(await self.drive(row.payout_id))
        return out


def _version(row: PayoutRow) -> dict[str, str]:
    """The payout's current signed version, as `replaced` lists it."""
    return {
        "tx_hash": _stored(row, row.tx_hash, "transaction hash"),
        "raw": _stored(row, row.raw, "signed transaction").hex(),
        "payload": _stored(row, row.payload, "payload").hex(),
    }


def _versions(row: PayoutRow) -> list[str]:
    """The hashes of every signed version of a payout: the current one first."""
    earlier = [entry["tx_hash"] for entry in json.loads(row.replaced)]
    return [_stored(row, row.tx_hash, "transaction hash"), *earlier]


def _stored_path(row: PayoutRow) -> tuple[int, ...]:
    return tuple(int(i) for i in row.path.split("/")) if row.path else ()


def _stored_legs(row: PayoutRow) -> tuple[tuple[str, str], ...] | None:
    if row.legs is None:
        return None
    try:
        legs = json.loads(row.legs)
        return tuple((str(recipient), str(amount)) for recipient, amount in legs)
    except (ValueError, TypeError) as exc:
        raise PayoutError(row.payout_id, ErrorCode.CORRUPT, "its stored legs do not parse") from exc


def _approvals_text(approvals: Sequence[Approval]) -> str:
    return json.dumps([a.to_json_object() for a in approvals], sort_keys=True)


def _stored_approvals(row: PayoutRow) -> list[Approval]:
    """The approvals stored with a payout (each was parsed when it was given; one that no
    longer parses is left out, and the nodes decide without it)."""
    out = []
    for index, doc in enumerate(json.loads(row.approvals or "[]")):
        try:
            out.append(parse_approval(doc, source=f"payout {row.payout_id} approval {index}"))
        except PolicyError:
            continue
    return out


#: A speed-up raises every fee by at least this much (transaction pools ask for +10 %).
SPEED_UP: Final = (9, 8)


def _raised(before: int, quoted: int | None) -> int:
    """At least +12.5 %, the fee quoted now if higher, but never more than the nodes sign as a
    replacement (`MAX_BUMP` times)."""
    numerator, denominator = SPEED_UP
    return min(max(-(-before * numerator // denominator), quoted or 0), before * MAX_BUMP)


def _bumped(old: Transfer, quoted: Fees, chain: Chain) -> Transfer:
    """`old` with its fees raised for a speed-up; FeeAboveCeiling past the registry's."""
    if isinstance(old, LegacyTransfer):
        price = _raised(old.gas_price, quoted.per_gas if isinstance(quoted, LegacyFees) else None)
        if price > chain.fee_ceiling_wei:
            raise FeeAboveCeiling(chain.chain_id, price, chain.fee_ceiling_wei)
        return replace(old, gas_price=price)
    eip = quoted if isinstance(quoted, Eip1559Fees) else None
    tip = _raised(old.max_priority_fee_per_gas, eip.max_priority_fee_per_gas if eip else None)
    max_fee = max(_raised(old.max_fee_per_gas, eip.max_fee_per_gas if eip else None), tip)
    if max_fee > chain.fee_ceiling_wei:
        raise FeeAboveCeiling(chain.chain_id, max_fee, chain.fee_ceiling_wei)
    return replace(old, max_priority_fee_per_gas=tip, max_fee_per_gas=max_fee)


def _transaction(chain: Chain, nonce: int, fees: Fees, gas: int, call: _Call) -> Transfer:
    if isinstance(fees, LegacyFees):
        return LegacyTransfer(
            chain_id=chain.chain_id,
            nonce=nonce,
            gas_price=fees.gas_price,
            gas=gas,
            to=call.to,
            value=call.value,
            data=call.data,
        )
    return Eip1559Transfer(
        chain_id=chain.chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
        max_fee_per_gas=fees.max_fee_per_gas,
        gas=gas,
        to=call.to,
        value=call.value,
        data=call.data,
    )
