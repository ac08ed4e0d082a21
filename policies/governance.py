"""Governance: which policy version is in force, who may change it, and wallet freezes.

* A version becomes active only with signatures of ``quorum`` distinct officers of the version in
  force (for version 1, the genesis, its own officers).  So an officer removed in version N+1
  cannot help activate N+2, and an officer added by N+1 cannot help activate N+1.  Officers sign
  the statement ``{policy_hash, previous, version}`` (purpose ``policy-activation``).
* Versions are chained: version = in-force version + 1, previous = its policy hash.
* A version that loosens anything (`policies.diff.diff_policies(...).loosening`) takes effect
  ``loosening_timelock_seconds`` (of the version in force) after activation.  Until then it is
  pending: the old version stays in force, no further version can be activated, and
  ``freeze_quorum`` officers of the version in force can cancel it.  Activation time is when the
  verifier (a node, or the local store) accepted the quorum, by its own clock.
* A freeze of a wallet needs ``freeze_quorum`` signatures and applies at once; an unfreeze needs
  ``quorum``.  Each order names the wallet's order counter, so an old unfreeze cannot be
  replayed after a new freeze, and the policy hash in force, so it binds to that officer set.

Invalid signatures are never counted and never fatal on their own: the functions count the valid
distinct ones and raise `QuorumNotReachedError` (listing each rejected signature and why) when too
few remain.  `verify_signature` raises the typed error of one signature.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from policies.canonical import canonical_hash_hex
from policies.diff import diff_policies
from policies.document import (
    Identifier,
    Label,
    PolicyDocument,
    timestamp_str,
)
from policies.errors import (
    FreezeError,
    GovernanceError,
    GovernanceSignatureError,
    NoActivePolicyError,
    PendingVersionError,
    PolicyChainError,
    QuorumNotReachedError,
    UnknownOfficerError,
)
from policies.keys import OfficerSigner, Purpose, sign_statement, verify_statement

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


def _hex(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise PydanticCustomError("governance", "{what} must be lowercase hex", {"what": what})
        return value

    return PlainValidator(check)


Hash = Annotated[str, _hex(_HEX64, "hash")]
SignatureHex = Annotated[str, _hex(_HEX128, "signature (64 bytes)")]


@dataclass(frozen=True)
class PolicyProposal:
    """A policy document put forward for activation, with its identity."""

    document: PolicyDocument
    policy_hash: str

    @classmethod
    def of(cls, document: PolicyDocument) -> PolicyProposal:
        return cls(document, document.policy_hash())

    @property
    def version(self) -> int:
        return self.document.version

    def statement(self) -> dict[str, Any]:
        """What officers sign to activate it."""
        return {
            "policy_hash": self.policy_hash,
            "previous": self.document.previous,
            "version": self.document.version,
        }


class GovernanceSignature(BaseModel):
    """An officer's signature over one governance statement, with the statement it claims to
    sign (so a signature over something else is reported as such, not just as 'invalid')."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    officer: Identifier
    purpose: Purpose
    statement: dict[str, Any]
    signature: SignatureHex


def sign_governance(
    signer: OfficerSigner, purpose: Purpose, statement: Mapping[str, Any]
) -> GovernanceSignature:
    signature = sign_statement(signer, purpose, statement)
    return GovernanceSignature(
        officer=signer.officer_id,
        purpose=purpose,
        statement=dict(statement),
        signature=signature.hex(),
    )


def sign_activation(signer: OfficerSigner, proposal: PolicyProposal) -> GovernanceSignature:
    """``signer``'s vote to activate ``proposal``."""
    return sign_governance(signer, Purpose.POLICY_ACTIVATION, proposal.statement())


def verify_signature(
    signers: PolicyDocument,
    purpose: Purpose,
    statement: Mapping[str, Any],
    signature: GovernanceSignature,
) -> None:
    """Raise `GovernanceSignatureError` unless ``signature`` is a valid ``purpose`` signature
    over exactly ``statement`` by an officer of ``signers`` (the version whose officers decide)."""
    who = signature.officer
    if signature.purpose is not purpose:
        raise GovernanceSignatureError(
            who, purpose.value, "binding", f"is a {signature.purpose.value} signature"
        )
    if signature.statement != dict(statement):
        differing = sorted(
            key
            for key in set(statement) | set(signature.statement)
            if signature.statement.get(key) != statement.get(key)
        )
        shown = ", ".join(f"{k}={signature.statement.get(k)!r}" for k in differing)
        raise GovernanceSignatureError(
            who, purpose.value, "binding", f"signed another statement ({shown})"
        )
    try:
        officer = signers.officer(who)
    except UnknownOfficerError as exc:
        raise GovernanceSignatureError(
            who,
            purpose.value,
            "officer",
            f"not an officer of policy version {signers.version}, the version that decides",
        ) from exc
    if not verify_statement(
        officer.algorithm,
        officer.public_key,
        purpose,
        statement,
        bytes.fromhex(signature.signature),
    ):
        raise GovernanceSignatureError(
            who,
            purpose.value,
            "signature",
            f"does not verify under {who}'s {officer.algorithm} key",
        )


