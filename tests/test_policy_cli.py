"""The officer CLI through typer's runner: the full officer workflow, error cases (one-line
errors, nothing stored), audit tampering through the store, and the local store's atomicity."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from policies.approvals import load_approval, verify_approval
from policies.cli import audit_app, officer_app, policy_app
from policies.document import load_policy
from policies.errors import GovernanceSignatureError
from policies.intent import load_intent
from policies.keys import MIN_SCRYPT_N, create_key_file, load_key_file
from policies.store import PolicyStore

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
PASSPHRASE = "correct horse battery staple"
OFFICERS = [
    ("alice", "ed25519"),
    ("bob", "ed25519"),
    ("carol", "ed25519"),
    ("dave", "p256"),
    ("erin", "p256"),
]
runner = CliRunner()


class Env:
    """A working directory with officer keys, a store and helpers to run commands."""

    def __init__(self, tmp: Path, *, create_store: bool = True) -> None:
        self.tmp = tmp
        self.store = tmp / "store.db"
        if create_store:  # only `policy init` creates a store through the CLI
            PolicyStore(self.store).close()
        self.env = {
            "TESSERA_OFFICER_PASSPHRASE": PASSPHRASE,
            "TESSERA_POLICY_STORE": str(self.store),
        }
        self.keys: dict[str, Path] = {}
        self.public: dict[str, dict[str, str]] = {}

    def fast_keys(self) -> None:
        for name, algorithm in OFFICERS:
            self.add_key(name, algorithm)

    def add_key(self, name: str, algorithm: str = "ed25519") -> Path:
        path = self.tmp / f"{name}.key"
        signer = create_key_file(path, name, algorithm, PASSPHRASE.encode(), scrypt_n=MIN_SCRYPT_N)
        self.keys[name] = path
        self.public[name] = {
            "id": name,
            "algorithm": algorithm,
            "public_key": signer.public_key_hex,
        }
        return path

    def policy_file(
        self, name: str = "policy.json", base: str = "example.yaml", **changes: Any
    ) -> Path:
        obj = yaml.safe_load((FIXTURES / base).read_text())
        obj["officers"] = [self.public[n] for n, _ in OFFICERS]
        obj.update(changes)
        path = self.tmp / name
        path.write_text(json.dumps(obj))
        return path

    def run(self, app: Any, *args: str) -> Result:
        return runner.invoke(app, [str(a) for a in args], env=self.env)

    def ok(self, app: Any, *args: str) -> Result:
        result = self.run(app, *args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result

    def ok_json(self, app: Any, *args: str) -> Any:
        return json.loads(self.ok(app, *args, "--json").stdout)

    def fails(self, app: Any, *args: str, code: int = 1) -> str:
        result = self.run(app, *args)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]

    def denied_json(self, app: Any, *args: str) -> Any:
        """A command that prints its result and exits 1 (a decision that would not be signed)."""
        result = self.run(app, *args, "--json")
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def fails_json(self, app: Any, *args: str, code: int = 1) -> dict[str, Any]:
        """With --json an error is one JSON object on stdout and nothing else."""
        result = self.run(app, *args, "--json")
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        doc = json.loads(result.stdout)
        assert list(doc) == ["error"] and result.stderr == "", (result.stdout, result.stderr)
        error: dict[str, Any] = doc["error"]
        assert isinstance(error["code"], str) and isinstance(error["detail"], str)
        return error

    def genesis(self) -> str:
        """Propose the example policy and activate it with 3 of 5 signatures."""
        proposed = self.ok_json(policy_app, "propose", self.policy_file())
        for name in ("alice", "bob", "carol"):
            self.ok(officer_app, "approve-policy", "--key", self.keys[name])
        self.ok(policy_app, "activate")
        return str(proposed["policy_hash"])

    def audit_count(self) -> int:
        with PolicyStore(self.store) as store:
            return len(store.audit_records())


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.fast_keys()
    return e


def test_full_officer_workflow(tmp_path: Path) -> None:
    """init → keys → propose → approve ×m → activate → simulate → approve withdrawal → audit."""
    e = Env(tmp_path, create_store=False)
    initialised = e.ok_json(policy_app, "init", "--store-only")
    assert initialised["store_created"] and e.store.exists()
    for name, algorithm in OFFICERS:
        created = e.ok_json(
            officer_app,
            "create-key",
            "--id",
            name,
            "--algorithm",
            algorithm,
            "--out",
            tmp_path / f"{name}.key",
        )
        assert created["id"] == name and created["algorithm"] == algorithm
        e.keys[name] = tmp_path / f"{name}.key"
        e.public[name] = {k: created[k] for k in ("id", "algorithm", "public_key")}
        shown = e.ok_json(officer_app, "show-key", e.keys[name])
        assert shown["public_key"] == created["public_key"]

    proposed = e.ok_json(policy_app, "propose", e.policy_file())
    assert proposed["version"] == 1 and proposed["state"] == "proposed"
    for count, name in enumerate(("alice", "dave", "erin"), start=1):
        voted = e.ok_json(officer_app, "approve-policy", "--key", e.keys[name])
        assert voted["counted"] == sorted(["alice", "dave", "erin"][:count])
        assert voted["ready_to_activate"] == (count == 3)
    status = e.ok_json(policy_app, "status")
    assert status["in_force"] is None and status["proposals"][0]["needed"] == 3
    activated = e.ok_json(policy_app, "activate")
    assert activated["signed_by"] == ["alice", "dave", "erin"] and not activated["time_locked"]

    request = FIXTURES / "intent-large.yaml"
    simulated = e.denied_json(policy_app, "simulate", "--intent", request)
    assert simulated["outcome"] == "REQUIRE_APPROVAL" and simulated["rule"] == "hot-large"
    assert simulated["approval"]["k"] == 2

    first = e.ok_json(officer_app, "approve-withdrawal", request, "--key", e.keys["alice"])
    assert first["status"] == "pending" and first["evaluation"]["outcome"] == "REQUIRE_APPROVAL"
    approval_file = tmp_path / "bob-approval.json"
    second = e.ok_json(
        officer_app, "approve-withdrawal", request, "--key", e.keys["bob"], "--out", approval_file
    )
    assert second["status"] == "approved" and second["evaluation"]["outcome"] == "ALLOW"
    assert second["approvals_counted"] == ["alice", "bob"]
    # The approval file is what a node verifies, with its own copy of the policy.
    with PolicyStore(e.store) as store:
        from datetime import UTC, datetime

        policy = store.in_force(now=datetime.now(UTC)).document
    approval = load_approval(approval_file)
    verify_approval(policy, load_intent(request), approval, now=approval.not_before)

    checkpoint = tmp_path / "checkpoint.json"
    e.ok(policy_app, "audit", "checkpoint", "--key", e.keys["erin"], "--out", checkpoint)
    report = e.ok_json(policy_app, "audit", "verify", "--checkpoint", checkpoint)
    assert report["ok"] and report["checkpoints"] == 1
    assert report["records"] == report["trusted_head_seq"] + 1
    kinds = [
        json.loads(line)["kind"] for line in e.ok(policy_app, "audit", "export").stdout.splitlines()
    ]
    assert kinds == [
        "policy_proposed",
        "policy_signed",
        "policy_signed",
        "policy_signed",
        "policy_activated",
        "withdrawal_requested",
        "approval",
        "decision",
        "approval",
        "decision",
        "checkpoint",
    ]
    human = e.ok(policy_app, "audit", "verify").stdout
    assert "audit log OK: 11 records, 1 signed checkpoint(s)" in human


def test_human_output_of_show_status_diff_simulate(env: Env) -> None:
    genesis = env.genesis()
    shown = env.ok(policy_app, "show").stdout
    assert "quorum 3 of 5" in shown and "1. hot-small-eth" in shown and "[active]" in shown
    assert "REQUIRE_APPROVAL (2 of treasury)" in shown
    v2 = env.policy_file("v2.json", base="example-v2.yaml", previous=genesis)
    env.ok(policy_app, "propose", v2)
    diff = env.ok(policy_app, "diff", "1", "2").stdout
    assert "[loosening]" in diff and "policy v1" in diff
    assert env.ok_json(policy_app, "diff", "1", "2")["new_version"] == 2
    status = env.ok(policy_app, "status").stdout
    assert "in force: version 1" in status and "proposed: version 2" in status
    simulated = env.ok(policy_app, "simulate", "--intent", FIXTURES / "intent-small.yaml").stdout
    assert simulated.startswith("ALLOW") and "rule: hot-small-eth" in simulated


def test_m_minus_1_signatures_cannot_activate_and_nothing_is_stored(env: Env) -> None:
    env.ok(policy_app, "propose", env.policy_file())
    for name in ("alice", "bob"):
        env.ok(officer_app, "approve-policy", "--key", env.keys[name])
    before = env.audit_count()
    line = env.fails(policy_app, "activate")
    assert "2 of the 3 required officer signatures" in line
    assert env.audit_count() == before
    assert env.ok_json(policy_app, "status")["in_force"] is None
    with PolicyStore(env.store) as store:
        assert store.chain() == []


def test_officer_cannot_sign_twice(env: Env) -> None:
    env.ok(policy_app, "propose", env.policy_file())
    env.ok(officer_app, "approve-policy", "--key", env.keys["alice"])
    line = env.fails(officer_app, "approve-policy", "--key", env.keys["alice"])
    assert "'alice'" in line and "already signed" in line


def test_non_officer_key_cannot_vote(env: Env) -> None:
    env.ok(policy_app, "propose", env.policy_file())
    env.add_key("mallory")
    before = env.audit_count()
    line = env.fails(officer_app, "approve-policy", "--key", env.keys["mallory"])
    assert "'mallory'" in line and "not an officer" in line
    assert env.audit_count() == before


def test_key_whose_public_key_is_not_the_policy_one_cannot_vote(env: Env, tmp_path: Path) -> None:
    env.ok(policy_app, "propose", env.policy_file())
    impostor = tmp_path / "impostor.key"
    create_key_file(impostor, "alice", "ed25519", PASSPHRASE.encode(), scrypt_n=MIN_SCRYPT_N)
    line = env.fails(officer_app, "approve-policy", "--key", impostor)
    assert "[signature]" in line and "alice" in line


def test_store_sign_policy_refusal_writes_nothing(env: Env, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    env.ok(policy_app, "propose", env.policy_file())
    impostor = tmp_path / "impostor.key"
    create_key_file(impostor, "bob", "p256", PASSPHRASE.encode(), scrypt_n=MIN_SCRYPT_N)
    signer = load_key_file(impostor, PASSPHRASE.encode())
    with PolicyStore(env.store) as store:
        [proposal] = store.proposals(now=datetime.now(UTC))
        before = len(store.audit_records())
        with pytest.raises(GovernanceSignatureError):
            store.sign_policy(
                signer, policy_hash=proposal.proposal.policy_hash, now=datetime.now(UTC)
            )
        [again] = store.proposals(now=datetime.now(UTC))
        assert again.signatures == () and len(store.audit_records()) == before


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"colour": "blue"}, "colour: unknown field"),
        (
            {
                "whitelists": {
                    "x": [
                        {
                            "address": "0x4c16027649390e3a79ddd56b0aa5a43cdb30e485",
                            "chain_id": 1,
                            "label": "lower",
                        }
                    ]
                }
            },
            "whitelists.x[0].address",
        ),
        (
            {
                "whitelists": {
                    "x": [
                        {
                            "address": "0x4C16027649390E3a79dDd56B0AA5a43CdB30e485",
                            "chain_id": 1,
                            "label": "bad checksum",
                        }
                    ]
                }
            },
            "EIP-55 checksum mismatch",
        ),
        (
            {
                "velocity_limits": [
                    {
                        "id": "n",
                        "tier": "hot",
                        "asset": "ETH",
                        "window_seconds": 60,
                        "max_amount": "-5",
                    }
                ]
            },
            "negative",
        ),
        (
            {
                "velocity_limits": [
                    {
                        "id": "n",
                        "tier": "hot",
                        "asset": "ETH",
                        "window_seconds": 60,
                        "max_amount": "1" + "0" * 40,
                    }
                ]
            },
            "absurd",
        ),
        (
            {
                "velocity_limits": [
                    {
                        "id": "n",
                        "tier": "hot",
                        "asset": "ETH",
                        "window_seconds": 60,
                        "max_amount": 1.5,
                    }
                ]
            },
            "floats are not allowed",
        ),
        ({"governance": {"quorum": 6, "freeze_quorum": 1}}, "governance.quorum"),
        ({"version": 2}, "previous"),
    ],
)
def test_malformed_policy_is_a_clear_error_and_stores_nothing(
    env: Env, change: dict[str, Any], fragment: str
) -> None:
    line = env.fails(policy_app, "propose", env.policy_file(**change))
    assert fragment in line
    assert env.audit_count() == 0
    assert env.ok_json(policy_app, "status")["proposals"] == []


def test_unreadable_and_syntactically_broken_policy_files(env: Env, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nofficers: [\n")
    assert "YAML error at line" in env.fails(policy_app, "propose", broken)
    assert "cannot read" in env.fails(policy_app, "propose", tmp_path / "absent.yaml")
    assert env.audit_count() == 0


def test_proposal_that_does_not_extend_the_chain_is_refused(env: Env) -> None:
    env.genesis()
    stale = env.policy_file("again.json", description="another genesis")  # version 1 again
    assert "must be version 2" in env.fails(policy_app, "propose", stale)
    wrong_prev = env.policy_file("v2.json", base="example-v2.yaml", previous="ab" * 32)
    assert "previous" in env.fails(policy_app, "propose", wrong_prev)


def test_self_approval_is_refused_and_nothing_is_stored(env: Env, tmp_path: Path) -> None:
    env.genesis()
    request = tmp_path / "self.yaml"
    intent = yaml.safe_load((FIXTURES / "intent-large.yaml").read_text())
    request.write_text(yaml.safe_dump({**intent, "initiator": "alice"}))
    before = env.audit_count()
    line = env.fails(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    assert "[self_approval]" in line and "'alice'" in line
    assert env.audit_count() == before
    assert env.ok_json(policy_app, "status")["pending_requests"] == []


def test_approving_a_blocked_withdrawal_is_refused(env: Env) -> None:
    env.genesis()
    before = env.audit_count()
    line = env.fails(
        officer_app,
        "approve-withdrawal",
        FIXTURES / "intent-sanctioned.yaml",
        "--key",
        env.keys["alice"],
    )
    assert "BLOCK" in line and "nothing recorded" in line
    assert env.audit_count() == before


def test_request_id_reused_for_another_transaction(env: Env, tmp_path: Path) -> None:
    env.genesis()
    env.ok(
        officer_app,
        "approve-withdrawal",
        FIXTURES / "intent-large.yaml",
        "--key",
        env.keys["alice"],
    )
    swapped = tmp_path / "swapped.yaml"
    intent = yaml.safe_load((FIXTURES / "intent-large.yaml").read_text())
    swapped.write_text(yaml.safe_dump({**intent, "amount": "6"}))
    line = env.fails(officer_app, "approve-withdrawal", swapped, "--key", env.keys["bob"])
    assert "'wd-large-0001'" in line and "different transaction" in line


def test_reject_closes_the_request(env: Env) -> None:
    env.genesis()
    request = FIXTURES / "intent-large.yaml"
    env.ok(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    rejected = env.ok_json(
        officer_app,
        "reject-withdrawal",
        request,
        "--key",
        env.keys["carol"],
        "--reason",
        "destination under review",
    )
    assert rejected["status"] == "rejected" and rejected["approval"]["decision"] == "reject"
    line = env.fails(officer_app, "approve-withdrawal", request, "--key", env.keys["bob"])
    assert "already rejected" in line
    assert env.ok_json(policy_app, "status")["pending_requests"] == []


def test_officer_cannot_approve_the_same_request_twice(env: Env) -> None:
    env.genesis()
    request = FIXTURES / "intent-cold.yaml"
    env.ok(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    line = env.fails(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    assert "already decided" in line


def test_freeze_is_immediate_and_unfreeze_needs_the_quorum(env: Env) -> None:
    env.genesis()
    frozen = env.ok_json(
        officer_app, "freeze", "hot-1", "--key", env.keys["erin"], "--reason", "incident"
    )
    assert frozen["applied"] and frozen["needed"] == 1
    small = FIXTURES / "intent-small.yaml"
    decision = env.denied_json(policy_app, "simulate", "--intent", small)
    assert decision["outcome"] == "DENY" and decision["reason"] == "frozen"
    assert "already frozen" in env.fails(officer_app, "freeze", "hot-1", "--key", env.keys["bob"])
    for count, name in enumerate(("alice", "bob", "carol"), start=1):
        step = env.ok_json(officer_app, "unfreeze", "hot-1", "--key", env.keys[name])
        assert step["counted"] == ["alice", "bob", "carol"][:count]
        assert step["applied"] == (count == 3)
        if count < 3:
            assert env.ok_json(policy_app, "status")["frozen_wallets"] == ["hot-1"]
    assert env.ok_json(policy_app, "status")["frozen_wallets"] == []
    assert env.ok_json(policy_app, "simulate", "--intent", small)["outcome"] == "ALLOW"
    assert "not a wallet" in env.fails(officer_app, "freeze", "nope", "--key", env.keys["bob"])


def test_loosening_version_is_time_locked_and_can_be_cancelled(env: Env) -> None:
    genesis = env.genesis()
    env.ok(
        policy_app, "propose", env.policy_file("v2.json", base="example-v2.yaml", previous=genesis)
    )
    for name in ("bob", "carol", "dave"):
        env.ok(officer_app, "approve-policy", "--key", env.keys[name], "--version", "2")
    activated = env.ok_json(policy_app, "activate", "--version", "2")
    assert activated["time_locked"] and activated["loosening"]
    status = env.ok_json(policy_app, "status")
    assert status["in_force"]["version"] == 1 and status["time_locked"]["version"] == 2
    # Nothing can be proposed on top of a time-locked version; it can be cancelled.
    hash_v2 = activated["policy_hash"]
    v3 = env.policy_file("v3.json", base="example-v2.yaml", version=3, previous=hash_v2)
    assert "time-locked" in env.fails(policy_app, "propose", v3)
    cancelled = env.ok_json(officer_app, "cancel-policy", "--key", env.keys["erin"])
    assert cancelled["cancelled"] and cancelled["counted"] == ["erin"]
    status = env.ok_json(policy_app, "status")
    assert status["time_locked"] is None and status["in_force"]["version"] == 1
    line = env.fails(officer_app, "cancel-policy", "--key", env.keys["bob"])
    assert "no time-locked version is pending" in line


def test_wrong_or_missing_passphrase(env: Env, tmp_path: Path) -> None:
    env.ok(policy_app, "propose", env.policy_file())
    env.env["TESSERA_OFFICER_PASSPHRASE"] = "not the passphrase"
    line = env.fails(officer_app, "approve-policy", "--key", env.keys["alice"])
    assert str(env.keys["alice"]) in line and "wrong passphrase" in line
    del env.env["TESSERA_OFFICER_PASSPHRASE"]
    line = env.fails(officer_app, "approve-policy", "--key", env.keys["alice"])
    assert "TESSERA_OFFICER_PASSPHRASE" in line
    passfile = tmp_path / "pass.txt"
    passfile.write_text(PASSPHRASE + "\n")
    env.ok(officer_app, "approve-policy", "--key", env.keys["alice"], "--passphrase-file", passfile)


def test_create_key_refuses_weak_passphrase_and_overwrite(env: Env, tmp_path: Path) -> None:
    env.env["TESSERA_OFFICER_PASSPHRASE"] = "short"
    out = tmp_path / "new.key"
    assert "at least 12 bytes" in env.fails(officer_app, "create-key", "--id", "x", "--out", out)
    assert not out.exists()
    env.env["TESSERA_OFFICER_PASSPHRASE"] = PASSPHRASE
    line = env.fails(officer_app, "create-key", "--id", "alice", "--out", env.keys["alice"])
    assert "already exists" in line
    assert "unknown algorithm" in env.fails(
        officer_app, "create-key", "--id", "y", "--algorithm", "rsa", "--out", out, code=2
    )


def test_audit_verify_names_the_tampered_record(env: Env) -> None:
    env.genesis()
    with sqlite3.connect(env.store) as db:
        db.execute(
            "UPDATE policy_audit_log SET payload = replace(payload, 'alice', 'mallory') "
            "WHERE seq = 2"
        )
    line = env.fails(policy_app, "audit", "verify")
    assert "position 1 (seq 2)" in line and "edited" in line


def test_audit_verify_detects_truncation_against_a_checkpoint(env: Env, tmp_path: Path) -> None:
    env.genesis()
    checkpoint = tmp_path / "cp.json"
    env.ok(policy_app, "audit", "checkpoint", "--key", env.keys["dave"], "--out", checkpoint)
    with sqlite3.connect(env.store) as db:
        db.execute("DELETE FROM policy_audit_log WHERE seq >= 4")
    env.ok(policy_app, "audit", "verify")  # without an outside head the cut is invisible
    line = env.fails(policy_app, "audit", "verify", "--checkpoint", checkpoint)
    assert "position 3" in line and "truncated" in line
    head = env.run(policy_app, "audit", "verify", "--head-seq", "5", "--head-hash", "00" * 32)
    assert head.exit_code == 1 and "truncated" in head.stderr


def test_audit_export_and_verify_a_file(env: Env, tmp_path: Path) -> None:
    env.genesis()
    out = tmp_path / "log.jsonl"
    env.ok(policy_app, "audit", "export", "--format", "jsonl", "--out", out)
    assert env.ok_json(policy_app, "audit", "verify", "--file", out)["records"] == 5
    lines = out.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    out.write_text("\n".join(lines) + "\n")
    line = env.fails(policy_app, "audit", "verify", "--file", out)
    assert "position 2" in line and "reordered" in line
    csv_text = env.ok(policy_app, "audit", "export", "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("seq,timestamp,kind,policy_hash")
    assert len(csv_text.splitlines()) == 6
    assert "already exists" in env.fails(policy_app, "audit", "export", "--out", out)
    assert "not jsonl or csv" in env.fails(policy_app, "audit", "export", "--format", "xml", code=2)


def test_edited_policy_in_the_store_is_reported(env: Env) -> None:
    env.genesis()
    with sqlite3.connect(env.store) as db:
        db.execute(
            'UPDATE policy_proposals SET document = replace(document, \'"max_amount":"10"\', '
            '\'"max_amount":"10000"\')'
        )
    line = env.fails(policy_app, "status")
    assert "does not hash to its recorded hash" in line


def test_store_option_and_missing_directory(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    PolicyStore(other).close()
    result = runner.invoke(
        policy_app, ["--store", str(other), "status", "--json"], env={"TESSERA_POLICY_STORE": ""}
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["store"] == str(other)
    result = runner.invoke(policy_app, ["--store", str(tmp_path / "no" / "such.db"), "status"])
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_simulate_errors(env: Env, tmp_path: Path) -> None:
    assert "no policy version is in force" in env.fails(
        policy_app, "simulate", "--intent", FIXTURES / "intent-small.yaml"
    )
    env.genesis()
    bad = tmp_path / "bad-intent.yaml"
    intent = yaml.safe_load((FIXTURES / "intent-small.yaml").read_text())
    bad.write_text(yaml.safe_dump({**intent, "amount": "-1"}))
    assert "amount" in env.fails(policy_app, "simulate", "--intent", bad)
    bad.write_text(yaml.safe_dump({**intent, "destination": intent["destination"].lower()}))
    assert "destination" in env.fails(policy_app, "simulate", "--intent", bad)
    assert "no such activated version" in env.fails(
        policy_app, "simulate", "--intent", FIXTURES / "intent-small.yaml", "--version", "9"
    )
    wrong_chain = env.denied_json(
        policy_app, "simulate", "--intent", FIXTURES / "intent-wrong-chain.yaml"
    )
    assert wrong_chain["outcome"] in ("DENY", "BLOCK")
    at = env.ok_json(
        policy_app,
        "simulate",
        "--intent",
        FIXTURES / "intent-small.yaml",
        "--at",
        "2027-01-01T00:00:00Z",
    )
    assert at["outcome"] == "ALLOW"
    assert "--at" in env.fails(
        policy_app,
        "simulate",
        "--intent",
        FIXTURES / "intent-small.yaml",
        "--at",
        "tomorrow",
        code=2,
    )


def _commands(app: Any) -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out: list[list[str]] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        if sub:
            out += [[name, child] for child in sub]
        else:
            out.append([name])
    return out


@pytest.mark.parametrize(
    "app", [officer_app, policy_app, audit_app], ids=["officer", "policy", "audit"]
)
def test_every_command_has_help(app: Any) -> None:
    commands = _commands(app)
    assert commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Usage" in result.stdout
        if path[-1] != "export":  # export writes JSONL or CSV itself
            assert "--json" in result.stdout, path


def test_usage_errors_exit_2(env: Env) -> None:
    result = env.run(policy_app, "simulate")
    assert result.exit_code == 2
    result = env.run(officer_app, "approve-withdrawal", FIXTURES / "intent-small.yaml")
    assert result.exit_code == 2 and "--key" in result.stderr


def test_approving_a_withdrawal_on_the_wrong_chain_is_refused(env: Env) -> None:
    """The exchange address is whitelisted on chain 1 only; the request is for chain 137."""
    env.genesis()
    before = env.audit_count()
    request = FIXTURES / "intent-wrong-chain.yaml"
    line = env.fails(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    assert "DENY" in line and "nothing recorded" in line
    assert env.audit_count() == before


def test_concurrent_store_writers_serialise(env: Env) -> None:
    """Approvals recorded from several threads at once: every one lands, the audit chain stays
    linear (BEGIN IMMEDIATE serialises check-then-write)."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    env.genesis()
    intent = load_intent(FIXTURES / "intent-cold.yaml")
    signers = [load_key_file(env.keys[n], PASSPHRASE.encode()) for n in ("alice", "bob", "carol")]

    def approve(index: int) -> str:
        with PolicyStore(env.store) as store:
            signer = signers[index]
            result = store.decide_withdrawal(
                signer, intent, decision="approve", now=datetime.now(UTC)
            )
            return result.status

    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = sorted(pool.map(approve, range(3)))
    assert statuses == ["approved", "pending", "pending"]
    with PolicyStore(env.store) as store:
        [request] = store.requests()
        assert request.status == "approved" and len(request.approvals) == 3
        assert store.verify_audit().records == env.audit_count()


