"""`tessera cluster up|status|down` and `tessera node init|run|pin` through typer's runner, with
real node processes and SoftHSM2 tokens."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from node_cluster import make_cluster, run
from typer.testing import CliRunner

from coordinator.console import app
from coordinator.ports import free_port_block
from signer.protocol.sign import HashScheme

runner = CliRunner()


def test_cluster_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    base = str(free_port_block(2))
    up = runner.invoke(
        app,
        [
            "cluster",
            "up",
            "--dir",
            str(root),
            "--nodes",
            "2",
            "--threshold",
            "2",
            "--base-port",
            base,
        ],
    )
    assert up.exit_code == 0, up.output
    try:
        status = runner.invoke(app, ["cluster", "status", "--dir", str(root), "--json"])
        assert status.exit_code == 0, status.output
        doc = json.loads(status.output)
        assert [n["state"] for n in doc["nodes"]] == ["pinned", "pinned"]
        assert doc["wallets"] == []
        again = runner.invoke(app, ["cluster", "up", "--dir", str(root)])  # idempotent
        assert again.exit_code == 0, again.output
        _coordinator_quarantine_mirror_is_listed_and_cleared(root)
    finally:
        down = runner.invoke(app, ["cluster", "down", "--dir", str(root)])
        assert down.exit_code == 0, down.output
    status = runner.invoke(app, ["cluster", "status", "--dir", str(root), "--json"])
    assert all(n["state"].startswith("down") for n in json.loads(status.output)["nodes"])


def test_node_init_refuses_an_existing_node_and_pin_refuses_changed_cards(tmp_path: Path) -> None:
    directory = tmp_path / "node-1"
    init = ["node", "init", "--dir", str(directory), "--node-id", "node-1", "--index", "1"]
    first = runner.invoke(app, [*init, "--port", "20001"])
    assert first.exit_code == 0, first.output
    card = json.loads(first.output)
    assert card["index"] == 1 and card["identity"]["algorithm"] in ("ed25519", "p256")
    second = runner.invoke(app, [*init, "--port", "20002"])
    assert second.exit_code == 1 and "already a node directory" in second.output
    roster = tmp_path / "roster.json"
    roster.write_text(json.dumps({"cluster_id": "ab" * 32, "cards": [card]}))
    pinned = runner.invoke(app, ["node", "pin", "--dir", str(directory), "--roster", str(roster)])
    assert pinned.exit_code == 0, pinned.output
    roster.write_text(json.dumps({"cluster_id": "cd" * 32, "cards": [card]}))
    other = runner.invoke(app, ["node", "pin", "--dir", str(directory), "--roster", str(roster)])
    assert other.exit_code == 1 and "another cluster" in other.output
    forged = {**card, "url": "http://elsewhere:1"}  # no longer self-signed
    roster.write_text(json.dumps({"cluster_id": "ab" * 32, "cards": [forged]}))
    bad = runner.invoke(app, ["node", "pin", "--dir", str(directory), "--roster", str(roster)])
    assert bad.exit_code == 1 and "SIGNATURE" in bad.output


def test_node_run_refuses_a_directory_that_is_not_a_node(tmp_path: Path) -> None:
    result = runner.invoke(app, ["node", "run", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "node refuses to start" in result.output and "tessera node init" in result.output


def test_every_command_has_help() -> None:
    for command in (
        ["node", "--help"],
        ["node", "init", "--help"],
        ["node", "run", "--help"],
        ["node", "pin", "--help"],
        ["node", "quarantine", "list", "--help"],
        ["node", "quarantine", "clear", "--help"],
        ["cluster", "--help"],
        ["cluster", "quarantine", "--help"],
        ["cluster", "wallet", "--help"],
        ["cluster", "pools", "--help"],
        ["cluster", "quarantine", "clear", "--help"],
        ["cluster", "up", "--help"],
        ["cluster", "status", "--help"],
        ["cluster", "down", "--help"],
        ["demo", "--help"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_node_refuses_to_start_with_a_wrong_pin_or_a_missing_token(tmp_path: Path) -> None:
    directory = tmp_path / "node-1"
    init = ["node", "init", "--dir", str(directory), "--node-id", "node-1", "--index", "1"]
    assert runner.invoke(app, [*init, "--port", "20011"]).exit_code == 0
    pin = directory / "hsm-pin"
    real = pin.read_text()
    pin.write_text("Wrong-Pin-0000000\n")
    wrong = runner.invoke(app, ["node", "run", "--dir", str(directory)])
    assert wrong.exit_code == 1 and "node refuses to start" in wrong.output
    assert "Wrong-Pin" not in wrong.output and real.strip() not in wrong.output
    assert "PIN" in wrong.output or "login" in wrong.output.lower()
    pin.write_text(real)
    shutil.rmtree(directory / "token" / "tokens")  # the token vanishes
    (directory / "token" / "tokens").mkdir()
    missing = runner.invoke(app, ["node", "run", "--dir", str(directory)])
    assert missing.exit_code == 1 and "node refuses to start" in missing.output


def test_node_quarantine_list_and_clear_are_local_operator_commands(tmp_path: Path) -> None:
    """The entry a failed session leaves (written here as the node would) is listed, cleared
    with a reason that stays on record, and cannot be cleared twice or without a reason."""
    from signer.node.runtime import NodeConfig
    from signer.node.store import NodeStore, QuarantineRow

    directory = tmp_path / "node-1"
    init = ["node", "init", "--dir", str(directory), "--node-id", "node-1", "--index", "1"]
    assert runner.invoke(app, [*init, "--port", "20003"]).exit_code == 0
    store = NodeStore(NodeConfig.load(directory).db_path)
    store.quarantine(
        QuarantineRow(
            kind="party",
            parties="3",
            key_id="ab" * 16,
            protocol="presign_identify/v1",
            session="cd" * 32,
            code="EQUATION",
            detail="Πdec of party 3 rejected",
            created_at=1.0,
        )
    )
    store.close()
    listed = runner.invoke(app, ["node", "quarantine", "list", "--dir", str(directory)])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert entry["kind"] == "party" and entry["parties"] == [3] and entry["cleared_at"] is None
    clear = ["node", "quarantine", "clear", "--dir", str(directory), "--entry", str(entry["id"])]
    no_reason = runner.invoke(app, clear)
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    cleared = runner.invoke(app, [*clear, "--reason", "node 3 re-provisioned"])
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.output)["cleared_reason"] == "node 3 re-provisioned"
    again = runner.invoke(app, [*clear, "--reason", "twice"])
    assert again.exit_code == 1 and "already cleared" in again.output
    empty = runner.invoke(app, ["node", "quarantine", "list", "--dir", str(directory)])
    assert json.loads(empty.output) == []
    listing = ["node", "quarantine", "list", "--dir", str(directory)]
    everything = runner.invoke(app, [*listing, "--all"])
    assert [e["cleared_reason"] for e in json.loads(everything.output)] == ["node 3 re-provisioned"]
    missing = runner.invoke(app, ["node", "quarantine", "list", "--dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "error" in missing.output


def _coordinator_quarantine_mirror_is_listed_and_cleared(root: Path) -> None:
    from coordinator.store import CoordinatorStore

    store = CoordinatorStore(root / "coordinator.db")
    row = store.quarantine("signer_set", (1, 2), "ab" * 16, "presign", "echo mismatch, no culprit")
    listed = runner.invoke(app, ["cluster", "quarantine", "--dir", str(root), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(e["kind"], e["parties"]) for e in json.loads(listed.output)] == [
        ("signer_set", [1, 2])
    ]
    clear = ["cluster", "quarantine", "clear", str(row.id), "--dir", str(root), "--json"]
    cleared = runner.invoke(app, [*clear, "--reason", "investigated"])
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.output)["cleared_reason"] == "investigated"
    again = runner.invoke(app, [*clear, "--reason", "twice"])
    assert again.exit_code == 1 and "already cleared" in again.output
    assert json.loads(again.output)["error"]["code"]
    empty = runner.invoke(app, ["cluster", "quarantine", "--dir", str(root), "--json"])
    assert json.loads(empty.output) == []


def test_cluster_wallet_and_pools_commands(tmp_path: Path) -> None:
    """An operator creates a wallet and fills a presignature pool on a running cluster
    (nodes with fixture prime pools: the test-only speed-up of node_cluster.make_cluster)."""
    cluster = make_cluster(tmp_path)
    run(cluster.up())
    root = str(cluster.root)
    try:
        created = runner.invoke(app, ["cluster", "wallet", "--dir", root, "--name", "ops"])
        assert created.exit_code == 0, created.output
        doc = json.loads(created.output)
        assert doc["threshold"] == "2-of-3" and doc["address"].startswith("0x")
        again = runner.invoke(app, ["cluster", "wallet", "--dir", root, "--name", "ops"])
        assert again.exit_code == 1 and "exists" in again.output
        pools = ["cluster", "pools", "--dir", root, "--wallet", "ops", "--signers", "1,3"]
        filled = runner.invoke(app, [*pools, "--depth", "2"])
        assert filled.exit_code == 0, filled.output
        assert json.loads(filled.output)["made"] == 2
        topped = runner.invoke(app, [*pools, "--depth", "2"])
        assert json.loads(topped.output)["made"] == 0  # already at depth
        status = runner.invoke(app, ["cluster", "status", "--dir", root, "--json"])
        (wallet,) = json.loads(status.output)["wallets"]
        assert wallet["name"] == "ops" and wallet["pools"] == {"1,3 m/": 2}
        bad = runner.invoke(app, [*pools[:-1], "1,x"])
        assert bad.exit_code == 2 and "--signers" in bad.output
        unknown = runner.invoke(app, [*pools[:5], "nope", *pools[6:]])
        assert unknown.exit_code == 1 and "nope" in unknown.output
        _keeper_refills_until_interrupted(cluster, pools)
    finally:
        cluster.down()


def _keeper_refills_until_interrupted(cluster: Any, pools: list[str]) -> None:
    """`pools --keep` as its own process: a signature takes a presignature from the pool, the
    keeper puts one back, and Ctrl-C (SIGINT) ends it cleanly."""
    # Ctrl-C as at a terminal: a shell without job control starts background jobs with SIGINT
    # ignored, and a child inherits that (Python then installs no KeyboardInterrupt handler and
    # asyncio.run none of its own), so the keeper restores the default before it starts.
    start = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from coordinator.console import app; app()"
    )
    command = [sys.executable, "-c", start, *pools]
    keeper = subprocess.Popen(
        [*command, "--depth", "2", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert keeper.stdout is not None
        assert "keeping" in keeper.stdout.readline()

        async def sign_and_wait() -> int:
            coordinator = cluster.coordinator()
            try:
                await coordinator.sign("ops", b"take one", HashScheme.KECCAK256, preferred=(1, 3))
                wallet = coordinator.store.wallet("ops")
                for _ in range(600):  # the keeper refills within a presign or two
                    depth = coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "1,3", "")
                    if depth == 2:
                        return depth
                    await asyncio.sleep(0.1)
                return depth
            finally:
                await coordinator.aclose()

        assert run(sign_and_wait()) == 2
        keeper.send_signal(signal.SIGINT)
        assert keeper.wait(timeout=60) == 0
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()


# --- --json everywhere, exit codes 0 done / 1 refused / 2 usage ------------------------------
def _json_error(result: Any, exit_code: int) -> dict[str, str]:
    assert result.exit_code == exit_code, result.output
    doc = json.loads(result.stdout)  # the only thing on stdout
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "detail"}
    return dict(doc["error"])


def test_node_commands_report_errors_as_json(tmp_path: Path) -> None:
    refused = _json_error(runner.invoke(app, ["node", "run", "--dir", str(tmp_path), "--json"]), 1)
    assert refused["code"] == "NODE_SETUP" and "node refuses to start" in refused["detail"]
    missing = tmp_path / "nowhere"
    for command in (
        ["node", "quarantine", "list", "--dir", str(missing)],
        ["node", "quarantine", "clear", "--dir", str(missing), "--entry", "1", "--reason", "r"],
        ["node", "key", "list", "--dir", str(missing), "--key", "ab"],
        ["node", "key", "discard-pending", "--dir", str(missing), "--key", "ab", "--reason", "r"],
    ):
        error = _json_error(runner.invoke(app, [*command, "--json"]), 1)
        assert "not a node directory" in error["detail"], command
    roster = _json_error(
        runner.invoke(
            app,
            ["node", "pin", "--dir", str(missing), "--roster", str(tmp_path / "r.json"), "--json"],
        ),
        1,
    )
    assert roster["code"] == "ROSTER_UNREADABLE" and "r.json" in roster["detail"]
    usage = _json_error(runner.invoke(app, ["node", "init", "--json"]), 2)
    assert usage["code"] == "USAGE" and "--dir" in usage["detail"]
    bad_index = runner.invoke(app, ["node", "init", "--dir", str(missing), "--index", "0"])
    assert bad_index.exit_code == 2  # without --json: click's usage message, exit 2


def test_node_init_and_quarantine_list_succeed_with_json(tmp_path: Path) -> None:
    directory = tmp_path / "node-1"
    init = ["node", "init", "--dir", str(directory), "--node-id", "node-1", "--index", "1"]
    created = runner.invoke(app, [*init, "--port", "20021", "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["index"] == 1
    again = _json_error(runner.invoke(app, [*init, "--port", "20022", "--json"]), 1)
    assert "already a node directory" in again["detail"]
    listed = runner.invoke(app, ["node", "quarantine", "list", "--dir", str(directory), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    wrong_entry = ["node", "quarantine", "clear", "--dir", str(directory), "--entry", "9"]
    unknown = _json_error(runner.invoke(app, [*wrong_entry, "--reason", "r", "--json"]), 1)
    assert unknown["code"] and unknown["detail"]


def test_primes_count_of_a_missing_pool_is_an_error_naming_the_file(tmp_path: Path) -> None:
    typo = tmp_path / "typo.json"
    plain = runner.invoke(app, ["primes", "count", "--pool", str(typo)])
    assert plain.exit_code == 1 and "typo.json" in plain.output
    assert plain.stdout.strip() != "0"
    error = _json_error(runner.invoke(app, ["primes", "count", "--pool", str(typo), "--json"]), 1)
    assert error["code"] == "POOL_NOT_FOUND" and "typo.json" in error["detail"]
    assert not typo.exists()
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"bits": 1536, "safe_primes": []}))
    counted = runner.invoke(app, ["primes", "count", "--pool", str(pool), "--json"])
    assert counted.exit_code == 0 and json.loads(counted.stdout) == {"pool": str(pool), "count": 0}
    pool.write_text("{")
    broken = _json_error(runner.invoke(app, ["primes", "count", "--pool", str(pool), "--json"]), 1)
    assert "not JSON" in broken["detail"]
    # generate refuses an unreadable pool before spending minutes on primes
    gen = ["primes", "generate", "--pool", str(pool), "--count", "1", "--json"]
    assert "not JSON" in _json_error(runner.invoke(app, gen), 1)["detail"]
    usage = _json_error(runner.invoke(app, ["primes", "count", "--json"]), 2)
    assert usage["code"] == "USAGE" and "--pool" in usage["detail"]