def count_signatures(
    signers: PolicyDocument,
    purpose: Purpose,
    statement: Mapping[str, Any],
    signatures: Iterable[GovernanceSignature],
) -> tuple[tuple[str, ...], tuple[GovernanceSignatureError, ...]]:
    """The distinct officers with a valid signature (sorted), and every rejected signature."""
    counted: set[str] = set()
    problems: list[GovernanceSignatureError] = []
    for signature in signatures:
        try:
            verify_signature(signers, purpose, statement, signature)
        except GovernanceSignatureError as exc:
            problems.append(exc)
            continue
        counted.add(signature.officer)  # one officer counts once, however often it signs
    return tuple(sorted(counted)), tuple(problems)


def require_quorum(
    action: str,
    needed: int,
    signers: PolicyDocument,
    purpose: Purpose,
    statement: Mapping[str, Any],
    signatures: Iterable[GovernanceSignature],
) -> tuple[str, ...]:
    counted, problems = count_signatures(signers, purpose, statement, signatures)
    if len(counted) < needed:
        raise QuorumNotReachedError(action, needed, counted, problems)
    return counted


@dataclass(frozen=True)
class ActivatedVersion:
    """One link of the policy chain, as accepted by this verifier."""

    document: PolicyDocument
    policy_hash: str
    signatures: tuple[GovernanceSignature, ...]
    signed_by: tuple[str, ...]
    activated_at: datetime
    effective_at: datetime
    loosening: tuple[str, ...] = ()
    cancel_signatures: tuple[GovernanceSignature, ...] = field(default=())
    cancelled_by: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return self.document.version

    @property
    def cancelled(self) -> bool:
        return bool(self.cancelled_by)

    def in_force_at(self, now: datetime) -> bool:
        return not self.cancelled and self.effective_at <= now


def _live(chain: Sequence[ActivatedVersion]) -> list[ActivatedVersion]:
    return [link for link in chain if not link.cancelled]


def active_policy(chain: Sequence[ActivatedVersion], *, now: datetime) -> ActivatedVersion:
    """The version in force at ``now``: the newest non-cancelled one whose time lock is over."""
    for link in reversed(chain):
        if link.in_force_at(now):
            return link
    raise NoActivePolicyError("no policy version is in force: activate a genesis version first")


def pending_version(chain: Sequence[ActivatedVersion], *, now: datetime) -> ActivatedVersion | None:
    """The activated but still time-locked version, if any."""
    live = _live(chain)
    if live and live[-1].effective_at > now:
        return live[-1]
    return None


def deciding_version(
    chain: Sequence[ActivatedVersion], proposal: PolicyProposal, *, now: datetime
) -> PolicyDocument | None:
    """The version whose officers decide on ``proposal`` (None: the genesis decides itself).
    Raises `PolicyChainError` unless ``proposal`` extends the chain, `PendingVersionError`
    while a time-locked version is pending."""
    live = _live(chain)
    doc = proposal.document
    if not live:
        if doc.version != 1 or doc.previous is not None:
            raise PolicyChainError(
                doc.version, "the first version to activate must be version 1 with no previous"
            )
        return None
    head = live[-1]
    if head.effective_at > now:
        raise PendingVersionError(head.version, timestamp_str(head.effective_at))
    if doc.version != head.version + 1:
        raise PolicyChainError(
            doc.version, f"must be version {head.version + 1} (version {head.version} is in force)"
        )
    if doc.previous != head.policy_hash:
        raise PolicyChainError(
            doc.version,
            f"previous is {doc.previous}, but version {head.version} in force has hash "
            f"{head.policy_hash}",
        )
    return head.document


