"""The policy decision inside the node (signer/node/decision.py, receipts.py, governance.py,
key_gate.py), on in-process nodes with real stores, real signed envelopes and the real
coordinator: what tests/test_enforcement.py (real node processes and tokens) does not cover —
approvals used up by a signed request, the daily limit running out across requests, a second
key for a bound wallet, receipt refusals audited on every node — plus the allowed flow."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from node_local import LocalClient, ScriptedNode, make_nodes
from policy_world import (
    STRANGER,
    Officers,
    approve,
    bundle,
    freeze_doc,
    intent,
    new_request_id,
    policy_document,
    transfer,
    version_doc,
)

from coordinator.engine import Coordinator, SigningFailed
from coordinator.store import CoordinatorStore, WalletRow
from policies.document import PolicyDocument
from signer.chains.evm import address_of, decode_signing_payload
from signer.node import codec
from signer.node.errors import NodeError
from signer.problems import ErrorCode
from signer.protocol.hd import derive

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class World:
    def __init__(self, root: Path) -> None:
        self.officers = Officers.make()
        self.policy: PolicyDocument = policy_document(self.officers)
        self.nodes: dict[int, ScriptedNode] = make_nodes(
            root / "nodes", 3, genesis=self.policy.policy_hash(), raw_keys=False
        )
        self.store_path = root / "coordinator.db"
        signers = [self.officers["alice"], self.officers["bob"]]
        for node in self.nodes.values():
            node.governance.accept(bundle(version_doc(self.policy, signers)))
        self.wallet: WalletRow = run(self.coordinator().create_wallet("hot", policy_wallet="hot"))

    def coordinator(self) -> Coordinator:
        clients: Any = {i: LocalClient(i, node) for i, node in self.nodes.items()}
        return Coordinator(clients, 2, CoordinatorStore(self.store_path))

    def sign(self, payload: bytes, request_id: str, **kwargs: Any) -> Any:
        return run(
            self.coordinator().sign_transaction(
                "hot", payload, request_id=request_id, initiator="withdrawal-service", **kwargs
            )
        )

    def audit_kinds(self, index: int, after: int) -> list[tuple[str, dict[str, Any]]]:
        return [(r.kind, r.payload) for r in self.nodes[index].audit.records(after_seq=after)]

    def heads(self) -> dict[int, int]:
        heads = {i: n.audit.head() for i, n in self.nodes.items()}
        return {i: 0 if head is None else head.seq for i, head in heads.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("decision"))


def test_a_whitelisted_transfer_within_limits_signs_and_recovers_to_the_wallet(
    world: World,
) -> None:
    payload = transfer(eth="0.5")
    outcome = world.sign(payload, new_request_id())
    public = codec.decode_key_public(world.wallet.key_public)
    tx = decode_signing_payload(payload)
    raw = tx.attach(outcome.signature)  # checks the digest and the recovered address
    assert raw and address_of(derive(public.public_key, public.chain_code, ()).public_key)


def test_a_node_policy_refusal_names_the_rule_and_the_policy_and_consumes_nothing(
    world: World,
) -> None:
    before = world.heads()
    with pytest.raises(SigningFailed) as failed:
        world.sign(transfer(to=STRANGER), new_request_id())
    assert failed.value.code is ErrorCode.POLICY_DENIED
    refusal = failed.value.refusal
    assert refusal is not None and refusal.problem.check == "no_rule"
    assert refusal.problem.policy_hash == world.policy.policy_hash()
    for index, seq in before.items():
        # the coordinator asked every node for a receipt first: each refused and recorded it
        refused = [p for k, p in world.audit_kinds(index, seq) if k == "node_refused"]
        assert refused and refused[-1]["action"] == "receipt", (index, refused)
        assert refused[-1]["code"] == "POLICY_DENIED" and refused[-1]["check"] == "no_rule"


def test_a_large_transfer_signs_with_two_treasury_approvals_only(world: World) -> None:
    request_id = new_request_id()
    claim = intent(request_id, eth="2")
    now = datetime.now(UTC)
    # carol is an officer outside the treasury group: her approval does not count
    with pytest.raises(SigningFailed) as pending:
        world.sign(
            transfer(eth="2"),
            request_id,
            approvals=approve(
                [world.officers["alice"], world.officers["carol"]], claim, world.policy, now=now
            ),
        )
    assert pending.value.refusal is not None
    assert pending.value.refusal.problem.check == "approvals_pending"
    approvals = approve(
        [world.officers["alice"], world.officers["bob"]], claim, world.policy, now=now
    )
    world.sign(transfer(eth="2"), request_id, approvals=approvals)
    # the same approvals for another request are a replay: not counted
    other = new_request_id()
    with pytest.raises(SigningFailed):
        world.sign(transfer(eth="2", nonce=1), other, approvals=approvals)


def test_a_frozen_wallet_signs_nothing(world: World, tmp_path: Path) -> None:
    spare = run(world.coordinator().create_wallet("spare", policy_wallet="spare"))
    assert spare.policy_wallet == "spare"
    order = freeze_doc(world.policy, "spare", [world.officers["carol"]])
    for node in world.nodes.values():
        node.governance.accept(bundle(freezes=[order]))
    with pytest.raises(SigningFailed) as failed:
        run(
            world.coordinator().sign_transaction(
                "spare", transfer(), request_id=new_request_id(), initiator="withdrawal-service"
            )
        )
    assert failed.value.refusal is not None and failed.value.refusal.problem.check == "frozen"


def test_a_second_key_for_a_bound_wallet_is_refused(world: World) -> None:
    with pytest.raises(Exception) as failed:
        run(world.coordinator().create_wallet("hot-again", policy_wallet="hot"))
    assert "WALLET_BOUND" in str(failed.value)


def test_the_daily_limit_holds_on_every_node(world: World) -> None:
    # 3 ETH a day: 0.5 and 2 (approved) signed above; 0.5 more fits, then nothing
    world.sign(transfer(eth="0.5", nonce=2), new_request_id())
    with pytest.raises(SigningFailed) as failed:
        world.sign(transfer(eth="0.1", nonce=3), new_request_id())
    assert failed.value.code is ErrorCode.POLICY_DENIED
    assert failed.value.refusal is not None
    assert failed.value.refusal.problem.check == "limit_exceeded"


def test_a_refused_document_is_audited_and_never_echoed(world: World) -> None:
    """A version signed by one officer (quorum 2) plus a signature over a statement stuffed
    with junk: refused as GOVERNANCE_REFUSED naming who counted and each failed check, without
    the junk, and audited."""
    v2 = policy_document(
        world.officers, version=2, previous=world.policy.policy_hash(), description="junk"
    )
    doc = version_doc(v2, [world.officers["alice"], world.officers["bob"]])
    forged = doc.signatures[1].model_copy(update={"statement": {"junk": "Z" * 5000}})
    node = world.nodes[3]
    before = node.audit.head()
    with pytest.raises(NodeError) as refused:
        node.governance.accept(
            bundle(doc.model_copy(update={"signatures": [doc.signatures[0], forged]}))
        )
    assert refused.value.code is ErrorCode.GOVERNANCE_REFUSED
    assert refused.value.check == "quorum" and "ZZZZ" not in refused.value.detail
    assert "bob [binding]" in refused.value.detail and "counted: alice" in refused.value.detail
    records = node.audit.records(after_seq=0 if before is None else before.seq)
    assert [r.payload["outcome"] for r in records if r.kind == "node_governance"] == ["refused"]
    assert node.governance.policy_hash() == world.policy.policy_hash()


def test_the_coordinator_brings_a_lagging_node_up_to_the_newest_version(world: World) -> None:
    """Version 2 reached node 1 only (an officer pushed it there); `sync_governance` relays
    node 1's chain to the others, which check it themselves."""
    v2 = policy_document(
        world.officers, version=2, previous=world.policy.policy_hash(), description="v2"
    )
    signers = [world.officers["alice"], world.officers["bob"]]
    world.nodes[1].governance.accept(
        bundle(version_doc(world.policy, signers), version_doc(v2, signers))
    )
    assert world.nodes[2].governance.policy_hash() == world.policy.policy_hash()
    replies = run(world.coordinator().sync_governance())
    assert set(replies) == {1, 2, 3}
    assert {n.governance.policy_hash() for n in world.nodes.values()} == {v2.policy_hash()}