# --- operator fixes (issue "structure and operator experience") ------------------------------


def _minimal_policy(env: Env, name: str = "minimal.json") -> Path:
    """The example without `groups:` and `whitelists:` (and the rules that use them)."""
    obj = yaml.safe_load((FIXTURES / "example.yaml").read_text())
    obj["officers"] = [env.public[n] for n, _ in OFFICERS]
    del obj["groups"], obj["whitelists"]
    obj["rules"] = [
        {"id": "cold-none", "match": {"tiers": ["cold"]}, "action": "BLOCK"},
        {
            "id": "hot-small",
            "match": {"tiers": ["hot"], "assets": ["ETH"], "amount": {"max": "1"}},
            "action": "ALLOW",
        },
    ]
    path = env.tmp / name
    path.write_text(json.dumps(obj))
    return path


def test_propose_a_policy_without_groups_or_whitelists(env: Env) -> None:
    """Was: TypeError: cannot pickle 'mappingproxy' object (a MappingProxyType default)."""
    proposed = env.ok_json(policy_app, "propose", _minimal_policy(env))
    assert proposed["version"] == 1 and proposed["state"] == "proposed"
    shown = env.ok_json(policy_app, "show", "1")
    assert shown["document"]["groups"] == {} and shown["document"]["whitelists"] == {}
    assert env.ok_json(policy_app, "validate", _minimal_policy(env, "again.json"))["valid"]