def activate(
    chain: Sequence[ActivatedVersion],
    proposal: PolicyProposal,
    signatures: Iterable[GovernanceSignature],
    *,
    now: datetime,
) -> ActivatedVersion:
    """Accept ``proposal`` as the next link of ``chain`` at ``now``, or raise why not
    (`PolicyChainError`, `PendingVersionError`, `QuorumNotReachedError`)."""
    deciding = deciding_version(chain, proposal, now=now)
    signers = proposal.document if deciding is None else deciding
    signatures = tuple(signatures)
    signed_by = require_quorum(
        f"activate policy version {proposal.version}",
        signers.governance.quorum,
        signers,
        Purpose.POLICY_ACTIVATION,
        proposal.statement(),
        signatures,
    )
    loosening: tuple[str, ...] = ()
    effective_at = now
    if deciding is not None:
        loosening = tuple(diff_policies(deciding, proposal.document).loosening)
        lock = deciding.governance.loosening_timelock_seconds
        if loosening and lock:
            effective_at = now + timedelta(seconds=lock)
    return ActivatedVersion(
        document=proposal.document,
        policy_hash=proposal.policy_hash,
        signatures=signatures,
        signed_by=signed_by,
        activated_at=now,
        effective_at=effective_at,
        loosening=loosening,
    )


def cancel_statement(pending: ActivatedVersion) -> dict[str, Any]:
    return {"policy_hash": pending.policy_hash, "version": pending.version}


def cancel_pending(
    chain: Sequence[ActivatedVersion],
    signatures: Iterable[GovernanceSignature],
    *,
    now: datetime,
) -> ActivatedVersion:
    """Cancel the time-locked version with ``freeze_quorum`` signatures of the version in force;
    returns the cancelled link (replace the chain's last link with it)."""
    pending = pending_version(chain, now=now)
    if pending is None:
        raise GovernanceError("no time-locked policy version is pending; nothing to cancel")
    in_force = active_policy(chain, now=now)
    signatures = tuple(signatures)
    cancelled_by = require_quorum(
        f"cancel policy version {pending.version}",
        in_force.document.governance.freeze_quorum,
        in_force.document,
        Purpose.POLICY_CANCEL,
        cancel_statement(pending),
        signatures,
    )
    return replace(pending, cancel_signatures=signatures, cancelled_by=cancelled_by)


def verify_chain(chain: Sequence[ActivatedVersion], *, genesis_hash: str | None = None) -> None:
    """Re-check every link from the genesis: chaining, the quorum of the deciding version,
    the time lock of loosening versions, cancellations.  A node runs this on the bundle it
    receives, with the genesis hash pinned at cluster creation."""
    accepted: list[ActivatedVersion] = []
    for link in chain:
        proposal = PolicyProposal.of(link.document)
        if proposal.policy_hash != link.policy_hash:
            raise PolicyChainError(link.version, "recorded hash is not the document's hash")
        if not accepted and genesis_hash is not None and link.policy_hash != genesis_hash:
            raise PolicyChainError(link.version, "genesis hash differs from the pinned one")
        # Re-activating at the recorded time reproduces every check, the time lock included.
        again = activate(accepted, proposal, link.signatures, now=link.activated_at)
        if link.effective_at < again.effective_at:
            raise PolicyChainError(
                link.version,
                f"effective from {timestamp_str(link.effective_at)}, before its time lock ends at "
                f"{timestamp_str(again.effective_at)}",
            )
        if link.cancelled:
            cancelled = cancel_pending(
                [*accepted, replace(link, cancelled_by=(), cancel_signatures=())],
                link.cancel_signatures,
                now=link.activated_at,
            )
            accepted.append(cancelled)
        else:
            accepted.append(link)


# --- freezes -----------------------------------------------------------------------------------


