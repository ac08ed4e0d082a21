"""A fully compromised coordinator against real node processes (docs/policies.md, "Enforcement
in the nodes"; docs/attacks.md A21).

The harness holds every node's real bearer token and controls the relay completely: it crafts
the requests, chooses what to relay and what to withhold.  Three node processes (2-of-3), each
with its own SoftHSM2 token, database and velocity ledger, genesis policy pinned at init.  One
named test per attack; each yields no partial signature, a typed refusal from every node asked,
an audit record of that refusal on every node asked, and leaves the presignature it named
unspent.  The allowed flows still sign and verify with an independent verifier (eth-keys).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from eth_keys import keys as eth_keys
from node_cluster import make_cluster
from policy_world import (
    BLACKLISTED,
    STRANGER,
    WHITELISTED,
    Officers,
    approve,
    intent,
    new_request_id,
    officers_store,
    policy_document,
    transfer,
    version_doc,
)
from typer.testing import CliRunner

from coordinator.client import NodeClient, NodeRefused
from coordinator.cluster import LocalCluster
from coordinator.console import app
from coordinator.engine import Coordinator, SigningFailed
from coordinator.store import WalletRow
from policies.approvals import Approval
from policies.bundle import GovernanceBundle
from policies.cli import policy_app
from policies.document import PolicyDocument
from policies.governance import sign_key_plan
from policies.intent import TransactionIntent
from policies.push import governance_bundle
from policies.store import PolicyStore
from signer.chains.evm import address_of, decode_signing_payload, recover_sender
from signer.node import codec
from signer.node.api import SessionProtocol, SignRequest, TransactionRequest, VelocityReceipt
from signer.node.spec import SessionSpec
from signer.problems import ErrorCode
from signer.protocol.hd import derive

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T = TypeVar("T")
DAILY = "10"  # ETH per day on the hot wallet: room for every test's reservations


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Harness:
    """The compromised coordinator: every node's real token, the relay in its hands."""

    cluster: LocalCluster
    officers: Officers
    store: PolicyStore  # the officers' own store: what they sign and push
    policy: PolicyDocument
    hot: WalletRow
    spare: WalletRow
    presignature: dict[tuple[int, ...], str]  # an unspent presignature of `hot` per signer set

    def coordinator(self) -> Coordinator:
        return self.cluster.coordinator()

    def clients(self) -> dict[int, NodeClient]:
        return self.cluster.clients()

    def call(self, index: int, coro: Any) -> Any:
        async def go() -> Any:
            clients = self.clients()
            try:
                return await coro(clients[index])
            except NodeRefused as exc:
                return exc
            finally:
                for client in clients.values():
                    await client.aclose()

        return run(go())

    # --- crafting requests -----------------------------------------------------------------
    def sender(self, wallet: WalletRow, path: tuple[int, ...] = ()) -> str:
        key = codec.decode_key_public(wallet.key_public)
        return address_of(derive(key.public_key, key.chain_code, path).public_key)

    def request(
        self,
        payload: bytes,
        claim: TransactionIntent,
        *,
        signers: tuple[int, ...] = (1, 2),
        wallet: WalletRow | None = None,
        approvals: list[Approval] | None = None,
        receipts: list[VelocityReceipt] | None = None,
        sender: str | None = None,
    ) -> SignRequest:
        wallet = wallet or self.hot
        return SignRequest(
            key_id=wallet.key_id,
            transaction=payload.hex(),
            request_id=claim.request_id,
            initiator=claim.initiator,
            intent=claim.model_dump(mode="json"),
            approvals=[a.to_json_object() for a in approvals or []],
            presignature_id=self.presignature[signers],
            sender=sender or self.sender(wallet),
            receipts=receipts or [],
        )

    def receipts(self, request: SignRequest, nodes: tuple[int, ...]) -> list[VelocityReceipt]:
        body = TransactionRequest(
            **request.model_dump(
                include={"key_id", "transaction", "request_id", "initiator", "intent", "approvals"}
            )
        )
        out = []
        for i in nodes:
            reply = self.call(i, lambda c: c.receipt(body))
            assert isinstance(reply, VelocityReceipt), reply
            out.append(reply)
        return out

    # --- what the nodes recorded -----------------------------------------------------------
    def audit_seq(self, index: int) -> int:
        with sqlite3.connect(self.node_db(index)) as db:
            row = db.execute("SELECT max(seq) FROM audit_log").fetchone()
        return int(row[0] or 0)

    def audit_after(self, index: int, seq: int) -> list[tuple[str, dict[str, Any]]]:
        with sqlite3.connect(self.node_db(index)) as db:
            rows = db.execute(
                "SELECT kind, payload FROM audit_log WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [(kind, json.loads(payload)) for kind, payload in rows]

    def node_db(self, index: int) -> Path:
        return self.cluster.nodes[index - 1].directory / "node.db"

    def available(self, index: int, presignature_id: str) -> bool:
        with sqlite3.connect(self.node_db(index)) as db:
            row = db.execute(
                "SELECT state FROM presignatures WHERE presignature_id = ?", (presignature_id,)
            ).fetchone()
        return row is not None and row[0] == "available"

    def refused_by_signers(
        self, request: SignRequest, code: ErrorCode, *, signers: tuple[int, ...] = (1, 2)
    ) -> list[NodeRefused]:
        """Send `request` to each signer: every one refuses with `code`, audits the refusal,
        and keeps the presignature."""
        before = {i: self.audit_seq(i) for i in signers}
        replies = [self.call(i, lambda c: c.sign_transaction(request)) for i in signers]
        for i, reply in zip(signers, replies, strict=True):
            assert isinstance(reply, NodeRefused), f"node {i} signed: {reply}"
            assert reply.code is code, reply
            assert reply.problem.node == i
            records = self.audit_after(i, before[i])
            refused = [p for kind, p in records if kind == "node_refused"]
            assert refused and refused[-1]["code"] == code.value, records
            assert refused[-1]["request_id"] == request.request_id
            assert self.available(i, request.presignature_id)
        return replies


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("enforcement")
    officers = Officers.make()
    policy = policy_document(officers, daily=DAILY)
    store = officers_store(root / "officers.db", officers, policy)
    cluster = make_cluster(root, genesis_policy=policy.policy_hash(), raw_keys=False)
    run(cluster.up())
    try:

        async def setup() -> tuple[WalletRow, WalletRow, dict[tuple[int, ...], str]]:
            coordinator = cluster.coordinator()
            try:
                await coordinator.relay_governance(governance_bundle(store))
                hot = await coordinator.create_wallet("hot", policy_wallet="hot")
                spare = await coordinator.create_wallet("spare", policy_wallet="spare")
                rows = await asyncio.gather(
                    *(coordinator.presign(hot, s, ()) for s in ((1, 2), (1, 3), (2, 3)))
                )
                for row in rows:
                    coordinator.store.take_presignature(
                        hot.key_id, hot.epoch, row.signers, row.path
                    )  # the harness holds them: the honest pool never uses them
                return (
                    hot,
                    spare,
                    {tuple(int(i) for i in r.signers.split(",")): r.presignature_id for r in rows},
                )
            finally:
                await coordinator.aclose()

        hot, spare, presignatures = run(setup())
        yield Harness(cluster, officers, store, policy, hot, spare, presignatures)
    finally:
        cluster.down()
        store.close()


# --- the allowed flows -----------------------------------------------------------------------


def _signed_and_recovers(harness: Harness, payload: bytes, outcome: Any) -> None:
    raw = decode_signing_payload(payload).attach(outcome.signature)
    assert recover_sender(raw) == harness.sender(harness.hot)
    digest = outcome.signature.digest
    vrs = eth_keys.Signature(
        vrs=(outcome.signature.recovery_id, outcome.signature.r, outcome.signature.s)
    )
    assert vrs.recover_public_key_from_msg_hash(digest).to_checksum_address() == harness.sender(
        harness.hot
    )


def test_a_whitelisted_transfer_within_limits_signs(harness: Harness) -> None:
    payload = transfer(eth="0.5")

    async def go() -> Any:
        coordinator = harness.coordinator()
        try:
            return await coordinator.sign_transaction(
                "hot", payload, request_id=new_request_id(), initiator="withdrawal-service"
            )
        finally:
            await coordinator.aclose()

    _signed_and_recovers(harness, payload, run(go()))


def test_a_large_transfer_signs_with_two_officer_approvals(harness: Harness) -> None:
    request_id = new_request_id()
    payload = transfer(eth="2", nonce=1)
    claim = intent(request_id, eth="2")
    approvals = approve(
        [harness.officers["alice"], harness.officers["bob"]],
        claim,
        harness.policy,
        now=datetime.now(UTC),
    )

    async def go() -> Any:
        coordinator = harness.coordinator()
        try:
            return await coordinator.sign_transaction(
                "hot",
                payload,
                request_id=request_id,
                initiator="withdrawal-service",
                approvals=approvals,
            )
        finally:
            await coordinator.aclose()

    _signed_and_recovers(harness, payload, run(go()))


def test_the_operator_cli_signs_for_a_policy_wallet_and_prints_a_refusal(harness: Harness) -> None:
    """`tessera cluster sign` on a policy wallet: the nodes decide (an allowed transfer is signed
    and recovers to the wallet; one off the whitelist exits 1 with the node's reason)."""
    root = str(harness.cluster.root)
    common = ["cluster", "sign", "--wallet", "hot", "--dir", root, "--chain-id", "31337"]
    common += ["--initiator", "withdrawal-service", "--json"]
    allowed = CliRunner().invoke(
        app, [*common, "--to", WHITELISTED, "--value", str(10**17), "--nonce", "9"]
    )
    assert allowed.exit_code == 0, allowed.output
    signed = json.loads(allowed.output)
    assert signed["from"] == harness.sender(harness.hot)
    refused = CliRunner().invoke(
        app, [*common, "--to", STRANGER, "--value", str(10**17), "--nonce", "10"]
    )
    assert refused.exit_code == 1, refused.output
    error = json.loads(refused.output)["error"]
    assert error["code"] == "POLICY_DENIED" and "no rule matched" in error["detail"]


# --- one test per attack ---------------------------------------------------------------------


def test_a_destination_off_the_whitelist(harness: Harness) -> None:
    claim = intent(new_request_id(), to=STRANGER)
    refusals = harness.refused_by_signers(
        harness.request(transfer(to=STRANGER), claim), ErrorCode.POLICY_DENIED
    )
    assert all(r.problem.check == "no_rule" for r in refusals)
    assert all(r.problem.policy_hash == harness.policy.policy_hash() for r in refusals)


def test_a_blacklisted_destination(harness: Harness) -> None:
    claim = intent(new_request_id(), to=BLACKLISTED)
    refusals = harness.refused_by_signers(
        harness.request(transfer(to=BLACKLISTED), claim), ErrorCode.POLICY_DENIED
    )
    assert all(r.problem.check == "blacklisted" for r in refusals)


def test_an_amount_over_the_per_transaction_limit(harness: Harness) -> None:
    claim = intent(new_request_id(), eth="6")
    refusals = harness.refused_by_signers(
        harness.request(transfer(eth="6"), claim), ErrorCode.POLICY_DENIED
    )
    assert all((r.problem.check, r.problem.rule) == ("rule_block", "too-large") for r in refusals)


def test_velocity_split_across_signer_sets(harness: Harness) -> None:
    """Each signer set gets receipts from its own two nodes only (and one forged): with q = n
    = 3 no node releases a partial, on any set."""
    for signers in ((1, 2), (1, 3), (2, 3)):
        claim = intent(new_request_id(), eth="1")
        draft = harness.request(transfer(eth="1"), claim, signers=signers)
        receipts = harness.receipts(draft, signers)
        outsider = next(i for i in (1, 2, 3) if i not in signers)
        forged = receipts[0].model_copy(update={"node": outsider})  # its signature is node 1's
        request = harness.request(
            transfer(eth="1"), claim, signers=signers, receipts=[*receipts, forged]
        )
        refusals = harness.refused_by_signers(request, ErrorCode.RECEIPTS_MISSING, signers=signers)
        assert all("2 of the 3" in r.detail for r in refusals)


def _approval_refused(
    harness: Harness, approvals: list[Approval], claim: TransactionIntent
) -> None:
    request = harness.request(transfer(eth="2"), claim, approvals=approvals)
    refusals = harness.refused_by_signers(request, ErrorCode.POLICY_DENIED)
    assert all(r.problem.check == "approvals_pending" for r in refusals)


def test_an_approval_replayed_from_another_request(harness: Harness) -> None:
    other = intent(new_request_id(), eth="2")
    approvals = approve(
        [harness.officers["alice"], harness.officers["bob"]],
        other,
        harness.policy,
        now=datetime.now(UTC),
    )
    _approval_refused(harness, approvals, intent(new_request_id(), eth="2"))


def test_an_approval_made_for_another_policy_hash(harness: Harness) -> None:
    claim = intent(new_request_id(), eth="2")
    other_policy = policy_document(harness.officers, daily="1000")
    approvals = approve(
        [harness.officers["alice"], harness.officers["bob"]],
        claim,
        other_policy,
        now=datetime.now(UTC),
    )
    _approval_refused(harness, approvals, claim)


def test_an_expired_approval(harness: Harness) -> None:
    claim = intent(new_request_id(), eth="2")
    approvals = approve(
        [harness.officers["alice"], harness.officers["bob"]],
        claim,
        harness.policy,
        now=datetime.now(UTC) - timedelta(hours=2),
        lifetime=timedelta(hours=1),
    )
    _approval_refused(harness, approvals, claim)


def test_approvals_by_a_key_outside_the_group_or_outside_the_officers(harness: Harness) -> None:
    claim = intent(new_request_id(), eth="2")
    mallory = Officers.make(("mallory",))["mallory"]
    approvals = approve(
        [harness.officers["alice"], harness.officers["carol"], mallory],
        claim,
        harness.policy,
        now=datetime.now(UTC),
    )
    _approval_refused(harness, approvals, claim)


def test_a_chain_id_mismatch(harness: Harness) -> None:
    claim = intent(new_request_id(), chain_id=1)
    refusals = harness.refused_by_signers(
        harness.request(transfer(chain_id=1), claim), ErrorCode.POLICY_DENIED
    )
    assert all(r.problem.check == "chain_not_allowed" for r in refusals)


def test_a_transaction_claiming_another_wallet_or_path(harness: Harness) -> None:
    claim = intent(new_request_id(), wallet="spare")
    harness.refused_by_signers(harness.request(transfer(), claim), ErrorCode.SENDER_MISMATCH)
    other_path = harness.sender(harness.hot, (0, 1))
    request = harness.request(transfer(), intent(new_request_id()), sender=other_path)
    refusals = harness.refused_by_signers(request, ErrorCode.SENDER_MISMATCH)
    assert all(r.problem.check == "sender" for r in refusals)


def test_a_decoded_amount_that_differs_from_the_claimed_intent(harness: Harness) -> None:
    claim = intent(new_request_id(), eth="0.1")
    refusals = harness.refused_by_signers(
        harness.request(transfer(eth="0.9"), claim), ErrorCode.INTENT_MISMATCH
    )
    assert all("amount" in r.detail for r in refusals)


def test_the_interactive_signing_path(harness: Harness) -> None:
    """Interactive signing: a presign session run on the spot for this request (path 0/7,
    where no presignature existed), then the signing round — refused by the same decision, the
    fresh presignature left unspent."""

    async def presign() -> Any:
        coordinator = harness.coordinator()
        try:
            return await coordinator.presign(harness.hot, (1, 2), (0, 7))
        finally:
            await coordinator.aclose()

    fresh = run(presign())
    sender = harness.sender(harness.hot, (0, 7))
    request = harness.request(transfer(to=STRANGER), intent(new_request_id(), to=STRANGER))
    request = request.model_copy(
        update={"presignature_id": fresh.presignature_id, "sender": sender}
    )
    refusals = harness.refused_by_signers(request, ErrorCode.POLICY_DENIED)
    assert all(r.problem.check == "no_rule" for r in refusals)


def test_a_reshare_without_quorum(harness: Harness) -> None:
    async def plan() -> Any:
        coordinator = harness.coordinator()
        try:
            return await coordinator.key_plan("hot", refresh=True)
        finally:
            await coordinator.aclose()

    key_plan = run(plan())
    one = [sign_key_plan(harness.officers["alice"], key_plan)]  # quorum is 2
    key = codec.decode_key_public(harness.hot.key_public)
    for authorization in ([], one):
        spec = SessionSpec(
            protocol=SessionProtocol.REFRESH,
            request=secrets.token_bytes(16),
            parties=key.parties,
            threshold=key.threshold,
            key_id=bytes.fromhex(harness.hot.key_id),
            plan_old=harness.hot.key_public,
            dealers=key.parties,
            new_parties=key.parties,
            wallet="hot",
            authorization=tuple(authorization),
        )
        for i in (1, 2, 3):
            before = harness.audit_seq(i)
            reply = harness.call(i, lambda c, spec=spec: c.start(spec.to_json()))
            assert isinstance(reply, NodeRefused) and reply.code is ErrorCode.PLAN_UNAUTHORISED
            kinds = [(k, p.get("code")) for k, p in harness.audit_after(i, before)]
            assert ("node_refused", "PLAN_UNAUTHORISED") in kinds


def test_a_raw_digest_request(harness: Harness) -> None:
    for i in (1, 2):
        before = harness.audit_seq(i)
        reply = harness.call(
            i,
            lambda c: c.sign(
                harness.hot.key_id, harness.presignature[(1, 2)], b"\x11" * 32, "keccak256"
            ),
        )
        assert isinstance(reply, NodeRefused) and reply.code is ErrorCode.RAW_SIGNING_REFUSED
        assert ("node_refused", "RAW_SIGNING_REFUSED") in [
            (k, p.get("code")) for k, p in harness.audit_after(i, before)
        ]
        assert harness.available(i, harness.presignature[(1, 2)])


def test_a_request_to_a_frozen_wallet(harness: Harness) -> None:
    now = datetime.now(UTC)
    harness.store.sign_freeze(harness.officers["carol"], "freeze", "spare", reason="test", now=now)

    async def relay() -> None:
        coordinator = harness.coordinator()
        try:
            await coordinator.relay_governance(governance_bundle(harness.store))
        finally:
            await coordinator.aclose()

    run(relay())

    async def go() -> Any:
        coordinator = harness.coordinator()
        try:
            return await coordinator.sign_transaction(
                "spare", transfer(), request_id=new_request_id(), initiator="withdrawal-service"
            )
        finally:
            await coordinator.aclose()

    with pytest.raises(SigningFailed) as failed:
        run(go())
    assert failed.value.refusal is not None and failed.value.refusal.problem.check == "frozen"


def test_a_downgrade_to_an_older_policy_version(harness: Harness) -> None:
    """Version 2 is in force; the coordinator relays version 1 alone, and a competing version
    2 the officers once signed: both refused, nothing changes."""
    v2 = policy_document(
        harness.officers,
        version=2,
        previous=harness.policy.policy_hash(),
        daily=DAILY,
        description="v2",
    )
    harness.store.propose(v2, source="test", now=datetime.now(UTC))
    for name in ("alice", "bob"):
        harness.store.sign_policy(
            harness.officers[name], policy_hash=v2.policy_hash(), now=datetime.now(UTC)
        )
    harness.store.activate(policy_hash=v2.policy_hash(), now=datetime.now(UTC))
    full = governance_bundle(harness.store)
    for i in (1, 2, 3):
        harness.call(i, lambda c: c.relay_governance(full))
    older = GovernanceBundle(versions=full.versions[:1])
    rival_doc = policy_document(
        harness.officers,
        version=2,
        previous=harness.policy.policy_hash(),
        daily="1000",
        description="rival",
    )
    rival = GovernanceBundle(
        versions=[
            full.versions[0],
            version_doc(rival_doc, [harness.officers["alice"], harness.officers["bob"]]),
        ]
    )
    for bundle in (older, rival):
        for i in (1, 2, 3):
            before = harness.audit_seq(i)
            reply = harness.call(i, lambda c, bundle=bundle: c.relay_governance(bundle))
            assert isinstance(reply, NodeRefused) and reply.code is ErrorCode.GOVERNANCE_REFUSED
            assert reply.problem.check == "downgrade"
            records = harness.audit_after(i, before)
            assert any(k == "node_governance" and p["outcome"] == "refused" for k, p in records)
            status = harness.call(i, lambda c: c.governance())
            assert status.policy_hash == v2.policy_hash()
    harness.policy = v2


def test_a_withheld_freeze_that_the_officer_pushes_directly(harness: Harness) -> None:
    """The coordinator never relays the freeze of `hot`; an officer pushes it to each node
    with `tessera policy push`, and no node signs for the wallet any more."""
    harness.store.sign_freeze(
        harness.officers["carol"], "freeze", "hot", reason="incident", now=datetime.now(UTC)
    )
    command = ["push", "--store", str(harness.store.path), "--json"]
    for node in harness.cluster.nodes:
        command += ["--node", node.url]
    result = CliRunner().invoke(policy_app, command)
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.output)["nodes"]
    assert all(n["accepted"] and "hot" in n["status"]["frozen"] for n in pushed)
    claim = intent(new_request_id(), to=WHITELISTED, eth="0.1")
    refusals = harness.refused_by_signers(
        harness.request(transfer(eth="0.1"), claim), ErrorCode.POLICY_DENIED
    )
    assert all(r.problem.check == "frozen" for r in refusals)