def test_simulate_counts_the_approvals_recorded_for_the_request(env: Env) -> None:
    """Was: after two approvals, simulate said "0 counted, waiting for 2 more" (the request's
    own spent nonces were taken for replays)."""
    env.genesis()
    request = FIXTURES / "intent-large.yaml"
    env.ok(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    pending = env.denied_json(policy_app, "simulate", "--intent", request)
    assert pending["approval"]["counted"] == ["alice"]
    env.ok(officer_app, "approve-withdrawal", request, "--key", env.keys["bob"])
    simulated = env.ok_json(policy_app, "simulate", "--intent", request)
    assert simulated["outcome"] == "ALLOW" and simulated["reason"] == "approved"
    assert simulated["approval"]["counted"] == ["alice", "bob"]
    assert simulated["approval"]["ignored"] == []
    human = env.ok(policy_app, "simulate", "--intent", request).stdout
    assert "2 counted" in human and "waiting for" not in human


def test_rejected_request_shows_as_rejected_everywhere(env: Env) -> None:
    """Was: "rejected", then "REQUIRE_APPROVAL: waiting for 2 more" in the same output."""
    env.genesis()
    request = FIXTURES / "intent-large.yaml"
    env.ok(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])
    rejected = env.ok_json(
        officer_app, "reject-withdrawal", request, "--key", env.keys["carol"], "--reason", "odd"
    )
    assert rejected["status"] == "rejected"
    assert rejected["evaluation"]["outcome"] == "DENY"
    assert rejected["evaluation"]["reason"] == "rejected"
    assert rejected["evaluation"]["explanation"][-1] == "DENY: rejected by carol: odd"
    human = env.run(
        officer_app, "reject-withdrawal", FIXTURES / "intent-cold.yaml", "--key", env.keys["dave"]
    )
    assert human.exit_code == 0, human.stderr
    assert "request is rejected" in human.stdout and "\nDENY: request" in human.stdout
    assert "waiting for" not in human.stdout and "REQUIRE_APPROVAL:" not in human.stdout
    simulated = env.denied_json(policy_app, "simulate", "--intent", request)
    assert simulated["outcome"] == "DENY" and simulated["reason"] == "rejected"
    kinds = [
        json.loads(line)["kind"]
        for line in env.ok(policy_app, "audit", "export").stdout.splitlines()
    ]
    assert kinds.count("rejection") == 2


