"""The main job, `tessera demo`: demo officers activate a policy on a 2-of-3 cluster of node
processes; a whitelisted EIP-1559 transfer is signed and mined, one off the whitelist refused
with the nodes' reason, a large one signed after two CLI approvals and mined; a second run
reuses officers, policy, cluster, wallet and pool."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from node_cluster import prime_pools, run

from coordinator.demo import run_cluster_demo
from coordinator.ports import free_port_block


def test_demo_signs_and_mines_then_reuses_everything(tmp_path: Path) -> None:
    pools = prime_pools(tmp_path / "pools", 3, per_node=2)
    root = tmp_path / "demo"
    first = run(run_cluster_demo(root, 2, prime_pools=pools, base_port=free_port_block(3)))
    assert not first.reused_cluster
    names = [phase.name for phase in first.phases]
    assert "create wallet" in names and "submit to the EVM" in names
    assert first.signature is not None and first.signers == (1, 2)
    assert first.recovered == first.wallet_address
    assert Account.recover_transaction(first.raw_transaction) == first.wallet_address
    value = 10**18 // 2 + 2 * 10**18  # the whitelisted 0.5 ETH and the approved 2 ETH
    received = first.balances_after[first.recipient] - first.balances_before[first.recipient]
    assert received == value
    assert (
        first.balances_before[first.wallet_address] - first.balances_after[first.wallet_address]
        == value + first.gas_fee
    )
    assert first.pool_left == 0
    assert first.refused["code"] == "POLICY_DENIED" and first.refused["check"] == "no_rule"
    assert first.refused["policy_hash"] == first.policy_hash
    assert first.large_approved_by == ("alice", "bob") and first.large_transaction_hash
    # the USDT payout through the payout engine: 250.000000 exactly, confirmed
    assert first.token_payout["state"] == "confirmed"
    for address, sign in ((first.recipient, 1), (first.wallet_address, -1)):
        before, after = first.token_balances[address]
        assert after - before == sign * 250 * 10**6
    # the deposit address swept to the wallet, every unit, its gas sent first
    assert first.sweep["state"] == "confirmed" and first.sweep["swept_units"] == 40 * 10**6
    assert first.sweep["left_at_deposit_address"] == 0
    assert [g["state"] for g in first.sweep["gas_payouts"]] == ["confirmed"]  # type: ignore[union-attr]

    second = run(run_cluster_demo(root, 2))
    assert second.reused_cluster
    names = [phase.name for phase in second.phases]
    assert "wallet (reused)" in names and "create wallet" not in names
    assert second.wallet_address == first.wallet_address
    assert second.recovered == second.wallet_address
    assert second.transaction_hash != first.transaction_hash
    assert second.policy_hash == first.policy_hash
    assert second.token == first.token and second.token_payout["state"] == "confirmed"
    assert second.token_payout["nonce"] == 2  # a fresh chain: two ETH transfers before it


def test_officers_move_an_older_demo_policy_to_the_token_deployed_now(tmp_path: Path) -> None:
    """A demo directory whose policy names no (or another) USDT contract: the officers activate
    the next version with the token of this run, chained to the one in force."""
    from coordinator.demo import DemoOfficers

    officers = DemoOfficers(tmp_path)
    new = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    first = officers.create(1337, "0x1111111111111111111111111111111111111111")
    assert officers.for_chain(first, 1337, first.assets["USDT"].contract_on(1337) or "") is first
    second = officers.for_chain(first, 1337, new)
    assert second.version == 2 and second.previous == first.policy_hash()
    assert second.assets["USDT"].contract_on(1337) == new
    assert officers.policy().policy_hash() == second.policy_hash()


def test_officers_move_the_demo_policy_to_the_other_demos_chain(tmp_path: Path) -> None:
    """`demo --engine` (the in-process EVM) and `demo` (a Hardhat node) share a directory: the
    policy follows the chain of the run, each move a next version chained to the last."""
    from coordinator.demo import DemoOfficers

    officers = DemoOfficers(tmp_path)
    token = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    first = officers.create(1337, token)
    second = officers.for_chain(first, 31337, token)
    assert second.version == 2 and second.previous == first.policy_hash()
    assert (
        tuple(second.wallets[0].chains or ()) == (31337,)
        and second.assets["USDT"].contract_on(31337) == token
    )
    assert officers.for_chain(second, 31337, token) is second
    assert officers.for_chain(second, 1337, token).version == 3
