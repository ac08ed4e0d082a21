"""Typed errors of the policy engine.

Every error names what is wrong: the document path and value for schema errors, the officer and
the failed check for approvals and governance, the record position for audit-log verification.
"""

from __future__ import annotations

from hsm.errors import TesseraError


class PolicyError(TesseraError):
    """Base class of every error raised by `policies`."""


class UsageError(PolicyError):
    """An option value, or a combination of options, that the command refuses before doing
    anything (exit code 2, like the command line's own usage errors); names the option."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class CanonicalizationError(PolicyError):
    """A value cannot be put in canonical JSON (float, non-string key, lone surrogate, …)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class OfficerKeyError(PolicyError):
    """An officer key (file, passphrase or public key) cannot be used; names the source."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class PolicySchemaError(PolicyError):
    """A policy document (or intent / request file) breaks the schema; names the JSON path
    (e.g. ``rules[2].match.amount.max``), the offending value and the failed check."""

    def __init__(self, path: str, value: object, reason: str, *, source: str | None = None) -> None:
        where = f"{source}: {path}" if source else path
        super().__init__(f"{where}: {reason} (got {_show(value)})")
        self.path = path
        self.value = value
        self.reason = reason
        self.source = source
        # Every problem found, first one above; (path, value, reason) each.
        self.problems: tuple[tuple[str, object, str], ...] = ((path, value, reason),)


class IntentSchemaError(PolicySchemaError):
    """A transaction intent (request file) breaks the intent schema."""


class UnknownOfficerError(PolicyError):
    """An officer id that the policy version does not list."""

    def __init__(self, officer_id: str, policy_version: int) -> None:
        super().__init__(
            f"officer {officer_id!r} is not an officer of policy version {policy_version}"
        )
        self.officer_id = officer_id
        self.policy_version = policy_version


class EvaluationInputError(PolicyError):
    """The evaluator was called with an unusable argument (e.g. a naive datetime)."""

    def __init__(self, argument: str, value: object, reason: str) -> None:
        super().__init__(f"evaluate(): {argument}: {reason} (got {_show(value)})")
        self.argument = argument
        self.value = value
        self.reason = reason


class SanctionsImportError(PolicyError):
    """A sanctions list cannot be imported; names the source, the line and the value of every bad
    entry (the first one in the message, all of them in ``problems``)."""

    def __init__(self, source: str, line: int, value: object, reason: str) -> None:
        super().__init__(f"{source}, line {line}: {reason} (got {_show(value)})")
        self.source = source
        self.line = line
        self.value = value
        self.reason = reason
        self.problems: tuple[tuple[int, object, str], ...] = ((line, value, reason),)


class VelocityError(PolicyError):
    """Base class of velocity-ledger errors."""


class VelocityLimitExceededError(VelocityError):
    """A reservation would push a rolling-window limit over its maximum."""

    def __init__(
        self,
        limit_id: str,
        wallet: str,
        asset: str,
        used: object,
        requested: object,
        maximum: object,
    ) -> None:
        super().__init__(
            f"velocity limit {limit_id!r} ({wallet}/{asset}): {used} already used + {requested}"
            f" requested exceeds {maximum}"
        )
        self.limit_id = limit_id
        self.wallet = wallet
        self.asset = asset
        self.used = used
        self.requested = requested
        self.maximum = maximum


class ReservationError(VelocityError):
    """A ledger operation on a request id is inconsistent with that request's state."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"request {request_id!r}: {reason}")
        self.request_id = request_id
        self.reason = reason


class AuditLogError(PolicyError):
    """The audit log fails verification; ``position`` is the 0-based index of the first
    inconsistent record (``len(records)`` for a truncated tail), ``seq`` its sequence number."""

    def __init__(self, position: int, seq: int | None, reason: str) -> None:
        where = f"position {position}" + (f" (seq {seq})" if seq is not None else "")
        super().__init__(f"audit log {where}: {reason}")
        self.position = position
        self.seq = seq
        self.reason = reason


