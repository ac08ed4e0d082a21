"""The chain registry (coordinator/registry.py): the shipped mainnets load, and every kind of
wrong file is refused with the field and the reason, never the value written there."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from coordinator.console import app
from coordinator.registry import (
    MAINNETS,
    ChainRegistry,
    RegistryError,
    load_registry,
    parse_registry,
)

USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


def local_chain(**changes: Any) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "chain_id": 31337,
        "name": "Hardhat",
        "native": {"symbol": "ETH", "decimals": 18},
        "rpc_urls": ["http://127.0.0.1:8545"],
        "confirmations": 1,
        "fee_model": "eip1559",
        "fee_ceiling_wei": 10**11,
        "tokens": {"USDT": {"address": USDT, "decimals": 6}},
    }
    chain.update(changes)
    return chain


def problems_of(document: object) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        parse_registry(document, "test")
    return caught.value.problems


def test_shipped_mainnets_load_with_real_chain_ids_and_issuer_contracts() -> None:
    registry = load_registry()
    assert registry.chain_ids() == (1, 137, 56, 42161, 8453)
    ethereum = registry.chain(1)
    assert ethereum.native.symbol == "ETH" and ethereum.fee_model == "eip1559"
    assert ethereum.tokens["USDT"].address == USDT and ethereum.tokens["USDT"].decimals == 6
    assert ethereum.token_at(USDT.lower()) == ("USDT", ethereum.tokens["USDT"])
    # Binance-Peg stablecoins have 18 decimals: the amount of a transfer depends on it.
    assert registry.chain(56).tokens["USDT"].decimals == 18
    assert registry.chain(56).fee_model == "legacy"
    assert "USDT" not in registry.chain(8453).tokens  # Tether issues none on Base
    assert MAINNETS.name == "mainnets.toml"


def test_a_local_chain_parses() -> None:
    registry = parse_registry({"chains": [local_chain()]})
    assert isinstance(registry, ChainRegistry)
    assert registry.chain(31337).token("USDT") is not None
    assert registry.chain(31337).token("DAI") is None
    assert registry.chain(31337).token_at("0x" + "11" * 20) is None


def test_unknown_chain_names_the_known_ones() -> None:
    registry = parse_registry({"chains": [local_chain()]})
    with pytest.raises(RegistryError, match=r"no chain 1 \(known: 31337\)"):
        registry.chain(1)


@pytest.mark.parametrize(
    ("change", "where", "why"),
    [
        ({"chain_id": 0}, "chains[0].chain_id", "chain id"),
        ({"chain_id": "1"}, "chains[0].chain_id", "chain id"),
        ({"name": ""}, "chains[0].name", "at least 1"),
        ({"rpc_urls": []}, "chains[0].rpc_urls", "at least 1"),
        ({"rpc_urls": ["ftp://node"]}, "chains[0].rpc_urls[0]", "pattern"),
        ({"confirmations": -1}, "chains[0].confirmations", "greater than or equal to 0"),
        ({"confirmations": 1.5}, "chains[0].confirmations", "integer"),
        ({"fee_model": "eip4844"}, "chains[0].fee_model", "'eip1559' or 'legacy'"),
        ({"fee_ceiling_wei": 0}, "chains[0].fee_ceiling_wei", "greater than 0"),
        ({"fee_ceiling_wei": 1.0e11}, "chains[0].fee_ceiling_wei", "integer"),
        ({"native": {"symbol": "ETH"}}, "chains[0].native.decimals", "required"),
        ({"gas_station": "x"}, "chains[0].gas_station", "not permitted"),
    ],
)
def test_a_wrong_field_is_named_with_its_reason(
    change: dict[str, Any], where: str, why: str
) -> None:
    (problem,) = problems_of({"chains": [local_chain(**change)]})
    assert problem.startswith(f"{where}: ") and why in problem


def test_a_mistyped_contract_address_is_refused_by_its_checksum() -> None:
    typo = USDT[:-1] + "c"  # one letter's case changed
    (problem,) = problems_of(
        {"chains": [local_chain(tokens={"USDT": {"address": typo, "decimals": 6}})]}
    )
    assert problem.startswith("chains[0].tokens.USDT.address: ") and "EIP-55" in problem
    assert typo not in problem  # the value is never echoed
    (problem,) = problems_of(
        {"chains": [local_chain(tokens={"USDT": {"address": USDT.lower(), "decimals": 6}})]}
    )
    assert "no EIP-55 checksum" in problem


def test_duplicates_are_refused() -> None:
    two = [local_chain(), local_chain(name="Other")]
    assert problems_of({"chains": two}) == ["registry: chain id 31337 appears more than once"]
    named = [local_chain(), local_chain(chain_id=31338, name="hardhat")]
    assert problems_of({"chains": named}) == ["registry: chain name hardhat appears more than once"]
    same = {"USDT": {"address": USDT, "decimals": 6}, "USDX": {"address": USDT, "decimals": 6}}
    (problem,) = problems_of({"chains": [local_chain(tokens=same)]})
    assert "tokens USDT and USDX have the same contract address" in problem
    native = {"ETH": {"address": USDT, "decimals": 18}}
    (problem,) = problems_of({"chains": [local_chain(tokens=native)]})
    assert "token ETH has the native coin's symbol" in problem


def test_every_problem_of_a_file_is_listed() -> None:
    chain = local_chain(chain_id=-5, confirmations="many")
    problems = problems_of({"chains": [chain, copy.deepcopy(chain)]})
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == {
        "chains[0].chain_id",
        "chains[0].confirmations",
        "chains[1].chain_id",
        "chains[1].confirmations",
    }


@pytest.mark.parametrize("document", [None, [], {"chains": []}, {"chains": "x"}, {}])
def test_not_a_registry(document: object) -> None:
    assert problems_of(document)


def test_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot be read"):
        load_registry(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RegistryError, match="is not UTF-8 text"):
        load_registry(binary)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[chains]]\nchain_id = = 1\nsecret = 'do-not-echo'\n")
    with pytest.raises(RegistryError, match=r"is not TOML \(.*line 2") as caught:
        load_registry(broken)
    assert "do-not-echo" not in str(caught.value)
    copied = tmp_path / "chains.toml"
    copied.write_text(MAINNETS.read_text().replace("confirmations = 12", "confirmations = 64"))
    assert load_registry(copied).chain(1).confirmations == 64


# --- tessera chain check -------------------------------------------------------------------------
runner = CliRunner()


def test_check_lists_the_shipped_mainnets() -> None:
    result = runner.invoke(app, ["chain", "check"])
    assert result.exit_code == 0, result.output
    assert "Ethereum" in result.output and "BNB Smart" in result.output
    result = runner.invoke(app, ["chain", "check", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert [c["chain_id"] for c in doc["chains"]] == [1, 137, 56, 42161, 8453]


def test_check_refuses_a_wrong_file_with_exit_1(tmp_path: Path) -> None:
    wrong = tmp_path / "chains.toml"
    wrong.write_text(MAINNETS.read_text().replace("confirmations = 12", "confirmations = -12"))
    result = runner.invoke(app, ["chain", "check", "--registry", str(wrong), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.output)["error"]
    assert error["code"] == "VALIDATION"
    assert "chains[0].confirmations: Input should be greater than or equal to 0" in error["detail"]
    result = runner.invoke(app, ["chain", "check", "--registry", str(tmp_path)])
    assert result.exit_code == 2  # a directory is a usage error (typer: dir_okay=False)