def test_approval_by_an_officer_outside_the_approver_group_is_refused(env: Env) -> None:
    """Was: dave (not in treasury) signed, exit 0, no warning."""
    env.genesis()
    request = FIXTURES / "intent-large.yaml"  # rule hot-large: 2 of treasury (alice, bob, carol)
    before = env.audit_count()
    line = env.fails(officer_app, "approve-withdrawal", request, "--key", env.keys["dave"])
    assert "'dave'" in line and "'treasury'" in line and "nothing recorded" in line
    assert "hot-large" in line
    assert env.audit_count() == before
    assert env.ok_json(policy_app, "status")["pending_requests"] == []
    error = env.fails_json(officer_app, "approve-withdrawal", request, "--key", env.keys["erin"])
    assert error["code"] == "OUTSIDE_APPROVER_GROUP"
    assert error["officer"] == "erin" and error["group"] == "treasury"
    assert error["members"] == ["alice", "bob", "carol"]
    # A member still approves normally.
    env.ok(officer_app, "approve-withdrawal", request, "--key", env.keys["alice"])


def test_store_option_is_accepted_on_every_store_command(env: Env, tmp_path: Path) -> None:
    """Was: `policy status --store X` refused; only `policy --store X status` worked."""
    other = tmp_path / "other.db"
    env.env["TESSERA_POLICY_STORE"] = str(tmp_path / "not-this-one.db")
    created = env.ok_json(policy_app, "init", "--store-only", "--store", other)
    assert created["store"] == str(other) and created["store_created"]
    assert env.ok_json(policy_app, "status", "--store", other)["store"] == str(other)
    assert env.ok_json(policy_app, "--store", other, "status")["store"] == str(other)
    # The command's own --store wins over the group's.
    assert env.ok_json(policy_app, "--store", env.store, "status", "--store", other)["store"] == (
        str(other)
    )
    env.ok(policy_app, "propose", env.policy_file(), "--store", other)
    env.ok(officer_app, "approve-policy", "--key", env.keys["alice"], "--store", other)
    voted = env.ok_json(officer_app, "--store", other, "approve-policy", "--key", env.keys["bob"])
    assert voted["counted"] == ["alice", "bob"]
    for path in [*_commands(officer_app), *_commands(policy_app)]:
        if path[-1] in ("create-key", "show-key", "validate", "hash"):
            continue  # these read only files
        helped = runner.invoke(
            officer_app if path[0] in _names(officer_app) else policy_app, [*path, "--help"]
        )
        assert "--store" in helped.stdout, path


