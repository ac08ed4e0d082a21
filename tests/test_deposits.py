"""Deposit addresses and the deposit watcher (coordinator/deposits.py, docs/chains.md
"Deposits"): 1,000 addresses in one call with no MPC round, each checked against a child key
derived independently from the secret; deposits of ETH and of two ERC-20 tokens found on a real
Hardhat node and on eth-tester, credited once after their confirmations across a restart, and
a reorg (Hardhat evm_snapshot / evm_revert) that drops a deposit before it is credited."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_keys import keys as eth_keys

from coordinator.deposits import (
    DEPOSIT_BRANCH,
    MAX_BATCH,
    DepositAddresses,
    DepositError,
    DepositWatcher,
)
from coordinator.evm_chain import InProcessChain, LocalChain
from coordinator.hardhat import HardhatNode
from coordinator.registry import Chain
from coordinator.store import CoordinatorStore, WalletRow
from signer.chains.erc20 import encode_transfer
from signer.curve import Point, Q
from signer.node import codec
from signer.protocol.keygen import KeyPublic

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SECRET = secrets.randbelow(Q - 1) + 1
CHAIN_CODE = secrets.token_bytes(32)


def child_secret(path: tuple[int, ...]) -> int:
    """BIP32 private derivation (CKDpriv, non-hardened): the secret side of the child whose
    public key the coordinator derives from the public key alone."""
    secret, chain = SECRET, CHAIN_CODE
    for index in path:
        public = eth_keys.PrivateKey(secret.to_bytes(32, "big")).public_key.to_compressed_bytes()
        digest = hmac.new(chain, public + index.to_bytes(4, "big"), hashlib.sha512).digest()
        secret = (secret + int.from_bytes(digest[:32], "big")) % Q
        chain = digest[32:]
    return secret


def store_with_wallet(path: Path) -> CoordinatorStore:
    store = CoordinatorStore(path)
    key = KeyPublic(
        key_id=b"k" * 16,
        epoch=0,
        threshold=2,
        parties=(1, 2, 3),
        # f(x) = SECRET + 7x: the shares of a 2-of-3 key whose secret is SECRET
        public_shares=tuple(Point.base_mul((SECRET + 7 * j) % Q) for j in (1, 2, 3)),
        public_key=Point.base_mul(SECRET),
        chain_code=CHAIN_CODE,
    )
    store.add_wallet(
        WalletRow(
            key_id=key.key_id.hex(),
            name="hot",
            threshold=2,
            epoch=0,
            key_public=codec.encode_key_public(key),
            aux_id="aux",
            created_at=time.time(),
            policy_wallet="hot",
        )
    )
    return store


def test_a_thousand_deposit_addresses_in_one_call_each_its_customers(tmp_path: Path) -> None:
    store = store_with_wallet(tmp_path / "c.db")
    book = DepositAddresses(store)
    refs = [f"customer-{i}" for i in range(MAX_BATCH)]
    rows = book.assign("hot", refs)
    assert [r.customer_ref for r in rows] == refs and [r.child for r in rows] == list(range(1000))
    assert len({r.address for r in rows}) == MAX_BATCH
    for row in rows[::97]:  # against the secret side, derived independently
        private = eth_keys.PrivateKey(child_secret((DEPOSIT_BRANCH, row.child)).to_bytes(32, "big"))
        assert private.public_key.to_checksum_address() == row.address
    # the same customers again: the same addresses, nothing new; a new one gets the next index
    again = book.assign("hot", ["customer-5", "newcomer", "customer-999"])
    assert again[0].address == rows[5].address and again[2].address == rows[999].address
    assert again[1].child == MAX_BATCH
    assert book.path_of(again[1].address) == ("hot", (DEPOSIT_BRANCH, MAX_BATCH))
    store.close()


@pytest.mark.parametrize(
    ("refs", "says"),
    [
        ([], "1 to 1000"),
        ([f"c{i}" for i in range(1001)], "1 to 1000"),
        (["a", "a"], "twice"),
        (["ok", "has space"], "#2 is not"),
        (["ok", "", "x" * 129], "#2 (and 1 more)"),
    ],
)
def test_bad_batches_are_refused_and_store_nothing(
    tmp_path: Path, refs: list[str], says: str
) -> None:
    store = store_with_wallet(tmp_path / "c.db")
    book = DepositAddresses(store)
    with pytest.raises(DepositError, match=says.replace("(", r"\(").replace(")", r"\)")):
        book.assign("hot", refs)
    assert book.addresses() == set()
    store.close()


# --- the watcher, on real chains ---------------------------------------------------------------


def chain_entry(local: LocalChain, tokens: dict[str, tuple[str, int]], confirmations: int) -> Chain:
    return Chain.model_validate(
        {
            "chain_id": local.chain_id,
            "name": "local",
            "native": {"symbol": "ETH", "decimals": 18},
            "rpc_urls": ["http://127.0.0.1:9"],
            "confirmations": confirmations,
            "fee_model": "eip1559",
            "fee_ceiling_wei": 10**12,
            "tokens": {s: {"address": a, "decimals": d} for s, (a, d) in tokens.items()},
        }
    )


@pytest.fixture(scope="module")
def hardhat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    node = HardhatNode(31337).start(log=tmp_path_factory.mktemp("hh") / "hardhat.log")
    try:
        yield LocalChain.connect(node.url)
    finally:
        node.stop()


def scan(watcher: DepositWatcher) -> object:
    async def go() -> object:
        try:
            return await watcher.scan()
        finally:
            await watcher.rpc.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("which", ["hardhat", "eth-tester"])
def test_deposits_are_credited_once_after_their_confirmations(
    tmp_path: Path, hardhat: LocalChain, which: str
) -> None:
    local: LocalChain = hardhat if which == "hardhat" else InProcessChain()
    usdt = local.deploy_token("USDT", "USDT", 6, 10**15)
    dai = local.deploy_token("DAI", "DAI", 18, 10**30)
    entry = chain_entry(local, {"USDT": (usdt, 6), "DAI": (dai, 18)}, confirmations=5)
    store = store_with_wallet(tmp_path / "c.db")
    alice, bob = (r.address for r in DepositAddresses(store).assign("hot", ["alice", "bob"]))

    def watcher() -> DepositWatcher:  # a new one each time: as after a restart
        return DepositWatcher(store, entry, local.rpc(), start_block=local.block_number() + 1)

    scan(watcher())  # the cursor starts here
    local.fund(alice, 10**18 + 1)
    local.call_from_faucet(usdt, encode_transfer(bob, 12_345_678))
    local.call_from_faucet(dai, encode_transfer(alice, 10**18 // 3))
    local.call_from_faucet(usdt, encode_transfer("0x" + "77" * 20, 5))  # not ours
    first = scan(watcher())
    assert len(first.seen) == 3 and first.credited == ()  # type: ignore[attr-defined]
    amounts = {(d.address, d.asset): d.amount for d in first.seen}  # type: ignore[attr-defined]
    assert amounts == {
        (alice, "ETH"): "1.000000000000000001",
        (bob, "USDT"): "12.345678",
        (alice, "DAI"): "0.333333333333333333",
    }
    # four blocks so far (the last not ours); three more: the last deposit has its five
    for _ in range(3):
        local.fund("0x" + "66" * 20, 1)
    second = scan(watcher())
    assert {d.asset for d in second.credited} == {"ETH", "USDT", "DAI"}  # type: ignore[attr-defined]
    third = scan(watcher())  # a restart later: nothing credited twice
    assert third.seen == () and third.credited == ()  # type: ignore[attr-defined]
    rows = watcher().deposits()
    assert len(rows) == 3 and all(r.state == "credited" for r in rows)
    store.close()


def test_a_reorg_drops_a_deposit_before_it_is_credited_and_the_rescan_finds_its_replacement(
    tmp_path: Path, hardhat: LocalChain
) -> None:
    local = hardhat
    entry = chain_entry(local, {}, confirmations=2)
    store = store_with_wallet(tmp_path / "c.db")
    (carol,) = (r.address for r in DepositAddresses(store).assign("hot", ["carol"]))

    def watcher() -> DepositWatcher:
        return DepositWatcher(store, entry, local.rpc(), start_block=local.block_number() + 1)

    scan(watcher())
    snapshot = local.request("evm_snapshot")
    local.fund(carol, 7 * 10**17)
    seen = scan(watcher())
    assert [d.amount for d in seen.seen] == ["0.7"]  # type: ignore[attr-defined]
    assert local.request("evm_revert", snapshot) is True
    local.fund("0x" + "66" * 20, 1)  # another block at the same height: the chain moved on
    local.fund(carol, 2 * 10**17)  # and carol's deposit on this branch is another one
    after = scan(watcher())
    assert after.reorged_from is not None  # type: ignore[attr-defined]
    local.fund("0x" + "66" * 20, 1)
    scan(watcher())
    states = {d.amount: d.state for d in watcher().deposits()}
    assert states == {"0.7": "dropped", "0.2": "credited"}
    store.close()


# --- the JSON-RPC client's own checks, on the same Hardhat node --------------------------------


def test_the_rpc_client_moves_past_an_unreachable_url_and_refuses_another_chain(
    hardhat: LocalChain,
) -> None:
    from coordinator.rpc import ChainRpc, ChainUnavailable, WrongChain

    url = hardhat.rpc()._names[0]  # host:port of the node
    dead = "http://127.0.0.1:9/secret-key-path"

    async def go() -> None:
        both = ChainRpc.connect(31337, [dead, f"http://{url}"], timeout=2)
        other = ChainRpc.connect(1, [f"http://{url}"], timeout=2)
        none = ChainRpc.connect(31337, [dead], timeout=2)
        try:
            await both.check_chain_id()  # the first URL refuses the connection: the second
            assert await both.block_number() >= 0
            with pytest.raises(WrongChain) as wrong:
                await other.check_chain_id()
            assert wrong.value.code.value == "CHAIN_MISMATCH" and wrong.value.found == 31337
            with pytest.raises(ChainUnavailable) as down:
                await none.block_number()
            assert down.value.code.value == "CHAIN_UNAVAILABLE"
            assert "127.0.0.1:9" in str(down.value) and "secret-key-path" not in str(down.value)
        finally:
            for rpc in (both, other, none):
                await rpc.aclose()

    asyncio.run(go())
