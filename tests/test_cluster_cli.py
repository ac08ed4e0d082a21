"""The operator CLI `tessera cluster …` (coordinator/cli.py): xpub serialization against the
BIP32 test vector, path parsing, `--json` on every command (errors as a JSON object too), exit
codes 0/1/2, a signer set below the threshold refused before any node is asked, the quarantine
mirror commands; and, on a running cluster, a wallet, an ETH transfer and a message signed from
the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from node_cluster import make_cluster, run
from protocol_fixtures import keys
from typer.testing import CliRunner

from coordinator.bip32 import base58check, serialize_xpub
from coordinator.cli import cluster_app, parse_path
from coordinator.console import app
from coordinator.store import CoordinatorStore, WalletRow
from signer.chains.evm import address_of, recover_sender
from signer.curve import Point
from signer.node import codec
from signer.protocol.hd import derive
from signer.protocol.sign import HashScheme, message_digest

runner = CliRunner()

# BIP32 test vector 1 (seed 000102…0f), chain m: the master key's chain code, compressed public
# key and extended public key, from the BIP.
BIP32_V1_CHAIN_CODE = "873dff81c02f525623fd1fe5167eac3a55a049de3d314bb42ee227ffed37d508"
BIP32_V1_PUBLIC_KEY = "0339a36013301597daef41fbe593a02cc513d0b55527ec2df1050e2e8ff49c85c2"
BIP32_V1_XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265T"
    "Mg7usUDFdp6W1EGMcet8"
)


def cli(*args: str) -> Any:
    return runner.invoke(app, ["cluster", *args])


def error_of(result: Any) -> dict[str, str]:
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"}, doc
    error: dict[str, str] = doc["error"]
    assert set(error) == {"code", "detail"}
    return error


# --- BIP32 serialization and paths ---------------------------------------------------------------
def test_xpub_is_bip32_test_vector_1() -> None:
    xpub = serialize_xpub(bytes.fromhex(BIP32_V1_PUBLIC_KEY), bytes.fromhex(BIP32_V1_CHAIN_CODE))
    assert xpub == BIP32_V1_XPUB


def test_base58check_known_values() -> None:
    # the genesis block's address: version 0 + HASH160, leading zero byte → "1"
    hash160 = bytes.fromhex("62e907b15cbf27d5425399ebf6f0fb50ebb88f18")
    assert base58check(b"\0" + hash160) == "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    assert base58check(b"\0\0").startswith("11")


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("m/0/5", (0, 5)),
        ("0/5", (0, 5)),
        ("m", ()),
        ("", ()),
        ("M/7", (7,)),
        ("m/2147483647", (2**31 - 1,)),
    ],
)
def test_paths_with_or_without_m(text: str, steps: tuple[int, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize("text", ["m/0'/5", "0h/5", "m/0/5H", "m/2147483648", "m/x", "m/-1"])
def test_hardened_and_malformed_paths_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_path(text)


def test_hardened_path_is_a_usage_error_with_a_clear_message(tmp_path: Path) -> None:
    result = cli("address", "--dir", str(tmp_path), "--wallet", "w", "--path", "m/0'/5", "--json")
    assert result.exit_code == 2
    error = error_of(result)
    assert error["code"] == "USAGE" and "hardened" in error["detail"]
    plain = cli("address", "--dir", str(tmp_path), "--wallet", "w", "--path", "m/0'/5")
    assert plain.exit_code == 2 and "non-hardened" in plain.output


# --- every command: --json, exit codes, help -----------------------------------------------------
def _commands() -> list[tuple[str, Any]]:
    group = typer.main.get_group(cluster_app)
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        found.append((name, command))
        for sub_name, sub in getattr(command, "commands", {}).items():
            found.append((f"{name} {sub_name}", sub))
    return found


def test_every_cluster_command_has_json() -> None:
    names = {name for name, _ in _commands()}
    assert {"up", "down", "status", "wallet", "address", "pools", "sign"} <= names
    assert {"quarantine", "quarantine clear", "metrics"} <= names
    for name, command in _commands():
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert "--json" in options, name


def test_base_port_help_explains_the_ports() -> None:
    result = cli("up", "--help")
    assert result.exit_code == 0
    assert "base + i" in " ".join(result.output.split())


def test_no_cluster_is_a_refusal_in_json(tmp_path: Path) -> None:
    for command in (["status"], ["quarantine"], ["metrics"], ["wallet", "--name", "w", "--show"]):
        result = cli(*command, "--dir", str(tmp_path / "none"), "--json")
        assert result.exit_code == 1, (command, result.output)
        assert "cluster up" in error_of(result)["detail"]


def test_sign_needs_a_transfer_or_a_message(tmp_path: Path) -> None:
    result = cli("sign", "--dir", str(tmp_path), "--wallet", "w", "--json")
    assert result.exit_code == 2 and "--to" in error_of(result)["detail"]


# --- an offline cluster directory: the store without running nodes -----------------------------
def _offline_cluster(root: Path) -> WalletRow:
    """cluster.json for three nodes on unreachable ports (any request to a node would fail as
    unavailable) and a 2-of-3 wallet from the protocol fixtures in the coordinator's store."""
    nodes = []
    for index in (1, 2, 3):
        directory = root / "nodes" / f"node-{index}"
        directory.mkdir(parents=True)
        (directory / "api-token").write_text("t" * 32)
        nodes.append(
            {
                "index": index,
                "node_id": f"node-{index}",
                "url": f"http://127.0.0.1:{index}",
                "directory": str(directory.relative_to(root)),
            }
        )
    doc = {"cluster_id": "00" * 32, "threshold": 2, "nodes": nodes}
    (root / "cluster.json").write_text(json.dumps(doc))
    public = keys(2, 3)[1].public_data()
    row = WalletRow(
        key_id="ab" * 16,
        name="fixture",
        threshold=2,
        epoch=0,
        key_public=codec.encode_key_public(public),
        aux_id="cd" * 32,
        created_at=time.time(),
    )
    CoordinatorStore(root / "coordinator.db").add_wallet(row)
    return row


