"""What each officer command does: on files and the local store, returning one JSON-ready
document per command (`policies.cli` parses the command line, `policies.render` prints).

Every function raises a typed `TesseraError` naming what failed (`UsageError` for option values
that only make sense checked here); none prints.  The store must exist except for
`init_policy`, the one explicit creation: a mistyped ``--store`` path is refused, not silently
turned into an empty store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from hsm.identity import IdentityAlgorithm
from hsm.officer import create_token_officer, is_token_reference, open_token_officer
from policies import drafts
from policies.audit import Checkpoint, TrustedHead, export_text, load_checkpoint, parse_jsonl
from policies.audit import verify_log as verify_audit_log
from policies.diff import diff_policies
from policies.document import (
    PolicyDocument,
    amount_str,
    load_policy,
    parse_timestamp,
    timestamp_str,
)
from policies.errors import AuditFormatError, StoreError, StoreNotFoundError, UsageError
from policies.evaluator import Decision
from policies.governance import KeyPlan, count_signatures, sign_key_plan
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
from policies.locations import STARTER
from policies.store import PolicyStore, StoredProposal, VersionRef
from policies.structured import read_structured_file

Progress = Callable[[str], AbstractContextManager[Any]]
Doc = dict[str, Any]


def _quiet(_what: str) -> AbstractContextManager[Any]:
    return nullcontext()


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- shared ------------------------------------------------------------------------------------

# Hash prefixes shorter than this would too often be ambiguous; all-digit references shorter
# than _HASH_DIGITS are version numbers (a version number with 8 digits is not a real chain).
_MIN_PREFIX = 4
_HASH_DIGITS = 8
_HEX = re.compile(r"[0-9a-f]+")


def parse_version_ref(text: str, option: str = "--version") -> VersionRef:
    """A version as the officer wrote it: a number (``3``) or a hash or hash prefix."""
    ref = text.strip().lower()
    if ref.isdigit() and len(ref) < _HASH_DIGITS:
        number = int(ref)
        if number < 1:
            raise UsageError(option, f"{text!r}: version numbers start at 1")
        return number
    if _HEX.fullmatch(ref) and _MIN_PREFIX <= len(ref) <= 64:
        return ref
    raise UsageError(
        option, f"{text!r} is neither a version number nor a policy hash (prefix of 4+ hex)"
    )


def open_store(path: Path, *, create: bool = False) -> PolicyStore:
    """The store at ``path``; only with ``create`` may the file be new."""
    if not create and path.parent.is_dir() and not path.exists():
        raise StoreNotFoundError(str(path))
    return PolicyStore(path)


def _signer(key: Path, passphrase_file: Path | None, progress: Progress) -> OfficerSigner:
    """The officer's signer: an encrypted key file, or a reference to a key in a PKCS#11 token
    (`create-key --config`), whose PIN comes from the token's own configuration."""
    if is_token_reference(key):
        return open_token_officer(key)
    passphrase = read_passphrase(passphrase_file)
    with progress(f"unlocking {key} (scrypt)…"):
        return load_key_file(key, passphrase)


def _proposal(store: PolicyStore, now: datetime, ref: VersionRef | None) -> StoredProposal:
    if isinstance(ref, str):
        return store.find_proposal(now=now, policy_hash=ref)
    return store.find_proposal(now=now, version=ref)


def pick_ref(version: str | None, policy_hash: str | None) -> VersionRef | None:
    """``--version`` (number or hash) or the older ``--hash`` spelling, not both."""
    if version is not None and policy_hash is not None:
        raise UsageError("--version/--hash", "give one of them, not both")
    if policy_hash is not None:
        prefix = policy_hash.strip().lower()
        if not (_HEX.fullmatch(prefix) and _MIN_PREFIX <= len(prefix) <= 64):
            raise UsageError("--hash", f"{policy_hash!r} is not a policy hash (prefix of 4+ hex)")
        return prefix
    return None if version is None else parse_version_ref(version)


def decision_doc(decision: Decision) -> Doc:
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


# --- officer -----------------------------------------------------------------------------------


def create_key(
    officer_id: str,
    out: Path,
    algorithm: str,
    passphrase_file: Path | None,
    hsm_config: Path | None,
    progress: Progress = _quiet,
) -> Doc:
    if algorithm not in ALGORITHMS:
        raise UsageError(
            "--algorithm", f"unknown algorithm {algorithm!r}; use {' or '.join(ALGORITHMS)}"
        )
    signer: OfficerSigner
    if hsm_config is not None:
        chosen: IdentityAlgorithm = "ed25519" if algorithm == "ed25519" else "p256"
        signer = create_token_officer(hsm_config, officer_id, out, chosen)
    else:
        passphrase = read_passphrase(passphrase_file)
        with progress(f"creating {out} (scrypt key derivation)…"):
            signer = create_key_file(out, officer_id, algorithm, passphrase)
    return {
        "id": signer.officer_id,
        "algorithm": signer.algorithm,
        "public_key": signer.public_key_hex,
        "file": str(out),
    }


