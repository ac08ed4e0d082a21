"""The security officers' command line: ``tessera officer …`` and ``tessera policy …``.

Until the coordinator API exists every command works on files (officer key files, policy files,
withdrawal request files) and the local SQLite store (`policies.store`): ``--store PATH`` on
either group, else ``$TESSERA_POLICY_STORE``, else ``./tessera-policy.db``.  Passphrases come
from ``--passphrase-file`` or ``$TESSERA_OFFICER_PASSPHRASE``, never from the command line.
Every command has ``--json`` for scripts; errors are one line on stderr naming what is wrong,
exit code 1 (2 for usage errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hsm.errors import HsmError
from hsm.identity import IdentityAlgorithm
from hsm.officer import create_token_officer, is_token_reference, open_token_officer
from policies.audit import (
    Checkpoint,
    TrustedHead,
    export_text,
    load_checkpoint,
    parse_jsonl,
    verify_log,
)
from policies.diff import diff_policies
from policies.document import (
    PolicyDocument,
    amount_str,
    load_policy,
    parse_timestamp,
    timestamp_str,
)
from policies.errors import AuditFormatError, PolicyError, StoreError
from policies.evaluator import Decision
from policies.governance import count_signatures
from policies.intent import load_intent
from policies.keys import (
    ALGORITHMS,
    OfficerSigner,
    Purpose,
    create_key_file,
    load_key_file,
    read_key_info,
    read_passphrase,
)
from policies.store import DEFAULT_STORE, STORE_ENV, PolicyStore, StoredProposal

officer_app = typer.Typer(
    help="Security officers: keys, policy votes, withdrawal approvals, freezes.",
    no_args_is_help=True,
)
policy_app = typer.Typer(
    help="Policy versions: propose, show, diff, activate, status, simulate; the audit log.",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="Verify, checkpoint and export the audit log.", no_args_is_help=True)
policy_app.add_typer(audit_app, name="audit")

console = Console(soft_wrap=True, highlight=False, emoji=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


# --- shared options ----------------------------------------------------------------------------

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        envvar=STORE_ENV,
        help=f"Local policy store (SQLite). Default ./{DEFAULT_STORE} or ${STORE_ENV}.",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
KeyOption = Annotated[
    Path,
    typer.Option("--key", help="Officer key file (from `officer create-key`).", dir_okay=False),
]
PassphraseOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="File holding the key passphrase (else $TESSERA_OFFICER_PASSPHRASE).",
        dir_okay=False,
    ),
]
VersionOption = Annotated[
    int | None, typer.Option("--version", min=1, help="Policy version number.")
]
HashOption = Annotated[
    str | None, typer.Option("--hash", help="Policy hash (or a unique prefix of it).")
]


@dataclass
class _Settings:
    store: Path


def _set_store(ctx: typer.Context, store: Path | None) -> None:
    ctx.obj = _Settings(store if store is not None else DEFAULT_STORE)


@officer_app.callback()
def _officer_main(ctx: typer.Context, store: StoreOption = None) -> None:
    """Security officers: keys, policy votes, withdrawal approvals, freezes."""
    _set_store(ctx, store)


@policy_app.callback()
def _policy_main(ctx: typer.Context, store: StoreOption = None) -> None:
    """Policy versions and the audit log."""
    _set_store(ctx, store)


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def _reported() -> Iterator[None]:
    """Every policy error becomes one line on stderr and exit code 1."""
    try:
        yield
    except (PolicyError, HsmError) as exc:
        _fail(str(exc))


@contextmanager
def _store(ctx: typer.Context) -> Iterator[PolicyStore]:
    settings: _Settings = ctx.obj
    with _reported(), PolicyStore(settings.store) as store:
        yield store


def _now() -> datetime:
    return datetime.now(UTC)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _say(text: str) -> None:
    # markup=False: policy text (labels, diff tags like "[loosening]") is data, not markup.
    console.print(text, markup=False)


def _refuse_existing(path: Path | None) -> None:
    if path is not None and path.exists():
        raise StoreError(str(path), "already exists; refusing to overwrite")


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; never overwrites (exclusive create)."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError as exc:
        raise StoreError(str(path), "already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise StoreError(str(path), f"cannot write ({exc.strerror})") from exc


def _signer(key: Path, passphrase_file: Path | None) -> OfficerSigner:
    """The officer's signer: an encrypted key file, or a reference to a key in a PKCS#11 token
    (`create-key --token-config`), whose PIN comes from the token's own configuration."""
    if is_token_reference(key):
        return open_token_officer(key)
    return load_key_file(key, read_passphrase(passphrase_file))


