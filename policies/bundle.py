"""The governance bundle: the officers' policy chain and freeze orders as one JSON document, the
form in which they reach the key-share nodes (`POST /v1/governance` on every node).

It travels two ways — relayed by the coordinator, or pushed by an officer straight to a node
(`tessera policy push --node URL`) — and either way the documents authenticate themselves: a
node re-checks every signature against the officers of the version before (`policies.
governance`), so whoever carries a bundle can withhold it but never forge or alter it.  A node
skips what it already holds, so the whole chain can be sent again at any time.

This module is the bundle's one definition: the CLI builds it from the officers' store and the
node validates a posted body with the same models.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from policies.document import PolicyDocument
from policies.governance import (
    ActivatedVersion,
    FreezeOrder,
    GovernanceSignature,
    PolicyProposal,
    sign_activation,
)
from policies.keys import OfficerSigner

#: Officer signatures on one statement: as many as a policy may have officers.
MAX_SIGNATURES = 100
#: Versions and freeze orders in one bundle.
MAX_VERSIONS = 1000
MAX_FREEZES = 10_000

Signatures = Annotated[list[GovernanceSignature], Field(max_length=MAX_SIGNATURES)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyVersionDoc(_Wire):
    """One link of the chain: the document and the signatures that activated it, plus — for a
    time-locked version the officers cancelled — the signatures that cancelled it."""

    document: dict[str, Any]
    signatures: Signatures
    cancel_signatures: Signatures = []

    @classmethod
    def signed(cls, document: PolicyDocument, signers: Iterable[OfficerSigner]) -> PolicyVersionDoc:
        """`document` with each of `signers`' activation signature: a link as officers make it
        without a store (benchmarks, tests, a genesis version pushed by hand)."""
        proposal = PolicyProposal.of(document)
        return cls(
            document=document.model_dump(mode="json"),
            signatures=[sign_activation(signer, proposal) for signer in signers],
        )


class FreezeDoc(_Wire):
    """A freeze or unfreeze order with its officers' signatures."""

    order: FreezeOrder
    signatures: Signatures


class GovernanceBundle(_Wire):
    """Policy versions, oldest first, and freeze orders in the order they were applied."""

    versions: Annotated[list[PolicyVersionDoc], Field(max_length=MAX_VERSIONS)] = []
    freezes: Annotated[list[FreezeDoc], Field(max_length=MAX_FREEZES)] = []


def bundle_of(
    chain: Sequence[ActivatedVersion],
    freezes: Iterable[tuple[FreezeOrder, Sequence[GovernanceSignature]]] = (),
) -> GovernanceBundle:
    """The bundle of an accepted chain and the applied freeze orders (with their signatures)."""
    return GovernanceBundle(
        versions=[
            PolicyVersionDoc(
                document=link.document.model_dump(mode="json"),
                signatures=list(link.signatures),
                cancel_signatures=list(link.cancel_signatures),
            )
            for link in chain
        ],
        freezes=[FreezeDoc(order=order, signatures=list(sigs)) for order, sigs in freezes],
    )
