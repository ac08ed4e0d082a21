"""A small officers' world for the enforcement tests: three officer keys (quorum 2), a policy for
a hot wallet on the local chain, governance bundles signed by them, transactions and intents.

The policy (version 1):
  officers alice, bob, carol (Ed25519); quorum 2, freeze quorum 1, no time lock;
  group treasury = alice, bob (carol is an officer outside it);
  ETH (18 decimals) is native on chains 31337 (Hardhat) and 1;
  wallets hot and spare (chain 31337 only);
  rules: over 5 ETH BLOCK; up to 1 ETH to the whitelist from withdrawal-service ALLOW; more,
  to the whitelist, REQUIRE_APPROVAL 2 of treasury; anything else: default deny;
  velocity: each hot wallet at most `daily` ETH (3 by default) in any 24 h.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address

from policies.approvals import Approval, sign_approval
from policies.bundle import FreezeDoc, GovernanceBundle, PolicyVersionDoc
from policies.document import PolicyDocument, parse_policy
from policies.governance import (
    FreezeOrder,
    sign_governance,
)
from policies.intent import TransactionIntent
from policies.keys import LocalOfficerSigner, generate_officer_key
from policies.store import PolicyStore
from signer.chains.evm import Eip1559Transfer

CHAIN = 31337
WHITELISTED = to_checksum_address("0x" + "a1" * 20)
BLACKLISTED = to_checksum_address("0x" + "b2" * 20)
STRANGER = to_checksum_address("0x" + "c3" * 20)
INITIATOR = "withdrawal-service"
WEI = 10**18


@dataclass(frozen=True)
class Officers:
    keys: dict[str, LocalOfficerSigner]

    @classmethod
    def make(cls, names: Sequence[str] = ("alice", "bob", "carol")) -> Officers:
        return cls({name: generate_officer_key(name, "ed25519") for name in names})

    def __getitem__(self, name: str) -> LocalOfficerSigner:
        return self.keys[name]


def policy_document(
    officers: Officers,
    *,
    version: int = 1,
    previous: str | None = None,
    daily: str = "3",
    receipt_quorum: int | None = None,
    description: str = "enforcement test policy",
) -> PolicyDocument:
    limit: dict[str, Any] = {
        "id": "hot-eth-daily",
        "wallet": "hot",
        "asset": "ETH",
        "window_seconds": 86400,
        "max_amount": daily,
    }
    if receipt_quorum is not None:
        limit["receipt_quorum"] = receipt_quorum
    doc: dict[str, Any] = {
        "version": version,
        "description": description,
        "officers": [
            {"id": key.officer_id, "algorithm": key.algorithm, "public_key": key.public_key_hex}
            for key in officers.keys.values()
        ],
        "governance": {"quorum": 2, "freeze_quorum": 1, "loosening_timelock_seconds": 0},
        "groups": {"treasury": ["alice", "bob"]},
        "assets": {"ETH": {"decimals": 18, "native_chains": [1, CHAIN]}},
        "wallets": [
            {"id": "hot", "tier": "hot", "chains": [CHAIN]},
            {"id": "spare", "tier": "hot", "chains": [CHAIN]},
        ],
        "whitelists": {
            "exchanges": [{"address": WHITELISTED, "chain_id": CHAIN, "label": "Exchange"}]
        },
        "blacklist": [{"address": BLACKLISTED, "label": "Sanctioned"}],
        "rules": [
            {
                "id": "too-large",
                "match": {"assets": ["ETH"], "amount": {"min": "5.000000000000000001"}},
                "action": "BLOCK",
            },
            {
                "id": "small",
                "match": {
                    "destination": "whitelist:exchanges",
                    "assets": ["ETH"],
                    "amount": {"max": "1"},
                    "initiators": [INITIATOR],
                },
                "action": "ALLOW",
            },
            {
                "id": "large",
                "match": {"destination": "whitelist:exchanges"},
                "action": "REQUIRE_APPROVAL",
                "approvals": {"group": "treasury", "k": 2},
            },
        ],
        "velocity_limits": [limit],
    }
    if previous is not None:
        doc["previous"] = previous
    return parse_policy(doc, source="policy_world")


def version_doc(
    document: PolicyDocument, signers: Iterable[LocalOfficerSigner]
) -> PolicyVersionDoc:
    return PolicyVersionDoc.signed(document, signers)


def bundle(*versions: PolicyVersionDoc, freezes: Sequence[FreezeDoc] = ()) -> GovernanceBundle:
    return GovernanceBundle(versions=list(versions), freezes=list(freezes))


def freeze_doc(
    policy: PolicyDocument,
    wallet: str,
    signers: Iterable[LocalOfficerSigner],
    *,
    counter: int = 0,
    action: str = "freeze",
) -> FreezeDoc:
    order = FreezeOrder(
        action=action,  # type: ignore[arg-type]
        wallet=wallet,
        counter=counter,
        policy_hash=policy.policy_hash(),
        reason="incident",
    )
    return FreezeDoc(
        order=order,
        signatures=[sign_governance(s, order.purpose, order.statement()) for s in signers],
    )


def transfer(
    to: str = WHITELISTED, eth: str = "0.5", *, chain_id: int = CHAIN, nonce: int = 0
) -> bytes:
    """An EIP-1559 transfer's signing payload (what a node decodes)."""
    from decimal import Decimal

    value = int(Decimal(eth) * WEI)
    tx = Eip1559Transfer(
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=2 * 10**9,
        gas=21_000,
        to=to,
        value=value,
    )
    return tx.signing_payload()


def new_request_id(prefix: str = "wd") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def intent(
    request_id: str,
    *,
    to: str = WHITELISTED,
    eth: str = "0.5",
    wallet: str = "hot",
    chain_id: int = CHAIN,
    initiator: str = INITIATOR,
) -> TransactionIntent:
    return TransactionIntent.model_validate(
        {
            "request_id": request_id,
            "wallet": wallet,
            "chain_id": chain_id,
            "asset": "ETH",
            "destination": to,
            "amount": eth,
            "initiator": initiator,
        }
    )


def approve(
    officers: Iterable[LocalOfficerSigner],
    claim: TransactionIntent,
    policy: PolicyDocument,
    *,
    now: datetime,
    lifetime: timedelta = timedelta(hours=1),
) -> list[Approval]:
    return [sign_approval(o, claim, policy, now=now, lifetime=lifetime) for o in officers]


def officers_store(path: Path, officers: Officers, *documents: PolicyDocument) -> PolicyStore:
    """The officers' own store (`tessera policy …`) with `documents` proposed, signed by alice
    and bob and activated in order: the source of every bundle the nodes receive."""
    store = PolicyStore(path)
    for document in documents:
        now = datetime.now(UTC)
        store.propose(document, source="policy_world", now=now)
        for name in ("alice", "bob"):
            store.sign_policy(officers[name], policy_hash=document.policy_hash(), now=now)
        store.activate(policy_hash=document.policy_hash(), now=now)
    return store