def show_key(key: Path) -> Doc:
    info = read_key_info(key)
    return {
        "file": str(key),
        "id": info.officer_id,
        "algorithm": info.algorithm,
        "public_key": info.public_key_hex,
    }


def approve_policy(
    store_path: Path,
    key: Path,
    passphrase_file: Path | None,
    ref: VersionRef | None,
    progress: Progress = _quiet,
) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        stored = _proposal(store, now, ref)
        signer = _signer(key, passphrase_file, progress)
        result = store.sign_policy(signer, policy_hash=stored.proposal.policy_hash, now=now)
    return {
        "policy_hash": stored.proposal.policy_hash,
        "version": stored.proposal.version,
        "officer": signer.officer_id,
        "counted": list(result.counted),
        "needed": result.needed,
        "ready_to_activate": len(result.counted) >= result.needed,
    }


def cancel_policy(
    store_path: Path, key: Path, passphrase_file: Path | None, progress: Progress = _quiet
) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        signer = _signer(key, passphrase_file, progress)
        result = store.sign_cancel(signer, now=now)
    return {
        "policy_hash": result.pending.policy_hash,
        "version": result.pending.version,
        "counted": list(result.counted),
        "needed": result.needed,
        "cancelled": result.cancelled,
    }


def approve_plan(
    store_path: Path,
    key: Path,
    passphrase_file: Path | None,
    plan_file: Path,
    progress: Progress = _quiet,
) -> Doc:
    """The officer's signature on a re-share or refresh plan (`policies.governance.KeyPlan`),
    refused unless the plan names the version in force and a wallet of it."""
    now = now_utc()
    obj = read_structured_file(plan_file)
    try:
        plan = KeyPlan.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "$"
        raise StoreError(str(plan_file), f"not a key plan: {where}: {first['msg']}") from None
    with open_store(store_path) as store:
        in_force = store.in_force(now=now)
        if plan.policy_hash != in_force.policy_hash:
            raise StoreError(
                str(plan_file),
                f"the plan names policy {plan.policy_hash[:16]}…, not version "
                f"{in_force.version} in force ({in_force.policy_hash[:16]}…)",
            )
        if in_force.document.wallet(plan.wallet) is None:
            raise StoreError(str(plan_file), f"{plan.wallet!r} is not a wallet of the policy")
        signer = _signer(key, passphrase_file, progress)
    signature = sign_key_plan(signer, plan)
    return {
        "officer": signer.officer_id,
        "plan": plan.statement(),
        "signature": signature.model_dump(mode="json"),
        "needed": in_force.document.governance.quorum,
    }


def decide_withdrawal(
    store_path: Path,
    request: Path,
    key: Path,
    passphrase_file: Path | None,
    decision: Literal["approve", "reject"],
    *,
    expires_in: int,
    reason: str | None,
    out: Path | None,
    progress: Progress = _quiet,
) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        drafts.refuse_existing(out)
        intent = load_intent(request)
        signer = _signer(key, passphrase_file, progress)
        result = store.decide_withdrawal(
            signer,
            intent,
            decision=decision,
            now=now,
            lifetime=timedelta(seconds=expires_in),
            reason=reason,
        )
        if out is not None:
            drafts.write_new(out, json.dumps(result.approval.to_json_object(), indent=2) + "\n")
    return {
        "request_id": intent.request_id,
        "officer": signer.officer_id,
        "decision": decision,
        "status": result.status,
        "approvals_counted": list(result.counted),
        "approval": result.approval.to_json_object(),
        "evaluation": decision_doc(result.decision),
    }


def freeze(
    store_path: Path,
    action: Literal["freeze", "unfreeze"],
    wallet: str,
    key: Path,
    passphrase_file: Path | None,
    reason: str | None,
    progress: Progress = _quiet,
) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        signer = _signer(key, passphrase_file, progress)
        result = store.sign_freeze(signer, action, wallet, reason=reason, now=now)
    return {
        "wallet": wallet,
        "action": action,
        "order_id": result.order.order_id(),
        "counted": list(result.counted),
        "needed": result.needed,
        "applied": result.applied,
    }


# --- policy versions ---------------------------------------------------------------------------


def propose(store_path: Path, file: Path) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        document = load_policy(file)
        stored = store.propose(document, source=str(file), now=now)
    return {
        "policy_hash": stored.proposal.policy_hash,
        "version": stored.proposal.version,
        "previous": stored.proposal.document.previous,
        "state": stored.state,
    }


def _resolve(store: PolicyStore, ref: VersionRef, now: datetime) -> tuple[PolicyDocument, str]:
    """A version number (activated, else its open proposal) or a hash prefix."""
    if isinstance(ref, int):
        for link in reversed(store.chain()):
            if link.version == ref and not link.cancelled:
                state = "active" if link.in_force_at(now) else "time-locked"
                return link.document, state
    stored = _proposal(store, now, ref)
    return stored.proposal.document, stored.state


def show(store_path: Path, ref: VersionRef | None) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        if ref is None:
            document, state = store.in_force(now=now).document, "active"
        else:
            document, state = _resolve(store, ref, now)
    return {
        "policy_hash": document.policy_hash(),
        "state": state,
        "document": document.canonical_object(),
    }