def _names(app: Any) -> set[str]:
    return {path[0] for path in _commands(app)}


def test_missing_store_file_is_refused_not_created(env: Env, tmp_path: Path) -> None:
    """Was: a mistyped --store silently created an empty database."""
    typo = tmp_path / "stroe.db"
    for args in (
        ["status"],
        ["propose", str(env.policy_file())],
        ["simulate", "--intent", str(FIXTURES / "intent-small.yaml")],
        ["audit", "verify"],
    ):
        line = env.fails(policy_app, *args, "--store", typo)
        assert str(typo) in line and "does not exist" in line and "policy init" in line
    assert "does not exist" in env.fails(
        officer_app, "approve-policy", "--key", env.keys["alice"], "--store", typo
    )
    error = env.fails_json(policy_app, "status", "--store", typo)
    assert error["code"] == "STORE_NOT_FOUND" and error["path"] == str(typo)
    assert not typo.exists()


def test_every_schema_problem_is_printed_with_its_path(env: Env, tmp_path: Path) -> None:
    """Was: only the first of several problems was printed."""
    obj = yaml.safe_load((FIXTURES / "example.yaml").read_text())
    obj["officers"] = [env.public[n] for n, _ in OFFICERS]
    obj["colour"] = "blue"
    obj["governance"] = {"quorum": 0, "freeze_quorum": 1}
    obj["velocity_limits"][0]["max_amount"] = 1.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(obj))
    for args in (["validate", bad], ["propose", bad]):
        result = env.run(policy_app, *args)
        assert result.exit_code == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and "problems" in lines[0]
        text = "\n".join(lines[1:])
        assert "colour: unknown field" in text
        assert "governance.quorum" in text
        assert "velocity_limits[0].max_amount" in text and "floats are not allowed" in text
        assert all(line.startswith("  - ") for line in lines[1:])
    error = env.fails_json(policy_app, "validate", bad)
    assert error["code"] == "POLICY_SCHEMA" and error["source"] == str(bad)
    paths = {problem["path"] for problem in error["problems"]}
    assert {"colour", "governance.quorum", "velocity_limits[0].max_amount"} <= paths
    assert env.audit_count() == 0


