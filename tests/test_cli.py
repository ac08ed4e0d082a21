"""The `tessera` command line: demo and prime-pool commands."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import fixture_primes
from typer.testing import CliRunner

from coordinator.console import app
from signer.primes import PrimePool

runner = CliRunner()


def _pool(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "pool.json"
    PrimePool(path).add(fixture_primes()[-count:])
    return path


def test_wallet_demo_signs_for_its_deposit_address(tmp_path: Path) -> None:
    from eth_keys.datatypes import Signature as EthSignature

    pool = _pool(tmp_path, 6)
    result = runner.invoke(app, ["demo", "--in-process", "--pool", str(pool), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    names = [s["step"] for s in doc["steps"]]
    assert any(n.startswith("aux-info") for n in names) and any(
        n.startswith("presign") for n in names
    )
    sig = doc["signature"]
    recovered = EthSignature(vrs=(sig["v"], int(sig["r"], 16), int(sig["s"], 16)))
    address = recovered.recover_public_key_from_msg_hash(bytes.fromhex(sig["digest"]))
    assert address.to_checksum_address() == doc["address"]
    assert len(PrimePool(pool)) == 0


def test_demo_with_pool_proves_and_verifies_everything(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 4)
    result = runner.invoke(app, ["demo", "--proofs", "--pool", str(pool), "--json"])
    assert result.exit_code == 0, result.output
    steps = {s["step"]: s for s in json.loads(result.output)["steps"]}
    for proof in ("mod", "prm", "fac", "sch", "enc", "log*", "aff-g"):
        assert f"Π{proof} prove" in steps and f"Π{proof} verify" in steps
        assert steps[f"Π{proof} verify"]["detail"].endswith("bytes")
    assert len(PrimePool(pool)) == 0  # the demo consumed its primes


def test_demo_with_empty_pool_fails_cleanly(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 2)
    result = runner.invoke(app, ["demo", "--in-process", "--pool", str(pool)])
    assert result.exit_code == 1
    assert "holds 2, need 6" in result.output


def test_pool_is_only_for_the_in_process_modes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--pool", str(tmp_path / "p.json")])
    assert result.exit_code == 2
    assert "--pool" in result.output and "--in-process" in result.output


def test_primes_generate_and_count(tmp_path: Path) -> None:
    pool = tmp_path / "p.json"
    result = runner.invoke(app, ["primes", "generate", "--pool", str(pool), "--count", "1"])
    assert result.exit_code == 0, result.output
    count = runner.invoke(app, ["primes", "count", "--pool", str(pool)])
    assert count.output.strip() == "1"


def test_primes_count_malformed_pool(tmp_path: Path) -> None:
    pool = tmp_path / "p.json"
    pool.write_text("{")
    result = runner.invoke(app, ["primes", "count", "--pool", str(pool)])
    assert result.exit_code == 1
    assert "not JSON" in result.output


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output and "primes" in result.output


def test_the_cli_and_the_codec_never_import_the_evm() -> None:
    """web3, eth-tester and py-evm (the `evm` extra, ≈1 s to import) are for the in-process
    chain only: the console, the cluster commands, the engine and the transaction codec start
    without them, and `tessera policy` does not load the coordinator's commands either."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from coordinator.console import app\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(app, ['policy', '--help']).exit_code == 0\n"
        "assert 'coordinator.cli' not in sys.modules\n"
        "import coordinator.cli, coordinator.engine, signer.chains.evm, coordinator.cluster\n"
        "assert CliRunner().invoke(app, ['cluster', '--help']).exit_code == 0\n"
        "heavy = {'web3', 'eth_tester', 'eth', 'eth_account'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_parser_errors_are_json_in_every_group() -> None:
    """A missing argument or option found by the parser is the same JSON error (code USAGE,
    exit 2) in every command group when --json is given; without --json it stays text."""
    for command in (
        ["cluster", "address", "--json"],
        ["cluster", "quarantine", "clear", "--json"],
        ["policy", "hash", "--json"],
        ["policy", "audit", "export", "--json"],
        ["officer", "approve-withdrawal", "--json"],
        ["node", "pin", "--json"],
        ["hsm", "init", "--json"],
        ["primes", "count", "--json"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "USAGE" and error["detail"], command
    plain = runner.invoke(app, ["policy", "hash"])
    assert plain.exit_code == 2 and not plain.stdout.lstrip().startswith("{")
