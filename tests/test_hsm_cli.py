"""`tessera hsm init` / `status` on real SoftHSM2 tokens (typer's runner, in process)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hsm.cli import hsm_app
from hsm.config import CONFIG_FILE_NAME, HsmConfig, write_pin_file
from hsm.identity import IdentityPublicKey
from hsm.keystore import KeyStore

runner = CliRunner()
PIN = "Cli-Pin-Marker-0b6f3a"


def test_help_explains_both_commands() -> None:
    result = runner.invoke(hsm_app, ["--help"])
    assert result.exit_code == 0
    assert "init" in result.output and "status" in result.output
    for command, options in (
        ("init", ["--dir", "--label", "--pin-file", "--so-pin-file", "--node"]),
        ("status", ["--dir", "--conf", "--label", "--pin-file", "--pin-env", "--node"]),
    ):
        text = runner.invoke(hsm_app, [command, "--help"]).output
        assert all(option in text for option in options), command


def test_init_generates_a_pin_file_and_saves_the_config(tmp_path: Path) -> None:
    directory, pin_file = tmp_path / "node-1", tmp_path / "node-1.pin"
    result = runner.invoke(
        hsm_app,
        ["init", "--dir", str(directory), "--label", "node-1", "--pin-file", str(pin_file)],
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    pin = pin_file.read_text().strip()
    assert len(pin) >= 32 and pin not in result.output
    assert "discarded" in result.output and "SOFTHSM2_CONF=" in result.output
    config = HsmConfig.load(directory / CONFIG_FILE_NAME)
    assert config.token_label == "node-1" and config.pin_file == pin_file.resolve()
    with KeyStore.open(config) as store:  # the saved config opens the token
        store.ensure_node_keys("node-1")


def test_init_with_given_pins_and_node_keys_as_json(tmp_path: Path) -> None:
    pin_file, so_file = tmp_path / "user.pin", tmp_path / "so.pin"
    write_pin_file(pin_file, PIN)
    write_pin_file(so_file, "So-Cli-Marker-77aa")
    args = ["init", "--dir", str(tmp_path / "t"), "--label", "node-2", "--pin-file", str(pin_file)]
    args += ["--so-pin-file", str(so_file), "--node", "node-2", "--json"]
    result = runner.invoke(hsm_app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["pin_file_generated"] is False and doc["so_pin"] == "from file"
    keys = doc["node_keys"]
    assert keys["node_id"] == "node-2" and keys["created_kek"] and keys["created_identity"]
    identity = IdentityPublicKey.from_dict(keys["identity"])
    assert keys["identity_fingerprint"] == identity.fingerprint()
    assert PIN not in result.output and "So-Cli-Marker-77aa" not in result.output


def test_status_reports_token_login_and_keys(tmp_path: Path) -> None:
    directory, pin_file = tmp_path / "n", tmp_path / "n.pin"
    write_pin_file(pin_file, PIN)
    init = ["init", "--dir", str(directory), "--label", "node-3", "--pin-file", str(pin_file)]
    assert runner.invoke(hsm_app, [*init, "--node", "node-3"]).exit_code == 0
    result = runner.invoke(hsm_app, ["status", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert "login OK" in result.output and "tessera/kek/v1/node-3" in result.output
    assert "pass their checks" in result.output and PIN not in result.output
    as_json = runner.invoke(hsm_app, ["status", "--dir", str(directory), "--json"])
    doc = json.loads(as_json.output)
    assert doc["login"] == "ok" and doc["nodes"] == ["node-3"]
    assert doc["node_keys"]["node_id"] == "node-3"
    kek = [o for o in doc["objects"] if o["label"] == "tessera/kek/v1/node-3"]
    assert kek == [
        {
            "label": "tessera/kek/v1/node-3",
            "class": "SECRET_KEY",
            "key_type": "AES",
            "sensitive": True,
            "extractable": False,
        }
    ]
    # The same token through explicit options, the PIN from an environment variable.
    explicit = [
        "status",
        "--conf",
        str(directory / "softhsm2.conf"),
        "--label",
        "node-3",
        "--pin-env",
        "TESSERA_CLI_TEST_PIN",
        "--json",
    ]
    result = runner.invoke(hsm_app, explicit, env={"TESSERA_CLI_TEST_PIN": PIN})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["token"]["label"] == "node-3"


def test_status_of_a_fresh_token_lists_no_node(tmp_path: Path) -> None:
    directory, pin_file = tmp_path / "n", tmp_path / "n.pin"
    write_pin_file(pin_file, PIN)
    init = ["init", "--dir", str(directory), "--label", "fresh", "--pin-file", str(pin_file)]
    assert runner.invoke(hsm_app, init).exit_code == 0
    result = runner.invoke(hsm_app, ["status", "--dir", str(directory)])
    assert result.exit_code == 0 and "no node keys yet" in result.output


def test_errors_exit_1_with_a_clear_message(tmp_path: Path) -> None:
    directory, pin_file = tmp_path / "n", tmp_path / "n.pin"
    write_pin_file(pin_file, PIN)
    init = ["init", "--dir", str(directory), "--label", "node-4", "--pin-file", str(pin_file)]
    assert runner.invoke(hsm_app, init).exit_code == 0

    again = runner.invoke(hsm_app, [*init[:-1], str(tmp_path / "new.pin")])
    assert again.exit_code == 1 and "already holds" in again.output
    assert not (tmp_path / "new.pin").exists()  # the PIN file it generated was removed

    wrong = runner.invoke(
        hsm_app,
        ["status", "--dir", str(directory), "--pin-env", "WRONG_PIN"],
        env={"WRONG_PIN": "Wrong-Cli-Marker-5c"},
    )
    assert wrong.exit_code == 1 and "incorrect PIN" in wrong.output
    assert "Wrong-Cli-Marker-5c" not in wrong.output and PIN not in wrong.output

    missing = runner.invoke(hsm_app, ["status", "--dir", str(directory), "--label", "absent"])
    assert missing.exit_code == 1 and "'absent'" in missing.output and "node-4" in missing.output

    no_node = runner.invoke(hsm_app, ["status", "--dir", str(directory), "--node", "ghost"])
    assert no_node.exit_code == 1 and "no key-encryption key" in no_node.output

    pin_file.chmod(0o644)
    loose = runner.invoke(hsm_app, ["status", "--dir", str(directory)])
    assert loose.exit_code == 1 and "chmod 600" in loose.output

    nothing = runner.invoke(hsm_app, ["status"])
    assert nothing.exit_code == 1 and "--label" in nothing.output

    not_made = runner.invoke(hsm_app, ["status", "--dir", str(tmp_path / "elsewhere")])
    assert not_made.exit_code == 1 and "tessera hsm init" in not_made.output


def test_python_dash_m_hsm_runs_the_app() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hsm", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "status" in done.stdout


def test_errors_with_json_are_one_json_object_on_stdout(tmp_path: Path) -> None:
    directory, pin_file = tmp_path / "j", tmp_path / "j.pin"
    write_pin_file(pin_file, PIN)
    init = ["init", "--dir", str(directory), "--label", "node-j", "--pin-file", str(pin_file)]
    assert runner.invoke(hsm_app, [*init, "--json"]).exit_code == 0

    def error(args: list[str], exit_code: int, **kwargs: object) -> dict[str, str]:
        result = runner.invoke(hsm_app, [*args, "--json"], **kwargs)  # type: ignore[arg-type]
        assert result.exit_code == exit_code, result.output
        doc = json.loads(result.stdout)
        assert set(doc) == {"error"} and set(doc["error"]) == {"code", "detail"}
        return dict(doc["error"])

    wrong = error(
        ["status", "--dir", str(directory), "--pin-env", "WRONG_PIN"],
        1,
        env={"WRONG_PIN": "Wrong-Json-Marker-77"},
    )
    assert wrong["code"] == "HSM_LOGIN" and "incorrect PIN" in wrong["detail"]
    assert "Wrong-Json-Marker-77" not in json.dumps(wrong) and PIN not in json.dumps(wrong)
    again = error(init, 1)
    assert again["code"] == "TOKEN_INIT" and "already holds" in again["detail"]
    nothing = error(["status"], 1)
    assert nothing["code"] == "HSM_CONFIG" and "--label" in nothing["detail"]
    usage = error(["init", "--dir", str(tmp_path / "k")], 2)
    assert usage["code"] == "USAGE" and "--label" in usage["detail"]
    plain = runner.invoke(hsm_app, ["init", "--dir", str(tmp_path / "k")])
    assert plain.exit_code == 2  # without --json: click's usage message
