"""The main job, `tessera demo`: the exchange's withdrawals over HTTP against `tessera serve`
(its own process) on a 2-of-3 cluster of node processes and a Hardhat node — two completed,
one rejected by the nodes, one completed after two officers approve it with the CLI — with the
webhooks the receiver verified and exact balances; a second run reuses everything, on a fresh
chain, and fails a withdrawal an interrupted run left behind instead of resuming it."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from node_cluster import prime_pools, run
from sqlmodel import select

from coordinator.api.lifecycle import RANK, Status
from coordinator.api.tables import WebhookEndpointRow, WithdrawalEventRow, WithdrawalRow
from coordinator.demo_service import CHAIN_ID, ServiceDemoReport, run_service_demo
from coordinator.ports import free_port_block
from coordinator.store import CoordinatorStore

ETHER = 10**18
USDT = 10**6


def check_run(report: ServiceDemoReport) -> None:
    by_label = {item.label: item.withdrawal for item in report.withdrawals}
    assert [w.status for w in by_label.values()] == [
        Status.COMPLETED,
        Status.COMPLETED,
        Status.REJECTED,
        Status.COMPLETED,
    ]
    refused = by_label["0.5 ETH, not whitelisted"]
    # the nodes' own decision, with the policy they hold
    assert refused.sub_status == "nodes_refused" and refused.policy_hash == report.policy_hash
    assert refused.reason and "no rule" in refused.reason and refused.tx_hash is None
    large = report.withdrawals[3]
    assert large.approved_by == ["alice", "bob"] and large.withdrawal.approvals == ["alice", "bob"]
    assert [s for s, _ in large.timeline][:4] == [
        "SUBMITTED",
        "SCREENING",
        "PENDING_APPROVAL",
        "QUEUED",
    ]
    for item in report.withdrawals:
        ranks = [RANK[Status(s)] for s, _ in item.timeline]
        assert ranks == sorted(ranks) and item.timeline[-1][0] == item.withdrawal.status.value
    wallet, exchange = report.balances[report.wallet_address], report.balances[report.exchange]
    assert exchange["ETH"][1] - exchange["ETH"][0] == 5 * ETHER // 2  # 0.5 + 2, once each
    assert exchange["USDT"][1] - exchange["USDT"][0] == 250 * USDT
    assert wallet["USDT"][0] - wallet["USDT"][1] == 250 * USDT
    assert wallet["ETH"][0] - wallet["ETH"][1] > 5 * ETHER // 2  # and the gas
    assert report.balances[report.stranger] == {"ETH": (0, 0), "USDT": (0, 0)}
    # webhooks: one endpoint per run, numbered from 1 without a gap; every status of every
    # withdrawal, in the order of its lifecycle
    sequences = [d["sequence"] for d in report.webhooks]
    assert sorted(set(sequences)) == list(range(1, max(sequences) + 1))
    seen: dict[str, list[str]] = defaultdict(list)
    for doc in sorted(report.webhooks, key=lambda d: d["sequence"]):
        if doc["data"]["status"] not in seen[doc["data"]["id"]]:
            seen[doc["data"]["id"]].append(doc["data"]["status"])
    for item in report.withdrawals:
        # a step retried within a status (SIGNING, sub-status retrying) is an event of its
        # own, with the same status
        statuses = [s for s, _ in item.timeline]
        assert seen[item.withdrawal.id] == list(dict.fromkeys(statuses))


def test_the_demo_runs_the_exchange_flow_over_http_then_reuses_everything(tmp_path: Path) -> None:
    pools = prime_pools(tmp_path / "pools", 3, per_node=2)
    root = tmp_path / "demo"
    first = run(run_service_demo(root, 3, prime_pools=pools, base_port=free_port_block(3)))
    assert not first.reused_cluster
    check_run(first)
    names = [p.name for p in first.phases]
    assert "create wallet" in names and "start tessera serve" in names

    # an interrupted run left a withdrawal QUEUED on the chain that is now gone
    store = CoordinatorStore(root / "coordinator.db")
    try:
        with store.session() as session:
            left = session.get(WithdrawalRow, first.withdrawals[0].withdrawal.id)
            assert left is not None
            stale = WithdrawalRow.model_validate(
                {
                    **left.model_dump(),
                    "withdrawal_id": "wd_" + "0" * 32,
                    "client_request_id": "interrupted",
                    "status": "QUEUED",
                    "sub_status": "ready",
                    "tx_hash": None,
                }
            )
            session.add(stale)
            session.commit()
    finally:
        store.close()

    second = run(run_service_demo(root, 3))
    assert second.reused_cluster
    check_run(second)
    names = [p.name for p in second.phases]
    assert "wallet (reused)" in names and "create wallet" not in names
    assert second.wallet_address == first.wallet_address
    assert second.policy_hash == first.policy_hash and second.token == first.token
    assert min(d["sequence"] for d in second.webhooks) == 1  # this run's receiver, from 1
    store = CoordinatorStore(root / "coordinator.db")
    try:
        with store.session() as session:
            failed = session.get(WithdrawalRow, "wd_" + "0" * 32)
            assert failed is not None and failed.status == "FAILED"
            assert failed.reason_code == "chain_reset" and failed.chain_id == CHAIN_ID
            events = session.exec(
                select(WithdrawalEventRow).where(
                    WithdrawalEventRow.withdrawal_id == failed.withdrawal_id
                )
            ).all()
            assert [e.status for e in events] == ["FAILED"]
            # every webhook endpoint of the demo's receivers is disabled once its run ended
            endpoints = session.exec(select(WebhookEndpointRow)).all()
            assert len(endpoints) == 2 and all(e.disabled_at is not None for e in endpoints)
    finally:
        store.close()


def test_two_demos_at_once_is_a_usage_error_that_touches_nothing(tmp_path: Path) -> None:
    both = ["--engine", "--in-process", "--dir", str(tmp_path / "demo")]
    done = subprocess.run(
        [sys.executable, "-m", "coordinator", "demo", *both],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "one" in done.stderr
    assert not (tmp_path / "demo").exists()