def test_json_errors_are_one_object_on_stdout(env: Env, tmp_path: Path) -> None:
    """Was: with --json, errors were plain text on stderr."""
    env.ok(policy_app, "propose", env.policy_file())
    error = env.fails_json(policy_app, "activate")
    assert error["code"] == "QUORUM_NOT_REACHED" and error["needed"] == 3
    assert "0 of the 3 required" in error["detail"]
    error = env.fails_json(officer_app, "approve-policy", "--key", tmp_path / "absent.key")
    assert error["code"] == "OFFICER_KEY" and str(tmp_path / "absent.key") in error["detail"]
    error = env.fails_json(policy_app, "simulate", "--intent", FIXTURES / "intent-small.yaml")
    assert error["code"] == "NO_ACTIVE_POLICY"
    usage = env.fails_json(policy_app, "audit", "verify", "--head-seq", "3", code=2)
    assert usage["code"] == "USAGE" and usage["option"] == "--head-seq/--head-hash"
    error = env.fails_json(policy_app, "show", "zz", code=2)
    assert error["code"] == "USAGE"


def test_simulate_exit_code_follows_the_outcome(env: Env) -> None:
    """Was: exit 0 on DENY and BLOCK.  Now 0 only for ALLOW."""
    env.genesis()
    small = FIXTURES / "intent-small.yaml"
    assert env.run(policy_app, "simulate", "--intent", small).exit_code == 0
    for name, outcome in (
        ("intent-sanctioned.yaml", "BLOCK"),
        ("intent-unlisted.yaml", "DENY"),
        ("intent-large.yaml", "REQUIRE_APPROVAL"),
    ):
        result = env.run(policy_app, "simulate", "--intent", FIXTURES / name)
        assert result.exit_code == 1 and result.stdout.startswith(outcome), (name, result.stdout)
        assert env.denied_json(policy_app, "simulate", "--intent", FIXTURES / name)["outcome"] == (
            outcome
        )


