"""The velocity bound against a malicious coordinator (signer/node/receipts.py; the bound is in
docs/policies.md, "Enforcement in the nodes").

Hypothesis plays the coordinator: it schedules requests over every signer set of 2-of-3 and of
3-of-5, chooses for each request which nodes it asks for receipts, and relays whatever it got
(plus forged ones).  Some nodes are compromised: they issue receipts without reserving anything
and release partials without checking.  The honest nodes run the real decision
(`PolicyGate.decide`), the real receipt issuance (`NodeService.receipt`: reservation in the
node's own SQLite ledger, identity-signed receipt) and the real receipt check of the signing
path (`Signing._check_receipts`).  A request is signed when every one of its t signers
releases; the total signed in one window never exceeds (n − f)/(q − f) · L.

Each example starts a new window (the nodes' clock moves two days on), so examples share nodes
but not budget.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_local import ScriptedNode, make_nodes
from policy_world import Officers, bundle, intent, policy_document, transfer, version_doc

from policies.document import PolicyDocument
from signer.node.api import SignRequest, TransactionRequest, VelocityReceipt
from signer.node.errors import NodeError
from signer.node.policy_tables import KeyBindingRow
from signer.node.receipts import issue

LIMIT = Decimal("3")  # ETH per day (policy_world's hot-eth-daily)
KEY_ID = "ab" * 16


@dataclass
class Committee:
    n: int
    t: int
    q: int
    compromised: frozenset[int]
    nodes: dict[int, ScriptedNode]
    policy: PolicyDocument
    clock: list[datetime]

    @property
    def bound(self) -> Decimal:
        f = len(self.compromised)
        return Decimal(self.n - f) / Decimal(self.q - f) * LIMIT


def committee(root: Path, n: int, t: int, q: int, compromised: set[int]) -> Committee:
    officers = Officers.make()
    policy = policy_document(officers, receipt_quorum=None if q == n else q)
    nodes = make_nodes(root, n, genesis=policy.policy_hash(), raw_keys=False)
    clock = [datetime.now(UTC)]
    for node in nodes.values():
        node.governance.accept(bundle(version_doc(policy, [officers["alice"], officers["bob"]])))
        node.gate.clock = lambda: clock[0]
        with node.store.session() as session:  # the key's wallet binding, as its DKG left it
            session.add(KeyBindingRow(key_id=KEY_ID, wallet="hot", policy_hash=None, bound_at=0.0))
            session.commit()
    return Committee(n, t, q, frozenset(compromised), nodes, policy, clock)


def forged_receipt(world: Committee, index: int, request: TransactionRequest) -> VelocityReceipt:
    """A compromised node's receipt: validly signed, nothing reserved."""
    node = world.nodes[index]
    claim = intent(request.request_id, eth=request.intent["amount"])
    limits = world.policy.limits_for("hot", "ETH")
    return issue(node.endpoint, claim, policy_hash=world.policy.policy_hash(), limits=limits)


def releases(world: Committee, index: int, request: SignRequest) -> bool:
    """Whether node `index` would release its partial: the decision and the receipt check of
    the signing path (no presignature is spent here: the property is about the ledgers)."""
    if index in world.compromised:
        return True
    node = world.nodes[index]
    try:
        decided = node.gate.decide(request)
        stub: Any = SimpleNamespace(
            committee=tuple(world.nodes),
            public=SimpleNamespace(signers=tuple(range(world.t))),
        )
        node.signing._check_receipts(request, stub, decided)
    except NodeError:
        return False
    return True


def schedule(world: Committee) -> Any:
    sets = list(itertools.combinations(sorted(world.nodes), world.t))
    one = st.tuples(
        st.sampled_from(sets),
        st.sets(st.sampled_from(sorted(world.nodes)), min_size=1),
        st.sampled_from(["0.5", "1"]),
    )
    return st.lists(one, min_size=1, max_size=10)


def play(world: Committee, requests: list[tuple[tuple[int, ...], set[int], str]]) -> Decimal:
    world.clock[0] += timedelta(days=2)  # a new window: earlier examples no longer count
    signed = Decimal(0)
    for number, (signers, asked, eth) in enumerate(requests):
        request_id = f"wd-{secrets.token_hex(6)}-{number}"
        claim = intent(request_id, eth=eth)
        base = TransactionRequest(
            key_id=KEY_ID,
            transaction=transfer(eth=eth, nonce=number).hex(),
            request_id=request_id,
            initiator=claim.initiator,
            intent=claim.model_dump(mode="json"),
        )
        receipts = []
        for j in sorted(asked):
            if j in world.compromised:
                receipts.append(forged_receipt(world, j, base))
                continue
            try:
                receipts.append(world.nodes[j].receipt(base))
            except NodeError:
                continue  # the node's own total would pass the limit: no receipt
        request = SignRequest(
            **base.model_dump(),
            presignature_id="00" * 32,
            sender="0x" + "00" * 20,
            receipts=receipts,
        )
        if all(releases(world, i, request) for i in signers):
            signed += Decimal(eth)
    return signed


CONFIGS = [
    (3, 2, 3, set()),  # q = n: exactly L
    (3, 2, 2, {3}),  # q = 2 with one compromised node: 2L
    (5, 3, 5, set()),
    (5, 3, 3, {4, 5}),  # q = 3 with two compromised nodes: 3L
]


@pytest.mark.parametrize(("n", "t", "q", "bad"), CONFIGS, ids=str)
def test_a_malicious_coordinator_never_gets_more_than_the_bound_through(
    tmp_path_factory: pytest.TempPathFactory, n: int, t: int, q: int, bad: set[int]
) -> None:
    world = committee(tmp_path_factory.mktemp(f"velocity-{n}-{q}"), n, t, q, bad)
    most = [Decimal(0)]

    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests=schedule(world))
    def property_holds(requests: list[tuple[tuple[int, ...], set[int], str]]) -> None:
        signed = play(world, requests)
        most[0] = max(most[0], signed)
        assert signed <= world.bound, (signed, world.bound, requests)

    property_holds()
    # the honest schedule reaches L: the bound is not met by refusing everything
    honest = [(tuple(range(1, t + 1)), set(world.nodes), "1")] * 4
    assert play(world, honest) == LIMIT
