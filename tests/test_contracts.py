"""The shipped contract artifacts are what their sources compile to with the pinned solc-js, and
the token behaves as an ERC-20 on a real chain (eth-tester here; Hardhat in test_payouts.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_utils.address import to_checksum_address

from coordinator.contracts import CONTRACTS, artifact
from coordinator.contracts.build import HERE, artifact_text, compile_sources, main
from coordinator.evm_chain import InProcessChain, TransactionRejected, set_blocked
from signer.chains.erc20 import encode_transfer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
HOLDER = to_checksum_address("0x" + "5e" * 20)


def test_every_artifact_is_its_source_compiled_now() -> None:
    built = compile_sources()
    for name in CONTRACTS:
        shipped = (HERE / f"{name}.json").read_text("utf-8")
        assert artifact_text(built[name]) == shipped, f"{name}.json is stale"
        data = json.loads(shipped)
        assert data["compiler"].startswith("solc-js 0.8.28")
        assert artifact(name).runtime and artifact(name).bytecode.endswith(b"\x00\x33")


def test_the_check_mode_reports_a_stale_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check"]) == 0
    stale = json.loads((HERE / "Token.json").read_text())
    stale["bytecode"] = "00"
    monkeypatch.setattr("coordinator.contracts.build.HERE", tmp_path)
    for name in CONTRACTS:
        (tmp_path / f"{name}.sol").write_text((HERE / f"{name}.sol").read_text())
    (tmp_path / "Token.json").write_text(artifact_text(stale))
    assert main(["--check"]) == 1
    assert "stale artifacts: Token" in capsys.readouterr().out
    assert main(["--bogus"]) == 2


def test_the_token_moves_exact_amounts_and_blocks_with_a_reason() -> None:
    chain = InProcessChain()
    token = chain.deploy_token("Test USDT", "USDT", 6, 10**12)
    assert chain.token_balance(token, chain.faucet) == 10**12
    chain.call_from_faucet(token, encode_transfer(HOLDER, 1_234_567))
    assert chain.token_balance(token, HOLDER) == 1_234_567
    assert chain.token_balance(token, chain.faucet) == 10**12 - 1_234_567
    chain.call_from_faucet(token, set_blocked(HOLDER))
    # the faucet's node estimates gas first: the revert and its reason come back before mining
    with pytest.raises(TransactionRejected, match="Token: address blocked"):
        chain.call_from_faucet(token, encode_transfer(HOLDER, 1))
    with pytest.raises(TransactionRejected, match="Token: transfer to the zero address"):
        chain.call_from_faucet(token, encode_transfer("0x" + "00" * 20, 1))
    assert chain.token_balance(token, HOLDER) == 1_234_567


def test_the_selectors_written_down_are_the_keccak_of_their_signatures() -> None:
    from eth_utils.crypto import keccak

    from coordinator.evm_chain import SET_BLOCKED
    from coordinator.rpc import BALANCE_OF

    assert SET_BLOCKED == keccak(text="setBlocked(address,bool)")[:4]
    assert BALANCE_OF == keccak(text="balanceOf(address)")[:4]