def test_exit_codes_done_refused_usage(env: Env) -> None:
    """0 done, 1 refused or denied, 2 usage error — ours as well as typer's."""
    assert env.run(policy_app, "status").exit_code == 0
    assert env.run(policy_app, "activate").exit_code == 1  # nothing proposed: refused
    assert env.run(policy_app, "status", "--bogus").exit_code == 2  # typer's own
    assert env.run(policy_app, "activate", "--version", "1", "--hash", "abcd").exit_code == 2
    assert env.run(policy_app, "show", "not-a-version").exit_code == 2
    assert env.run(policy_app, "audit", "verify", "--head-hash", "00" * 32).exit_code == 2
    assert env.run(policy_app, "new-version", env.tmp / "v2.yaml").exit_code == 2
    assert env.run(policy_app, "init", "--example", "nope.yaml").exit_code == 2
    assert (
        env.run(
            policy_app, "simulate", "--intent", FIXTURES / "intent-small.yaml", "--at", "soon"
        ).exit_code
        == 2
    )


def test_versions_by_number_or_hash_everywhere(env: Env) -> None:
    genesis = env.genesis()
    v2 = env.ok_json(
        policy_app,
        "propose",
        env.policy_file("v2.json", base="example-v2.yaml", previous=genesis),
    )
    prefix = v2["policy_hash"][:12]
    voted = env.ok_json(
        officer_app, "approve-policy", "--key", env.keys["bob"], "--version", prefix
    )
    assert voted["version"] == 2
    voted = env.ok_json(officer_app, "approve-policy", "--key", env.keys["carol"], "--version", "2")
    assert voted["policy_hash"] == v2["policy_hash"]
    env.ok(officer_app, "approve-policy", "--key", env.keys["dave"], "--hash", prefix)
    assert env.ok_json(policy_app, "activate", "--version", prefix)["version"] == 2
    assert env.ok_json(policy_app, "show", genesis[:10])["document"]["version"] == 1
    assert env.ok_json(policy_app, "diff", genesis[:10], prefix)["new_version"] == 2
    small = FIXTURES / "intent-small.yaml"
    by_hash = env.ok_json(policy_app, "simulate", "--intent", small, "--version", genesis[:10])
    by_number = env.ok_json(policy_app, "simulate", "--intent", small, "--version", "1")
    assert by_hash["policy_hash"] == by_number["policy_hash"] == genesis


