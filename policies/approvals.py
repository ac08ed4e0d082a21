"""Officer approvals of withdrawals: signed statements bound to one request, one transaction and
one policy version, valid in a time window, used once.

The statement an officer signs (purpose ``withdrawal-approval``, see `policies.keys`)::

    {"officer", "decision": "approve" | "reject", "request_id", "intent_digest" (hex of
     TransactionIntent.digest()), "policy_hash", "not_before", "expires_at" (RFC 3339 UTC),
     "nonce" (16 random bytes, hex), "reason" (text or null)}

`verify_approval` checks one approval and raises the `ApprovalError` subclass of the first failed
check, in this order: bound to this request / transaction / policy version; signer is an officer
of that version; signature; validity window; not yet valid; expired; nonce replayed; initiator
approving their own request; member of the approver group (when one is asked for).

`check_approvals` (and `verify_approvals`, which returns just the accepted set) never raises for
a bad approval: a node must ignore an invalid extra approval — a compromised coordinator could
otherwise block a legitimate withdrawal by attaching junk — but must never count it.  Bad ones are
reported in ``ApprovalCheck.problems``; an officer approving twice counts once; a nonce used twice
in one batch is a replay.  A valid ``reject`` statement is never counted as an approval: it is
reported in ``rejected_by`` so the caller can close the request.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from policies.document import (
    Identifier,
    Label,
    PolicyDocument,
    Timestamp,
    schema_error_from,
    timestamp_str,
)
from policies.errors import (
    ApprovalBindingError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalFormatError,
    ApprovalGroupError,
    ApprovalNotYetValidError,
    ApprovalOfficerError,
    ApprovalReplayError,
    ApprovalSignatureError,
    ApprovalWindowError,
    PolicySchemaError,
    SelfApprovalError,
    UnknownOfficerError,
)
from policies.intent import RequestId
from policies.keys import OfficerSigner, Purpose, sign_statement, verify_statement

# An approval is a bearer token for one withdrawal; a week covers a cold-wallet ceremony and
# keeps a leaked approval from living forever.
MAX_APPROVAL_LIFETIME = timedelta(days=7)
DEFAULT_APPROVAL_LIFETIME = timedelta(hours=1)

Decision = Literal["approve", "reject"]


class ApprovableIntent(Protocol):
    """What approvals bind to (`policies.intent.TransactionIntent` satisfies it)."""

    @property
    def request_id(self) -> str: ...

    @property
    def initiator(self) -> str: ...

    def digest(self) -> bytes: ...


def _hex_of(length: int, what: str) -> Any:
    pattern = re.compile(f"[0-9a-f]{{{length}}}")

    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise PydanticCustomError(
                "approval", "{what} is {n} lowercase hex digits", {"what": what, "n": length}
            )
        return value

    return PlainValidator(check)


class Approval(BaseModel):
    """One officer's signed decision on one withdrawal request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    officer: Identifier
    decision: Decision
    request_id: RequestId
    intent_digest: Annotated[str, _hex_of(64, "intent_digest")]
    policy_hash: Annotated[str, _hex_of(64, "policy_hash")]
    not_before: Timestamp
    expires_at: Timestamp
    nonce: Annotated[str, _hex_of(32, "nonce")]
    reason: Label | None = None
    signature: Annotated[str, _hex_of(128, "signature")]

    def statement(self) -> dict[str, Any]:
        """What the officer signed (everything but the signature)."""
        return {
            "officer": self.officer,
            "decision": self.decision,
            "request_id": self.request_id,
            "intent_digest": self.intent_digest,
            "policy_hash": self.policy_hash,
            "not_before": timestamp_str(self.not_before),
            "expires_at": timestamp_str(self.expires_at),
            "nonce": self.nonce,
            "reason": self.reason,
        }

    def to_json_object(self) -> dict[str, Any]:
        return {**self.statement(), "signature": self.signature}


def sign_approval(
    signer: OfficerSigner,
    intent: ApprovableIntent,
    policy: PolicyDocument,
    *,
    now: datetime,
    lifetime: timedelta = DEFAULT_APPROVAL_LIFETIME,
    decision: Decision = "approve",
    reason: str | None = None,
) -> Approval:
    """``signer``'s decision on ``intent`` under ``policy``, valid from ``now`` (whole seconds)
    for ``lifetime``, with a fresh random nonce."""
    start = now.replace(microsecond=0)
    draft = {
        "officer": signer.officer_id,
        "decision": decision,
        "request_id": intent.request_id,
        "intent_digest": intent.digest().hex(),
        "policy_hash": policy.policy_hash(),
        "not_before": timestamp_str(start),
        "expires_at": timestamp_str(start + lifetime),
        "nonce": secrets.token_hex(16),
        "reason": reason,
        "signature": "00" * 64,
    }
    unsigned = parse_approval(draft, "new approval")
    _check_window(unsigned)
    signature = sign_statement(signer, Purpose.APPROVAL, unsigned.statement())
    return unsigned.model_copy(update={"signature": signature.hex()})