def test_wallet_show_prints_address_key_and_xpub(tmp_path: Path) -> None:
    row = _offline_cluster(tmp_path)
    key = codec.decode_key_public(row.key_public)
    result = cli("wallet", "--dir", str(tmp_path), "--name", "fixture", "--show", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["address"] == address_of(key.public_key)
    assert doc["public_key"] == key.public_key.to_bytes().hex()
    assert doc["chain_code"] == key.chain_code.hex()
    assert doc["xpub"] == serialize_xpub(key.public_key.to_bytes(), key.chain_code)
    assert doc["xpub"].startswith("xpub") and doc["threshold"] == "2-of-3"
    missing = cli("wallet", "--dir", str(tmp_path), "--name", "nope", "--show", "--json")
    assert missing.exit_code == 1 and error_of(missing)["code"] == "NOT_FOUND"


def test_address_derives_the_child_with_or_without_m(tmp_path: Path) -> None:
    row = _offline_cluster(tmp_path)
    key = codec.decode_key_public(row.key_public)
    expected = address_of(derive(key.public_key, key.chain_code, (0, 5)).public_key)
    for path in ("m/0/5", "0/5"):
        result = cli(
            "address", "--dir", str(tmp_path), "--wallet", "fixture", "--path", path, "--json"
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["address"] == expected and doc["path"] == "m/0/5"
    root = cli("address", "--dir", str(tmp_path), "--wallet", "fixture", "--json")
    assert json.loads(root.stdout)["address"] == address_of(key.public_key)


def test_signers_below_threshold_refused_before_any_node_is_asked(tmp_path: Path) -> None:
    """`--signers 1` for a 2-of-3 wallet: refused as VALIDATION.  The nodes' ports are closed,
    so a request to any of them would have failed as unavailable (BUSY) instead."""
    _offline_cluster(tmp_path)
    base = ["--dir", str(tmp_path), "--wallet", "fixture", "--signers", "1"]
    for command in (
        ["pools", *base, "--depth", "1"],
        ["sign", *base, "--message", "0xdead"],
        ["sign", *base, "--to", "0x" + "11" * 20, "--value", "1"],
    ):
        result = cli(*command, "--json")
        assert result.exit_code == 1, (command, result.output)
        error = error_of(result)
        assert error["code"] == "VALIDATION" and "needs 2" in error["detail"], error
    plain = cli("pools", *base)
    assert plain.exit_code == 1 and "2-of-3" in plain.output


def test_a_node_down_is_a_refusal_with_its_code(tmp_path: Path) -> None:
    _offline_cluster(tmp_path)
    result = cli(
        "sign", "--dir", str(tmp_path), "--wallet", "fixture", "--message", "0xdead", "--json"
    )
    assert result.exit_code == 1
    assert error_of(result)["code"] == "BUSY"


def test_quarantine_list_and_clear(tmp_path: Path) -> None:
    _offline_cluster(tmp_path)
    store = CoordinatorStore(tmp_path / "coordinator.db")
    row = store.quarantine(
        "signer_set", (1, 2), "ab" * 16, "presign", "echo mismatch, nobody named"
    )
    listed = cli("quarantine", "--dir", str(tmp_path), "--json")
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.stdout)
    assert entry["id"] == row.id and entry["kind"] == "signer_set"
    table = cli("quarantine", "--dir", str(tmp_path))
    assert table.exit_code == 0 and "signer_set" in table.output
    clear = ["quarantine", "clear", str(row.id), "--dir", str(tmp_path), "--reason", "node fixed"]
    cleared = cli(*clear, "--json")
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.stdout)["cleared_reason"] == "node fixed"
    assert json.loads(cli("quarantine", "--dir", str(tmp_path), "--json").stdout) == []
    assert len(json.loads(cli("quarantine", "--all", "--dir", str(tmp_path), "--json").stdout)) == 1
    again = cli(*clear, "--json")
    assert again.exit_code == 1 and error_of(again)["code"] == "BAD_REQUEST"