def diff(store_path: Path, old: VersionRef, new: VersionRef) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        before, _ = _resolve(store, old, now)
        after, _ = _resolve(store, new, now)
    return diff_policies(before, after).to_record()


def activate(store_path: Path, ref: VersionRef | None) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        stored = _proposal(store, now, ref)
        link = store.activate(policy_hash=stored.proposal.policy_hash, now=now)
    return {
        "policy_hash": link.policy_hash,
        "version": link.version,
        "signed_by": list(link.signed_by),
        "activated_at": timestamp_str(link.activated_at),
        "effective_at": timestamp_str(link.effective_at),
        "loosening": list(link.loosening),
        "time_locked": link.effective_at > link.activated_at,
    }


def status(store_path: Path) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
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
        frozen = sorted(store.freeze_state().frozen_wallets())
        orders = store.open_freeze_orders()
        requests = store.requests()
    return {
        "store": str(store_path),
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
        "frozen_wallets": frozen,
        "open_freeze_orders": [
            {"action": order.action, "wallet": order.wallet, "signed_by": list(officers)}
            for order, officers in orders
        ],
        "pending_requests": [
            {
                "request_id": request.intent.request_id,
                "wallet": request.intent.wallet,
                "amount": amount_str(request.intent.amount),
                "asset": request.intent.asset,
                "approvals": sorted({a.officer for a in request.approvals}),
            }
            for request in requests
            if request.status == "pending"
        ],
        "audit": {"records": len(records), "head": records[-1].hash if records else None},
    }


def simulate(store_path: Path, intent_file: Path, ref: VersionRef | None, at: str | None) -> Doc:
    try:
        now = now_utc() if at is None else parse_timestamp(at)
    except ValueError as exc:
        raise UsageError("--at", str(exc)) from exc
    with open_store(store_path) as store:
        intent = load_intent(intent_file)
        decision = store.simulate(intent, now=now, version=ref)
    return {"request_id": intent.request_id, **decision_doc(decision)}


# --- policy files ------------------------------------------------------------------------------


def init_policy(file: Path | None, store_path: Path, example_name: str = STARTER) -> Doc:
    """Write a starter policy (a shipped example) to ``file`` and create the store if absent;
    checks everything before creating either."""
    text = drafts.starter_text(example_name)
    drafts.refuse_existing(file)
    existed = store_path.exists()
    open_store(store_path, create=True).close()
    if file is not None:
        drafts.write_new(file, text)
    return {
        "store": str(store_path),
        "store_created": not existed,
        "policy_file": None if file is None else str(file),
        "example": example_name,
    }


def next_version_from_store(out: Path, store_path: Path) -> Doc:
    """The version after the store's chain head (the newest activated, not cancelled)."""
    drafts.refuse_existing(out)
    with open_store(store_path) as store:
        live = [link for link in store.chain() if not link.cancelled]
    if not live:
        raise StoreError(str(store_path), "has no activated version to build on")
    base = live[-1].document
    return drafts.write_next_version(out, base, f"{store_path} (version {base.version})", None)


# --- audit -------------------------------------------------------------------------------------


def audit_verify(
    store_path: Path,
    checkpoint: Path | None,
    head_seq: int | None,
    head_hash: str | None,
    file: Path | None,
    progress: Progress = _quiet,
) -> Doc:
    head: Checkpoint | TrustedHead | None = None
    if checkpoint is not None and (head_seq is not None or head_hash is not None):
        raise UsageError("--checkpoint", "give --checkpoint or --head-seq/--head-hash, not both")
    if (head_seq is None) != (head_hash is None):
        raise UsageError("--head-seq/--head-hash", "they go together")
    with open_store(store_path) as store:
        if checkpoint is not None:
            head = load_checkpoint(checkpoint)
        elif head_seq is not None and head_hash is not None:
            head = TrustedHead(head_seq, head_hash.lower())
        with progress("verifying the audit log…"):
            if file is None:
                report = store.verify_audit(head=head)
            else:
                try:
                    text = file.read_text(encoding="utf-8")
                except OSError as exc:
                    raise AuditFormatError(
                        str(file), None, f"cannot read ({exc.strerror})"
                    ) from exc
                records = parse_jsonl(text, str(file))
                report = verify_audit_log(records, trusted_keys=store.trusted_keys(), head=head)
    return report.to_json_object()


def audit_checkpoint(
    store_path: Path,
    key: Path,
    passphrase_file: Path | None,
    out: Path | None,
    progress: Progress = _quiet,
) -> Doc:
    now = now_utc()
    with open_store(store_path) as store:
        drafts.refuse_existing(out)
        signer = _signer(key, passphrase_file, progress)
        checkpoint = store.checkpoint(signer, now=now)
        if out is not None:
            drafts.write_new(out, json.dumps(checkpoint.model_dump(), indent=2) + "\n")
    return checkpoint.model_dump()


def audit_export(store_path: Path, fmt: str) -> str:
    if fmt not in ("jsonl", "csv"):
        raise UsageError("--format", f"{fmt!r} is not jsonl or csv")
    with open_store(store_path) as store:
        return export_text(store.audit_records(), fmt)