class AuditFormatError(PolicyError):
    """An audit record, checkpoint or export line cannot be parsed; names source and line."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        where = source + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


class ApprovalError(PolicyError):
    """An officer's withdrawal approval is not counted; names the officer, the request and the
    failed ``check`` (one subclass per check)."""

    check = "approval"

    def __init__(self, officer: str, request_id: str, reason: str) -> None:
        super().__init__(
            f"approval by {officer!r} for request {request_id!r} [{self.check}]: {reason}"
        )
        self.officer = officer
        self.request_id = request_id
        self.reason = reason


class ApprovalOfficerError(ApprovalError):
    """The signer is not an officer of the policy version the approval is checked against."""

    check = "officer"


class ApprovalGroupError(ApprovalError):
    """The officer is not a member of the approver group the rule asks for."""

    check = "group"


class OutsideApproverGroupError(ApprovalGroupError):
    """An officer outside the approver group the matching rule asks for tried to approve: the
    approval could never count, so it is refused before it is signed into the record."""

    def __init__(
        self,
        officer: str,
        request_id: str,
        *,
        group: str,
        members: tuple[str, ...],
        rule: str | None,
    ) -> None:
        by_rule = f"rule {rule!r} needs approvals from" if rule else "approvals come from"
        super().__init__(
            officer,
            request_id,
            f"{officer!r} is not in approver group {group!r} ({by_rule} {group!r}: "
            f"{', '.join(members) or 'nobody'}); nothing recorded",
        )
        self.group = group
        self.members = members
        self.rule = rule


class ApprovalSignatureError(ApprovalError):
    """The signature does not verify under the officer's key (forged, or wrong key)."""

    check = "signature"


class ApprovalBindingError(ApprovalError):
    """The approval is bound to another request, transaction or policy version."""

    check = "binding"


class ApprovalWindowError(ApprovalError):
    """The validity window itself is unusable (ends before it starts, or is too long)."""

    check = "window"


class ApprovalNotYetValidError(ApprovalError):
    check = "not_yet_valid"


class ApprovalExpiredError(ApprovalError):
    check = "expired"


class ApprovalReplayError(ApprovalError):
    """The nonce was already used (seen before, or twice in one batch)."""

    check = "replay"


class SelfApprovalError(ApprovalError):
    """The initiator of a request approved it."""

    check = "self_approval"


class ApprovalFormatError(PolicyError):
    """An approval file or object cannot be parsed; names the source and the field."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: {field}: {reason}")
        self.source = source
        self.field = field
        self.reason = reason


class GovernanceError(PolicyError):
    """Base class of policy-activation, cancel and freeze errors."""


class GovernanceSignatureError(GovernanceError):
    """An officer signature over a governance statement is not counted; names the officer, the
    statement (``purpose``) and the failed ``check`` (officer, binding, signature)."""

    def __init__(self, officer: str, purpose: str, check: str, reason: str) -> None:
        super().__init__(f"{purpose} signature by {officer!r} [{check}]: {reason}")
        self.officer = officer
        self.purpose = purpose
        self.check = check
        self.reason = reason


class QuorumNotReachedError(GovernanceError):
    """Fewer valid distinct officer signatures than the quorum; lists who counted and why the
    others did not."""

    def __init__(
        self,
        action: str,
        needed: int,
        counted: tuple[str, ...],
        problems: tuple[GovernanceSignatureError, ...],
    ) -> None:
        detail = f"; not counted: {'; '.join(str(p) for p in problems)}" if problems else ""
        super().__init__(
            f"{action}: {len(counted)} of the {needed} required officer signatures"
            f" (counted: {', '.join(counted) or 'none'}){detail}"
        )
        self.action = action
        self.needed = needed
        self.counted = counted
        self.problems = problems


class PolicyChainError(GovernanceError):
    """A policy version does not extend the chain (wrong version number or predecessor hash)."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"policy version {version}: {reason}")
        self.version = version
        self.reason = reason


class PendingVersionError(GovernanceError):
    """A time-locked version is still pending, so the chain cannot move on (cancel it or wait)."""

    def __init__(self, version: int, effective_at: str) -> None:
        super().__init__(
            f"policy version {version} is time-locked until {effective_at}; wait for it or cancel"
            " it before activating another version"
        )
        self.version = version
        self.effective_at = effective_at


class NoActivePolicyError(GovernanceError):
    """No policy version is in force yet."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FreezeError(GovernanceError):
    """A freeze or unfreeze order cannot apply; names the wallet and why."""

    def __init__(self, wallet: str, reason: str) -> None:
        super().__init__(f"wallet {wallet!r}: {reason}")
        self.wallet = wallet
        self.reason = reason


class StoreError(PolicyError):
    """The local policy store refuses an operation or holds inconsistent data; names the
    object (proposal, request, order, file) and why.  Nothing was written."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject}: {reason}")
        self.subject = subject
        self.reason = reason


class StoreNotFoundError(StoreError):
    """The store file named by ``--store`` / ``$TESSERA_POLICY_STORE`` does not exist.  Only an
    explicit creation (``tessera policy init``) makes one, so a mistyped path is an error, not
    a new empty store."""

    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            "does not exist; create a store with `tessera policy init`, or check --store / "
            "$TESSERA_POLICY_STORE",
        )
        self.path = path