def parse_approval(obj: object, source: str = "<approval>") -> Approval:
    """Validate an approval object; `ApprovalFormatError` names the field."""
    if not isinstance(obj, Mapping):
        raise ApprovalFormatError(source, "$", "an approval is a mapping of fields")
    try:
        return Approval.model_validate(dict(obj))
    except ValidationError as exc:
        error: PolicySchemaError = schema_error_from(exc, source=source)
        raise ApprovalFormatError(source, error.path, error.reason) from None


def load_approval(path: Path) -> Approval:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ApprovalFormatError(str(path), "$", f"cannot read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ApprovalFormatError(str(path), "$", f"not JSON (line {exc.lineno})") from exc
    return parse_approval(obj, str(path))


def _check_window(approval: Approval) -> None:
    if approval.expires_at <= approval.not_before:
        raise ApprovalWindowError(
            approval.officer, approval.request_id, "expires_at is not after not_before"
        )
    if approval.expires_at - approval.not_before > MAX_APPROVAL_LIFETIME:
        raise ApprovalWindowError(
            approval.officer,
            approval.request_id,
            f"valid for longer than the maximum of {MAX_APPROVAL_LIFETIME.days} days",
        )


def verify_approval(
    policy: PolicyDocument,
    intent: ApprovableIntent,
    approval: Approval,
    *,
    now: datetime,
    seen_nonces: Container[str] = frozenset(),
    group: str | None = None,
) -> None:
    """Raise the `ApprovalError` of the first check ``approval`` fails (see the module doc)."""
    who, request = approval.officer, intent.request_id
    if approval.request_id != intent.request_id:
        raise ApprovalBindingError(
            who, request, f"bound to another request ({approval.request_id!r})"
        )
    if approval.intent_digest != intent.digest().hex():
        raise ApprovalBindingError(
            who, request, "bound to another transaction (intent digest differs)"
        )
    if approval.policy_hash != policy.policy_hash():
        raise ApprovalBindingError(
            who,
            request,
            f"bound to another policy version ({approval.policy_hash[:16]}…, this is version "
            f"{policy.version})",
        )
    try:
        officer = policy.officer(approval.officer)
    except UnknownOfficerError as exc:
        raise ApprovalOfficerError(
            who, request, f"not an officer of policy version {policy.version}"
        ) from exc
    if not verify_statement(
        officer.algorithm,
        officer.public_key,
        Purpose.APPROVAL,
        approval.statement(),
        bytes.fromhex(approval.signature),
    ):
        raise ApprovalSignatureError(
            who, request, f"signature does not verify under {who}'s {officer.algorithm} key"
        )
    _check_window(approval)
    if now < approval.not_before:
        raise ApprovalNotYetValidError(
            who, request, f"valid from {timestamp_str(approval.not_before)}"
        )
    if now >= approval.expires_at:
        raise ApprovalExpiredError(who, request, f"expired at {timestamp_str(approval.expires_at)}")
    if approval.nonce in seen_nonces:
        raise ApprovalReplayError(who, request, f"nonce {approval.nonce} was already used")
    if approval.officer == intent.initiator:
        raise SelfApprovalError(who, request, "the initiator cannot approve their own request")
    if group is not None and approval.officer not in policy.group_members(group):
        raise ApprovalGroupError(who, request, f"not a member of approver group {group!r}")


@dataclass(frozen=True)
class _EitherSet:
    first: Container[str]
    second: Container[str]

    def __contains__(self, item: object) -> bool:
        return item in self.first or item in self.second


@dataclass(frozen=True)
class ApprovalCheck:
    """The outcome of checking a batch of approvals for one request."""

    accepted: frozenset[str]  # officers whose valid "approve" counts (once each)
    rejected_by: frozenset[str]  # officers with a valid "reject" statement
    nonces: frozenset[str]  # nonces of every valid statement: record them as used
    problems: tuple[ApprovalError, ...]  # every statement not counted, with its reason


def check_approvals(
    policy: PolicyDocument,
    intent: ApprovableIntent,
    approvals: Iterable[Approval],
    *,
    now: datetime,
    seen_nonces: Container[str] = frozenset(),
    group: str | None = None,
) -> ApprovalCheck:
    """Check every approval; count valid ones, report the rest (never raises for a bad one)."""
    accepted: set[str] = set()
    rejected: set[str] = set()
    used: set[str] = set()
    problems: list[ApprovalError] = []
    for approval in approvals:
        try:
            verify_approval(
                policy,
                intent,
                approval,
                now=now,
                seen_nonces=_EitherSet(seen_nonces, used),
                group=group,
            )
        except ApprovalError as exc:
            problems.append(exc)
            continue
        used.add(approval.nonce)
        (accepted if approval.decision == "approve" else rejected).add(approval.officer)
    return ApprovalCheck(frozenset(accepted), frozenset(rejected), frozenset(used), tuple(problems))


def verify_approvals(
    policy: PolicyDocument,
    intent: ApprovableIntent,
    approvals: Iterable[Approval],
    *,
    now: datetime,
    seen_nonces: Container[str] = frozenset(),
    group: str | None = None,
) -> frozenset[str]:
    """The officers whose approvals count for ``intent`` (the evaluator's ``approvals``)."""
    return check_approvals(
        policy, intent, approvals, now=now, seen_nonces=seen_nonces, group=group
    ).accepted