def test_config_has_one_meaning(env: Env) -> None:
    """`--config` on `officer create-key` is a tessera-hsm.json, as on `tessera hsm`;
    `--token-config` stays as its older spelling."""
    helped = runner.invoke(officer_app, ["create-key", "--help"]).stdout
    assert "--config" in helped and "tessera-hsm.json" in helped
    missing = env.tmp / "absent-hsm.json"
    for spelling in ("--config", "--token-config"):
        result = env.run(
            officer_app, "create-key", "--id", "x", "--out", env.tmp / "x.ref", spelling, missing
        )
        assert result.exit_code == 1 and str(missing) in result.stderr, result.stderr


def test_init_validate_hash_and_new_version(env: Env, tmp_path: Path) -> None:
    env.store.unlink()
    starter = tmp_path / "policy.yaml"
    created = env.ok_json(policy_app, "init", starter)
    assert created["store_created"] and env.store.exists() and starter.exists()
    assert "TEST KEYS" in starter.read_text()
    assert "already exists" in env.fails(policy_app, "init", starter)
    validated = env.ok_json(policy_app, "validate", starter)
    expected = load_policy(FIXTURES / "example.yaml").policy_hash()
    assert validated["valid"] and validated["policy_hash"] == expected
    assert env.ok(policy_app, "hash", starter).stdout.strip() == expected
    assert env.ok(policy_app, "hash", FIXTURES / "example.json").stdout.strip() == expected

    # From a file: the next version keeps the comments and names the right previous.
    v2 = tmp_path / "policy-v2.yaml"
    written = env.ok_json(policy_app, "new-version", v2, "--previous", starter)
    assert written["version"] == 2 and written["previous"] == expected
    assert "TEST KEYS" in v2.read_text()
    assert load_policy(v2).previous == expected
    # From the store: the chain head, whose officers are this store's.
    env.genesis()
    head = env.ok_json(policy_app, "status")["in_force"]["policy_hash"]
    v2_json = tmp_path / "next.json"
    written = env.ok_json(policy_app, "new-version", v2_json, "--from-store")
    assert written["previous"] == head and written["version"] == 2
    proposed = env.ok_json(policy_app, "propose", v2_json)  # extends the chain as written
    assert proposed["previous"] == head
    v2_yaml = tmp_path / "next.yaml"
    env.ok(policy_app, "new-version", v2_yaml, "--from-store")
    assert load_policy(v2_yaml).policy_hash() == proposed["policy_hash"]
    assert "already exists" in env.fails(policy_app, "new-version", v2_yaml, "--from-store")


def test_examples_ship_with_the_package() -> None:
    from policies.locations import EXAMPLES, example

    for name in EXAMPLES:
        shipped = example(name)
        assert shipped.is_file(), name
        assert shipped.read_text(encoding="utf-8") == (FIXTURES / name).read_text(), name
    assert (
        load_policy(FIXTURES / "example.yaml").policy_hash()
        == load_policy(FIXTURES / "example.json").policy_hash()
    )


def test_progress_shows_on_a_terminal_only() -> None:
    import io
    from contextlib import nullcontext

    from rich.console import Console
    from rich.status import Status

    from policies.render import Output

    quiet = Output(as_json=False)
    quiet.errors = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(quiet.progress("x"), nullcontext)
    tty = Output(as_json=False)
    tty.errors = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(tty.progress("unlocking"), Status)
    scripted = Output(as_json=True)
    scripted.errors = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(scripted.progress("x"), nullcontext)  # --json output stays clean


def test_policy_modules_import_nothing_heavy() -> None:
    """Start-up: the command line imports no model, database or crypto library until a command
    runs, and no policy module ever imports the EVM stack."""
    import subprocess
    import sys

    code = (
        "import sys, policies.cli\n"
        "light = ('sqlalchemy', 'sqlmodel', 'pydantic', 'cryptography', 'yaml', 'alembic')\n"
        "print([m for m in light if m in sys.modules])\n"
        "import pkgutil, importlib, policies\n"
        "for info in pkgutil.walk_packages(policies.__path__, 'policies.'):\n"
        "    if not info.name.endswith('.env'):  # alembic runs those, inside its context\n"
        "        importlib.import_module(info.name)\n"
        "evm = ('web3', 'eth_tester', 'eth', 'coordinator', 'signer')\n"
        "print([m for m in evm if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["[]", "[]"], result.stdout