def test_metrics_command_reports_nodes_down_and_pools(tmp_path: Path) -> None:
    _offline_cluster(tmp_path)
    result = cli("metrics", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert 'tessera_coordinator_node_up{node="1"} 0.0' in result.output
    assert 'tessera_coordinator_presignatures_available{wallet="fixture"} 0.0' in result.output
    doc = json.loads(cli("metrics", "--dir", str(tmp_path), "--json").stdout)
    assert "tessera_coordinator_signatures_issued_total" in doc["metrics"]


# --- on a running cluster ------------------------------------------------------------------------
def test_wallet_transfer_and_message_signed_from_the_cli(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    run(cluster.up())
    root = str(cluster.root)
    try:
        created = cli("wallet", "--dir", root, "--name", "ops", "--json")
        assert created.exit_code == 0, created.output
        wallet = json.loads(created.stdout)
        assert wallet["xpub"].startswith("xpub")

        to = "0x" + "22" * 20
        transfer = cli(
            "sign", "--dir", root, "--wallet", "ops", "--to", to, "--value", "1000",
            "--nonce", "3", "--chain-id", "11155111", "--signers", "1,3", "--json",
        )  # fmt: skip
        assert transfer.exit_code == 0, transfer.output
        doc = json.loads(transfer.stdout)
        raw = bytes.fromhex(doc["signed_transaction"][2:])
        assert recover_sender(raw) == wallet["address"] == doc["from"] == doc["recovered"]
        assert doc["signers"] == [1, 3]

        message = cli(
            "sign", "--dir", root, "--wallet", "ops", "--message", "0xc0ffee",
            "--path", "m/0/5", "--json",
        )  # fmt: skip
        assert message.exit_code == 0, message.output
        sig = json.loads(message.stdout)
        child = json.loads(
            cli("address", "--dir", root, "--wallet", "ops", "--path", "0/5", "--json").stdout
        )
        assert sig["public_key"] == child["public_key"]
        assert (
            sig["digest"]
            == "0x" + message_digest(bytes.fromhex("c0ffee"), HashScheme.KECCAK256).hex()
        )
        from eth_keys.datatypes import Signature as EthSignature

        recovered = EthSignature(vrs=(sig["recovery_id"], int(sig["r"], 16), int(sig["s"], 16)))
        public = recovered.recover_public_key_from_msg_hash(bytes.fromhex(sig["digest"][2:]))
        assert (
            Point.from_bytes(public.to_compressed_bytes()).to_bytes().hex() == child["public_key"]
        )
    finally:
        cluster.down()