def _pick_proposal(
    store: PolicyStore, now: datetime, version: int | None, policy_hash: str | None
) -> StoredProposal:
    if version is not None and policy_hash is not None:
        raise StoreError("proposal", "give --version or --hash, not both")
    return store.find_proposal(now=now, version=version, policy_hash=policy_hash)


# --- officer -----------------------------------------------------------------------------------


@officer_app.command("create-key")
def create_key(
    officer_id: Annotated[str, typer.Option("--id", help="Officer id, as in the policy.")],
    out: Annotated[
        Path, typer.Option("--out", help="Key file to create (mode 0600).", dir_okay=False)
    ],
    algorithm: Annotated[
        str, typer.Option("--algorithm", help=f"One of {', '.join(ALGORITHMS)}.")
    ] = "ed25519",
    passphrase_file: PassphraseOption = None,
    token_config: Annotated[
        Path | None,
        typer.Option(
            "--token-config",
            help=(
                "Generate the key inside a PKCS#11 token instead (its tessera-hsm.json from "
                "`tessera hsm init`); --out then gets a reference file, not the key."
            ),
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an officer key — an encrypted key file, or a non-extractable key in a PKCS#11
    token — and print the public key to put in the policy's officers list."""
    signer: OfficerSigner
    with _reported():
        if token_config is not None:
            if algorithm not in ("ed25519", "p256"):
                _fail(f"--algorithm {algorithm!r}: use ed25519 or p256")
            chosen: IdentityAlgorithm = "ed25519" if algorithm == "ed25519" else "p256"
            signer = create_token_officer(token_config, officer_id, out, chosen)
        else:
            signer = create_key_file(out, officer_id, algorithm, read_passphrase(passphrase_file))
    entry = {
        "id": signer.officer_id,
        "algorithm": signer.algorithm,
        "public_key": signer.public_key_hex,
    }
    if as_json:
        _echo_json({**entry, "file": str(out)})
        return
    _say(f"created {out} for officer {signer.officer_id} ({signer.algorithm})")
    _say("policy officers entry:")
    _say(
        f"  - {{id: {entry['id']}, algorithm: {entry['algorithm']}, "
        f"public_key: {entry['public_key']}}}"
    )


@officer_app.command("show-key")
def show_key(
    key: Annotated[Path, typer.Argument(help="Officer key file.", dir_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Show the officer id, algorithm and public key of a key file (no passphrase needed)."""
    with _reported():
        info = read_key_info(key)
    doc = {
        "file": str(key),
        "id": info.officer_id,
        "algorithm": info.algorithm,
        "public_key": info.public_key_hex,
    }
    if as_json:
        _echo_json(doc)
        return
    for name, value in doc.items():
        _say(f"{name:<11} {value}")


@officer_app.command("approve-policy")
def approve_policy(
    ctx: typer.Context,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    version: VersionOption = None,
    policy_hash: HashOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a proposed policy version (the open proposal, or --version / --hash)."""
    now = _now()
    with _store(ctx) as store:
        stored = _pick_proposal(store, now, version, policy_hash)
        signer = _signer(key, passphrase_file)
        result = store.sign_policy(signer, policy_hash=stored.proposal.policy_hash, now=now)
    doc = {
        "policy_hash": stored.proposal.policy_hash,
        "version": stored.proposal.version,
        "officer": signer.officer_id,
        "counted": list(result.counted),
        "needed": result.needed,
        "ready_to_activate": len(result.counted) >= result.needed,
    }
    if as_json:
        _echo_json(doc)
        return
    _say(
        f"{signer.officer_id} signed policy version {stored.proposal.version} "
        f"({stored.proposal.policy_hash[:16]}…): {len(result.counted)} of {result.needed}"
    )
    if doc["ready_to_activate"]:
        _say("quorum reached: run `tessera policy activate`")


@officer_app.command("cancel-policy")
def cancel_policy(
    ctx: typer.Context,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Vote to cancel the time-locked (not yet effective) policy version; it is cancelled once
    the freeze quorum of the version in force has signed."""
    now = _now()
    with _store(ctx) as store:
        signer = _signer(key, passphrase_file)
        result = store.sign_cancel(signer, now=now)
    doc = {
        "policy_hash": result.pending.policy_hash,
        "version": result.pending.version,
        "counted": list(result.counted),
        "needed": result.needed,
        "cancelled": result.cancelled,
    }
    if as_json:
        _echo_json(doc)
        return
    state = "cancelled" if result.cancelled else "not cancelled yet"
    _say(
        f"cancel of version {result.pending.version}: {len(result.counted)} of {result.needed} "
        f"({state})"
    )


def _decision_doc(decision: Decision) -> dict[str, Any]:
    doc = decision.to_record()
    return {
        "outcome": doc["outcome"],
        "reason": doc["reason"],
        "rule": doc["rule"],
        "policy_version": doc["policy_version"],
        "policy_hash": doc["policy_hash"],
        "approval": doc["approval"],
        "limits": doc["limits"],
        "explanation": doc["explanation"],
    }


def _print_decision(decision: Decision) -> None:
    _say(
        f"{decision.outcome}: request {decision.request_id} under policy version "
        f"{decision.policy_version} ({decision.policy_hash[:16]}…)"
    )
    if decision.rule is not None:
        _say(f"rule: {decision.rule}")
    for line in decision.explanation:
        _say(f"  - {line}")


def _withdrawal(
    ctx: typer.Context,
    request: Path,
    key: Path,
    passphrase_file: Path | None,
    decision: Literal["approve", "reject"],
    *,
    expires_in: int,
    reason: str | None,
    out: Path | None,
    as_json: bool,
) -> None:
    now = _now()
    with _store(ctx) as store:
        _refuse_existing(out)
        intent = load_intent(request)
        signer = _signer(key, passphrase_file)
        result = store.decide_withdrawal(
            signer,
            intent,
            decision=decision,
            now=now,
            lifetime=timedelta(seconds=expires_in),
            reason=reason,
        )
        if out is not None:
            _write_new(out, json.dumps(result.approval.to_json_object(), indent=2) + "\n")
    doc = {
        "request_id": intent.request_id,
        "officer": signer.officer_id,
        "decision": decision,
        "status": result.status,
        "approvals_counted": list(result.counted),
        "approval": result.approval.to_json_object(),
        "evaluation": _decision_doc(result.decision),
    }
    if as_json:
        _echo_json(doc)
        return
    verb = "approved" if decision == "approve" else "rejected"
    _say(
        f"{signer.officer_id} {verb} request {intent.request_id} "
        f"(valid until {timestamp_str(result.approval.expires_at)}); request is {result.status}"
    )
    if out is not None:
        _say(f"signed {'approval' if decision == 'approve' else 'rejection'} written to {out}")
    _print_decision(result.decision)


ExpiresOption = Annotated[
    int,
    typer.Option(
        "--expires-in",
        min=1,
        max=7 * 86400,
        help="Seconds the signed statement stays valid (at most 7 days).",
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Also write the signed statement to this file.", dir_okay=False),
]
RequestArgument = Annotated[
    Path, typer.Argument(help="Withdrawal request file (YAML or JSON intent).", dir_okay=False)
]


@officer_app.command("approve-withdrawal")
def approve_withdrawal(
    ctx: typer.Context,
    request: RequestArgument,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    expires_in: ExpiresOption = 3600,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign an approval of a pending withdrawal (request file) bound to its request id,
    transaction digest and the policy version in force; print the resulting decision."""
    _withdrawal(
        ctx,
        request,
        key,
        passphrase_file,
        "approve",
        expires_in=expires_in,
        reason=None,
        out=out,
        as_json=as_json,
    )


@officer_app.command("reject-withdrawal")
def reject_withdrawal(
    ctx: typer.Context,
    request: RequestArgument,
    key: KeyOption,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    passphrase_file: PassphraseOption = None,
    expires_in: ExpiresOption = 3600,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a rejection of a withdrawal (request file); the request is closed."""
    _withdrawal(
        ctx,
        request,
        key,
        passphrase_file,
        "reject",
        expires_in=expires_in,
        reason=reason,
        out=out,
        as_json=as_json,
    )


def _freeze(
    ctx: typer.Context,
    action: Literal["freeze", "unfreeze"],
    wallet: str,
    key: Path,
    passphrase_file: Path | None,
    reason: str | None,
    as_json: bool,
) -> None:
    now = _now()
    with _store(ctx) as store:
        signer = _signer(key, passphrase_file)
        result = store.sign_freeze(signer, action, wallet, reason=reason, now=now)
    doc = {
        "wallet": wallet,
        "action": action,
        "order_id": result.order.order_id(),
        "counted": list(result.counted),
        "needed": result.needed,
        "applied": result.applied,
    }
    if as_json:
        _echo_json(doc)
        return
    if result.applied:
        done = "frozen" if action == "freeze" else "unfrozen"
        _say(f"wallet {wallet} {done} (signed by {', '.join(result.counted)})")
    else:
        _say(
            f"{action} of wallet {wallet}: {len(result.counted)} of {result.needed} signatures;"
            " waiting for more officers"
        )


WalletArgument = Annotated[str, typer.Argument(help="Wallet id, as in the policy.")]


@officer_app.command("freeze")
def freeze(
    ctx: typer.Context,
    wallet: WalletArgument,
    key: KeyOption,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    passphrase_file: PassphraseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a freeze of a wallet; it applies at once when the freeze quorum has signed."""
    _freeze(ctx, "freeze", wallet, key, passphrase_file, reason, as_json)


@officer_app.command("unfreeze")
def unfreeze(
    ctx: typer.Context,
    wallet: WalletArgument,
    key: KeyOption,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    passphrase_file: PassphraseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign an unfreeze of a wallet; it applies when the full quorum has signed."""
    _freeze(ctx, "unfreeze", wallet, key, passphrase_file, reason, as_json)


# --- policy ------------------------------------------------------------------------------------


@policy_app.command("propose")
def propose(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Policy file (YAML or JSON).", dir_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Record a policy file as a proposal for the next version; officers then sign it."""
    now = _now()
    with _store(ctx) as store:
        document = load_policy(file)
        stored = store.propose(document, source=str(file), now=now)
    doc = {
        "policy_hash": stored.proposal.policy_hash,
        "version": stored.proposal.version,
        "previous": stored.proposal.document.previous,
        "state": stored.state,
    }
    if as_json:
        _echo_json(doc)
        return
    _say(f"proposed policy version {doc['version']}: {doc['policy_hash']}")
    _say("officers sign it with `tessera officer approve-policy --key FILE`")


def _resolve(store: PolicyStore, ref: str, now: datetime) -> tuple[PolicyDocument, str]:
    """A version number (activated, else its open proposal) or a hash prefix."""
    if ref.isdigit():
        number = int(ref)
        for link in reversed(store.chain()):
            if link.version == number and not link.cancelled:
                state = "active" if link.in_force_at(now) else "time-locked"
                return link.document, state
        stored = store.find_proposal(now=now, version=number)
        return stored.proposal.document, stored.state
    stored = store.find_proposal(now=now, policy_hash=ref.lower())
    return stored.proposal.document, stored.state


def _summary_lines(document: PolicyDocument) -> list[str]:
    obj = document.canonical_object()
    gov = obj["governance"]
    lines = [
        f"version {obj['version']}  hash {document.policy_hash()}",
        f"previous {obj['previous'] or '(genesis)'}",
    ]
    if obj.get("description"):
        lines.append(f"description: {obj['description']}")
    lines.append(
        f"governance: quorum {gov['quorum']} of {len(obj['officers'])}, freeze quorum "
        f"{gov['freeze_quorum']}, loosening time lock {gov['loosening_timelock_seconds']} s"
    )
    lines.append("officers:")
    lines += [f"  {o['id']} ({o['algorithm']}) {o['public_key']}" for o in obj["officers"]]
    if obj["groups"]:
        lines.append("approver groups:")
        lines += [f"  {name}: {', '.join(m)}" for name, m in obj["groups"].items()]
    lines.append("wallets:")
    for wallet in obj["wallets"]:
        chains = "any chain" if wallet["chains"] is None else f"chains {wallet['chains']}"
        lines.append(f"  {wallet['id']} ({wallet['tier']}, {chains})")
    for name, entries in obj["whitelists"].items():
        lines.append(f"whitelist {name}: {len(entries)} entries")
        for entry in entries:
            delay = entry.get("activation_delay_seconds") or 0
            extra = f", active {delay} s after {entry['added_at']}" if delay else ""
            lines.append(
                f"  {entry['address']} chain {entry['chain_id']} ({entry['label']}{extra})"
            )
    lines.append(f"blacklist: {len(obj['blacklist'])} entries")
    lines.append("rules (first match wins, then default deny):")
    for index, rule in enumerate(obj["rules"], start=1):
        match = {k: v for k, v in rule["match"].items() if v not in (None, "any")}
        criteria = ", ".join(f"{k}={json.dumps(v)}" for k, v in match.items()) or "anything"
        action = rule["action"]
        if rule.get("approvals"):
            action += f" ({rule['approvals']['k']} of {rule['approvals']['group']})"
        lines.append(f"  {index}. {rule['id']}: {criteria} → {action}")
    if obj["velocity_limits"]:
        lines.append("velocity limits:")
        for limit in obj["velocity_limits"]:
            scope = f"wallet {limit['wallet']}" if limit.get("wallet") else f"tier {limit['tier']}"
            lines.append(
                f"  {limit['id']}: {scope}, at most {limit['max_amount']} {limit['asset']} per "
                f"{limit['window_seconds']} s"
            )
    return lines


@policy_app.command("show")
def show(
    ctx: typer.Context,
    version: Annotated[
        str | None,
        typer.Argument(help="Version number or hash prefix (default: the version in force)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a policy version in human-readable form (or its canonical JSON with --json)."""
    now = _now()
    with _store(ctx) as store:
        if version is None:
            document, state = store.in_force(now=now).document, "active"
        else:
            document, state = _resolve(store, version, now)
    if as_json:
        _echo_json(
            {
                "policy_hash": document.policy_hash(),
                "state": state,
                "document": document.canonical_object(),
            }
        )
        return
    _say(f"[{state}]")
    for line in _summary_lines(document):
        _say(line)


@policy_app.command("diff")
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="Old version number or hash prefix.")],
    new: Annotated[str, typer.Argument(help="New version number or hash prefix.")],
    as_json: JsonOption = False,
) -> None:
    """Show what changed between two versions; loosening changes are marked (they wait for
    the time lock)."""
    now = _now()
    with _store(ctx) as store:
        before, _ = _resolve(store, old, now)
        after, _ = _resolve(store, new, now)
    result = diff_policies(before, after)
    if as_json:
        _echo_json(result.to_record())
        return
    for line in result.lines:
        _say(line)
    if result.loosening:
        _say(f"{len(result.loosening)} loosening change(s): subject to the time lock")


@policy_app.command("activate")
def activate_cmd(
    ctx: typer.Context,
    version: VersionOption = None,
    policy_hash: HashOption = None,
    as_json: JsonOption = False,
) -> None:
    """Activate a proposal once the officers who decide (those of the version in force) have
    signed it in quorum."""
    now = _now()
    with _store(ctx) as store:
        stored = _pick_proposal(store, now, version, policy_hash)
        link = store.activate(policy_hash=stored.proposal.policy_hash, now=now)
    doc = {
        "policy_hash": link.policy_hash,
        "version": link.version,
        "signed_by": list(link.signed_by),
        "activated_at": timestamp_str(link.activated_at),
        "effective_at": timestamp_str(link.effective_at),
        "loosening": list(link.loosening),
        "time_locked": link.effective_at > link.activated_at,
    }
    if as_json:
        _echo_json(doc)
        return
    _say(f"policy version {link.version} activated (signed by {', '.join(link.signed_by)})")
    if doc["time_locked"]:
        _say(f"it loosens the policy; in force from {doc['effective_at']} (time lock):")
        for line in link.loosening:
            _say(f"  - {line}")
    else:
        _say("in force now")


def _status_doc(store: PolicyStore, now: datetime) -> dict[str, Any]:
    chain = store.chain()
    live = [link for link in chain if not link.cancelled]
    in_force = next((link for link in reversed(chain) if link.in_force_at(now)), None)
    pending = live[-1] if live and live[-1].effective_at > now else None
    proposals = []
    for stored in store.proposals(now=now):
        if stored.state != "proposed":
            continue
        deciding = live[-1].document if live else stored.proposal.document
        counted, _ = count_signatures(
            deciding,
            Purpose.POLICY_ACTIVATION,
            stored.proposal.statement(),
            stored.signatures,
        )
        proposals.append(
            {
                "policy_hash": stored.proposal.policy_hash,
                "version": stored.proposal.version,
                "source": stored.source,
                "signed_by": list(counted),
                "needed": deciding.governance.quorum,
            }
        )
    records = store.audit_records()
    return {
        "store": str(store.path),
        "in_force": None
        if in_force is None
        else {
            "version": in_force.version,
            "policy_hash": in_force.policy_hash,
            "effective_at": timestamp_str(in_force.effective_at),
        },
        "time_locked": None
        if pending is None
        else {
            "version": pending.version,
            "policy_hash": pending.policy_hash,
            "effective_at": timestamp_str(pending.effective_at),
            "loosening": list(pending.loosening),
        },
        "proposals": proposals,
        "frozen_wallets": sorted(store.freeze_state().frozen_wallets()),
        "open_freeze_orders": [
            {
                "action": order.action,
                "wallet": order.wallet,
                "signed_by": list(officers),
            }
            for order, officers in store.open_freeze_orders()
        ],
        "pending_requests": [
            {
                "request_id": request.intent.request_id,
                "wallet": request.intent.wallet,
                "amount": amount_str(request.intent.amount),
                "asset": request.intent.asset,
                "approvals": sorted({a.officer for a in request.approvals}),
            }
            for request in store.requests()
            if request.status == "pending"
        ],
        "audit": {
            "records": len(records),
            "head": records[-1].hash if records else None,
        },
    }


@policy_app.command("status")
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The version in force, time-locked and proposed versions with their signatures, frozen
    wallets, pending withdrawals, the audit-log head."""
    now = _now()
    with _store(ctx) as store:
        doc = _status_doc(store, now)
    if as_json:
        _echo_json(doc)
        return
    in_force = doc["in_force"]
    if in_force is None:
        _say("no policy version in force (propose and activate a version 1)")
    else:
        _say(f"in force: version {in_force['version']} ({in_force['policy_hash']})")
    if doc["time_locked"]:
        locked = doc["time_locked"]
        _say(f"time-locked: version {locked['version']} until {locked['effective_at']}")
    for proposal in doc["proposals"]:
        _say(
            f"proposed: version {proposal['version']} ({proposal['policy_hash'][:16]}…) "
            f"signed {len(proposal['signed_by'])} of {proposal['needed']}: "
            f"{', '.join(proposal['signed_by']) or 'nobody yet'}"
        )
    _say(f"frozen wallets: {', '.join(doc['frozen_wallets']) or 'none'}")
    for order in doc["open_freeze_orders"]:
        _say(f"open {order['action']} of {order['wallet']}: {', '.join(order['signed_by'])}")
    if doc["pending_requests"]:
        table = Table(title="pending withdrawals")
        for column in ("request", "wallet", "amount", "approvals"):
            table.add_column(column)
        for request in doc["pending_requests"]:
            table.add_row(
                request["request_id"],
                request["wallet"],
                f"{request['amount']} {request['asset']}",
                ", ".join(request["approvals"]),
            )
        console.print(table)
    audit = doc["audit"]
    _say(f"audit log: {audit['records']} records, head {audit['head'] or '-'}")


@policy_app.command("simulate")
def simulate(
    ctx: typer.Context,
    intent_file: Annotated[
        Path,
        typer.Option("--intent", help="Withdrawal request file (YAML or JSON).", dir_okay=False),
    ],
    version: VersionOption = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Evaluate at this RFC 3339 time (default: now).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate a withdrawal against a version (default: the one in force) exactly as a node
    would, with the approvals already recorded, and explain the decision.  Changes nothing."""
    with _store(ctx) as store:
        try:
            now = _now() if at is None else parse_timestamp(at)
        except ValueError as exc:
            raise StoreError("--at", str(exc)) from exc
        intent = load_intent(intent_file)
        decision = store.simulate(intent, now=now, version=version)
    if as_json:
        _echo_json({"request_id": intent.request_id, **_decision_doc(decision)})
        return
    _print_decision(decision)
    _say("velocity limits evaluated against an empty ledger (nodes use their own)")


# --- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoint file kept outside the store (detects truncation).",
            dir_okay=False,
        ),
    ] = None,
    head_seq: Annotated[
        int | None, typer.Option("--head-seq", min=1, help="Trusted head: record number.")
    ] = None,
    head_hash: Annotated[
        str | None, typer.Option("--head-hash", help="Trusted head: that record's hash.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Verify this JSONL export instead of the store's log.", dir_okay=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify the hash chain and every checkpoint signature; report the first position where
    the log was edited, cut, extended or reordered."""
    with _store(ctx) as store:
        head: Checkpoint | TrustedHead | None = None
        if checkpoint is not None and (head_seq is not None or head_hash is not None):
            raise StoreError("audit verify", "give --checkpoint or --head-seq/--head-hash")
        if checkpoint is not None:
            head = load_checkpoint(checkpoint)
        elif head_seq is not None or head_hash is not None:
            if head_seq is None or head_hash is None:
                raise StoreError("audit verify", "--head-seq and --head-hash go together")
            head = TrustedHead(head_seq, head_hash.lower())
        if file is None:
            report = store.verify_audit(head=head)
        else:
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise AuditFormatError(str(file), None, f"cannot read ({exc.strerror})") from exc
            records = parse_jsonl(text, str(file))
            report = verify_log(records, trusted_keys=store.trusted_keys(), head=head)
    if as_json:
        _echo_json(report.to_json_object())
        return
    _say(
        f"audit log OK: {report.records} records, {report.checkpoints} signed checkpoint(s), "
        f"head seq {report.head_seq} {report.head_hash}"
    )
    if report.trusted_head_seq is not None:
        _say(f"matches the trusted head at seq {report.trusted_head_seq}")
    else:
        _say("no external head given: truncation of the newest records cannot be ruled out")


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the signed checkpoint here (keep it elsewhere).", dir_okay=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Sign the newest audit record and append the checkpoint to the log."""
    now = _now()
    with _store(ctx) as store:
        _refuse_existing(out)
        signer = _signer(key, passphrase_file)
        checkpoint = store.checkpoint(signer, now=now)
        if out is not None:
            _write_new(out, json.dumps(checkpoint.model_dump(), indent=2) + "\n")
    if as_json:
        _echo_json(checkpoint.model_dump())
        return
    _say(f"checkpoint by {checkpoint.signer} over seq {checkpoint.seq} ({checkpoint.head})")
    if out is not None:
        _say(f"written to {out}")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl (exact, verifiable) or csv (spreadsheets).")
    ] = "jsonl",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write to this file instead of stdout.", dir_okay=False),
    ] = None,
) -> None:
    """Export the audit log as JSONL or CSV."""
    with _store(ctx) as store:
        if fmt not in ("jsonl", "csv"):
            raise StoreError("--format", f"{fmt!r} is not jsonl or csv")
        text = export_text(store.audit_records(), fmt)
        if out is None:
            typer.echo(text, nl=False)
        else:
            _write_new(out, text)
            errors.print(f"wrote {out}", markup=False)