class FreezeOrder(BaseModel):
    """Freeze or unfreeze one wallet; valid only as the wallet's ``counter``-th order under the
    policy version ``policy_hash``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["freeze", "unfreeze"]
    wallet: Identifier
    counter: int = Field(ge=0)
    policy_hash: Hash
    reason: Label | None = None

    @property
    def purpose(self) -> Purpose:
        return Purpose.FREEZE if self.action == "freeze" else Purpose.UNFREEZE

    def statement(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def order_id(self) -> str:
        return canonical_hash_hex(self.statement())


@dataclass(frozen=True)
class WalletFreeze:
    frozen: bool
    counter: int  # orders applied so far


@dataclass(frozen=True)
class FreezeState:
    """Freeze status per wallet (absent: never frozen, counter 0)."""

    wallets: Mapping[str, WalletFreeze] = field(default_factory=dict)

    def of(self, wallet: str) -> WalletFreeze:
        return self.wallets.get(wallet, WalletFreeze(False, 0))

    def frozen_wallets(self) -> frozenset[str]:
        return frozenset(w for w, state in self.wallets.items() if state.frozen)


def freeze_order(
    state: FreezeState,
    policy: PolicyDocument,
    action: Literal["freeze", "unfreeze"],
    wallet: str,
    reason: str | None = None,
) -> FreezeOrder:
    """The next order for ``wallet`` (checked against the current state)."""
    order = FreezeOrder(
        action=action,
        wallet=wallet,
        counter=state.of(wallet).counter,
        policy_hash=policy.policy_hash(),
        reason=reason,
    )
    _check_order(state, policy, order)
    return order


def _check_order(state: FreezeState, policy: PolicyDocument, order: FreezeOrder) -> None:
    if policy.wallet(order.wallet) is None:
        raise FreezeError(order.wallet, f"not a wallet of policy version {policy.version}")
    if order.policy_hash != policy.policy_hash():
        raise FreezeError(
            order.wallet, f"order is bound to another policy version than {policy.version}"
        )
    current = state.of(order.wallet)
    if order.counter != current.counter:
        raise FreezeError(
            order.wallet,
            f"order #{order.counter} is stale or out of order: the wallet has had "
            f"{current.counter} orders",
        )
    if order.action == "freeze" and current.frozen:
        raise FreezeError(order.wallet, "already frozen")
    if order.action == "unfreeze" and not current.frozen:
        raise FreezeError(order.wallet, "not frozen")


def freeze_quorum_for(policy: PolicyDocument, order: FreezeOrder) -> int:
    """Freezing takes the lower quorum; unfreezing the full one."""
    governance = policy.governance
    return governance.freeze_quorum if order.action == "freeze" else governance.quorum


def apply_freeze_order(
    state: FreezeState,
    policy: PolicyDocument,
    order: FreezeOrder,
    signatures: Iterable[GovernanceSignature],
) -> tuple[FreezeState, tuple[str, ...]]:
    """The state after ``order``, effective immediately, and who signed it; raises
    `FreezeError` or `QuorumNotReachedError` and leaves ``state`` as it was."""
    _check_order(state, policy, order)
    signed_by = require_quorum(
        f"{order.action} wallet {order.wallet}",
        freeze_quorum_for(policy, order),
        policy,
        order.purpose,
        order.statement(),
        signatures,
    )
    wallets = dict(state.wallets)
    wallets[order.wallet] = WalletFreeze(order.action == "freeze", order.counter + 1)
    return FreezeState(wallets), signed_by


# --- key plans ----------------------------------------------------------------------------------


def key_plan_statement(
    *,
    key_id: str,
    epoch: int,
    protocol: str,
    old_parties: Sequence[int],
    dealers: Sequence[int],
    new_parties: Sequence[int],
    threshold: int,
    wallet: str,
    policy_hash: str,
) -> dict[str, Any]:
    """What officers sign (purpose ``key-plan``) to authorise one re-share or refresh of a
    wallet's key: the key version it starts from, who deals, the new committee and threshold,
    under the policy version in force.  Every node checks the quorum before it takes part, so
    a coordinator cannot move a key to nodes of its choosing."""
    return {
        "key_id": key_id,
        "epoch": epoch,
        "protocol": protocol,
        "old_parties": list(old_parties),
        "dealers": list(dealers),
        "new_parties": list(new_parties),
        "threshold": threshold,
        "wallet": wallet,
        "policy_hash": policy_hash,
    }


class KeyPlan(BaseModel):
    """A plan file officers sign with `tessera officer approve-plan` (`key_plan_statement`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: Annotated[StrictStr, Field(pattern=r"^([0-9a-f]{2}){1,64}$")]
    epoch: StrictInt = Field(ge=0)
    protocol: Literal["refresh/v1", "reshare/v1"]
    old_parties: tuple[StrictInt, ...] = Field(min_length=2, max_length=255)
    dealers: tuple[StrictInt, ...] = Field(min_length=1, max_length=255)
    new_parties: tuple[StrictInt, ...] = Field(min_length=2, max_length=255)
    threshold: StrictInt = Field(ge=2, le=255)
    wallet: Identifier
    policy_hash: Hash

    def statement(self) -> dict[str, Any]:
        return key_plan_statement(**self.model_dump())


def sign_key_plan(signer: OfficerSigner, plan: KeyPlan) -> GovernanceSignature:
    """``signer``'s authorisation of one re-share or refresh."""
    return sign_governance(signer, Purpose.KEY_PLAN, plan.statement())
