"""One error model across the process boundary: the problem form and its codes.

Every refusal that crosses HTTP — from a node to the coordinator today, from the signer API to
its clients later — is one JSON object in the shape of RFC 9457 ("Problem Details for HTTP
APIs"), served as ``application/problem+json``:

  type     ``urn:tessera:problem:<code>`` — stable, one per code
  title    the code's one-line meaning (the same for every instance of the code)
  status   the HTTP status (also the response's)
  code     an `ErrorCode` value: what clients switch on, never the text
  detail   what went wrong in this instance, for a human; never an echo of the input
  culprit  the party index to blame, when there is one (e.g. the sender of a bad envelope)
  check    the failed check (a `signer.errors.Check` value or an envelope check), when known
  node     the party index of the node that answered, when a node answered

`ErrorCode` is the single definition of the codes: the node raises them, the coordinator
turns them back into typed exceptions (`coordinator.client`), and `docs/errors.md` lists them
(a static test keeps that table and this enum equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

#: A `detail` is cut to this many characters, so no reply can grow with its input.
MAX_DETAIL_CHARS = 500

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ErrorCode(StrEnum):
    """Stable code of a refusal; `STATUS` gives its HTTP status and `TITLE` its meaning."""

    # the request itself
    BAD_REQUEST = "BAD_REQUEST"
    VALIDATION = "VALIDATION"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    URI_TOO_LONG = "URI_TOO_LONG"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    # the node's state
    NOT_PINNED = "NOT_PINNED"
    ROSTER_PINNED = "ROSTER_PINNED"
    NOT_A_PARTY = "NOT_A_PARTY"
    UNKNOWN_SESSION = "UNKNOWN_SESSION"
    DUPLICATE_SESSION = "DUPLICATE_SESSION"
    SESSION_FAILED = "SESSION_FAILED"
    ENVELOPE_REJECTED = "ENVELOPE_REJECTED"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    NO_SHARE = "NO_SHARE"
    UNKNOWN_PRESIGNATURE = "UNKNOWN_PRESIGNATURE"
    PRESIGNATURE_USED = "PRESIGNATURE_USED"
    STALE_PRESIGNATURE = "STALE_PRESIGNATURE"
    STALE_PLAN = "STALE_PLAN"
    PLAN_IN_FLIGHT = "PLAN_IN_FLIGHT"
    NO_PENDING_VERSION = "NO_PENDING_VERSION"
    CONFIRMATION_REJECTED = "CONFIRMATION_REJECTED"
    CONFIRMATION_CONFLICT = "CONFIRMATION_CONFLICT"
    QUARANTINED = "QUARANTINED"
    # the node's policy (docs/policies.md, "Enforcement in the nodes")
    NO_GENESIS = "NO_GENESIS"
    NO_POLICY = "NO_POLICY"
    GOVERNANCE_REFUSED = "GOVERNANCE_REFUSED"
    POLICY_DENIED = "POLICY_DENIED"
    TRANSACTION_INVALID = "TRANSACTION_INVALID"
    UNSUPPORTED_TRANSACTION = "UNSUPPORTED_TRANSACTION"
    INTENT_MISMATCH = "INTENT_MISMATCH"
    SENDER_MISMATCH = "SENDER_MISMATCH"
    RECEIPTS_MISSING = "RECEIPTS_MISSING"
    REQUEST_REUSED = "REQUEST_REUSED"
    CANCEL_REFUSED = "CANCEL_REFUSED"
    ALLOWANCE_REFUSED = "ALLOWANCE_REFUSED"
    INTERNAL_TRANSFER_REFUSED = "INTERNAL_TRANSFER_REFUSED"
    RAW_SIGNING_REFUSED = "RAW_SIGNING_REFUSED"
    WALLET_BOUND = "WALLET_BOUND"
    PLAN_UNAUTHORISED = "PLAN_UNAUTHORISED"
    # the coordinator's chain layer (docs/chains.md): never a node's answer
    UNKNOWN_CHAIN = "UNKNOWN_CHAIN"
    CHAIN_UNAVAILABLE = "CHAIN_UNAVAILABLE"
    CHAIN_MISMATCH = "CHAIN_MISMATCH"
    CHAIN_REJECTED = "CHAIN_REJECTED"
    FEE_ABOVE_CEILING = "FEE_ABOVE_CEILING"
    NONCE_CONFLICT = "NONCE_CONFLICT"
    ADDRESS_REFUSED = "ADDRESS_REFUSED"
    # the signer API (coordinator/api, docs/api.md): never a node's answer
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    NOT_CANCELLABLE = "NOT_CANCELLABLE"
    # the node cannot serve now
    BUSY = "BUSY"
    HSM = "HSM"
    CORRUPT = "CORRUPT"
    INTERNAL = "INTERNAL"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.VALIDATION: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.URI_TOO_LONG: 414,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.NOT_PINNED: 409,
    ErrorCode.ROSTER_PINNED: 409,
    ErrorCode.NOT_A_PARTY: 403,
    ErrorCode.UNKNOWN_SESSION: 404,
    ErrorCode.DUPLICATE_SESSION: 409,
    ErrorCode.SESSION_FAILED: 409,
    ErrorCode.ENVELOPE_REJECTED: 400,
    ErrorCode.UNKNOWN_KEY: 404,
    ErrorCode.NO_SHARE: 404,
    ErrorCode.UNKNOWN_PRESIGNATURE: 404,
    ErrorCode.PRESIGNATURE_USED: 409,
    ErrorCode.STALE_PRESIGNATURE: 409,
    ErrorCode.STALE_PLAN: 409,
    ErrorCode.PLAN_IN_FLIGHT: 409,
    ErrorCode.NO_PENDING_VERSION: 404,
    ErrorCode.CONFIRMATION_REJECTED: 400,
    ErrorCode.CONFIRMATION_CONFLICT: 409,
    ErrorCode.QUARANTINED: 409,
    ErrorCode.NO_GENESIS: 409,
    ErrorCode.NO_POLICY: 409,
    ErrorCode.GOVERNANCE_REFUSED: 409,
    ErrorCode.POLICY_DENIED: 403,
    ErrorCode.TRANSACTION_INVALID: 422,
    ErrorCode.UNSUPPORTED_TRANSACTION: 422,
    ErrorCode.INTENT_MISMATCH: 409,
    ErrorCode.SENDER_MISMATCH: 409,
    ErrorCode.RECEIPTS_MISSING: 409,
    ErrorCode.REQUEST_REUSED: 409,
    ErrorCode.CANCEL_REFUSED: 409,
    ErrorCode.ALLOWANCE_REFUSED: 403,
    ErrorCode.INTERNAL_TRANSFER_REFUSED: 403,
    ErrorCode.RAW_SIGNING_REFUSED: 403,
    ErrorCode.WALLET_BOUND: 409,
    ErrorCode.PLAN_UNAUTHORISED: 403,
    ErrorCode.UNKNOWN_CHAIN: 404,
    ErrorCode.CHAIN_UNAVAILABLE: 503,
    ErrorCode.CHAIN_MISMATCH: 409,
    ErrorCode.CHAIN_REJECTED: 409,
    ErrorCode.FEE_ABOVE_CEILING: 409,
    ErrorCode.NONCE_CONFLICT: 409,
    ErrorCode.ADDRESS_REFUSED: 422,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.NOT_CANCELLABLE: 409,
    ErrorCode.BUSY: 503,
    ErrorCode.HSM: 503,
    ErrorCode.CORRUPT: 500,
    ErrorCode.INTERNAL: 500,
}

TITLE: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "the request is malformed",
    ErrorCode.VALIDATION: "a field of the request is missing or invalid",
    ErrorCode.UNAUTHORIZED: "missing or wrong credentials",
    ErrorCode.NOT_FOUND: "no such route",
    ErrorCode.METHOD_NOT_ALLOWED: "the route does not take this method",
    ErrorCode.PAYLOAD_TOO_LARGE: "the request body exceeds the limit",
    ErrorCode.URI_TOO_LONG: "the request target (path and query) exceeds the limit",
    ErrorCode.HEADERS_TOO_LARGE: "the request headers exceed the limit",
    ErrorCode.REQUEST_TIMEOUT: "the request was not received in time",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "the request body is not JSON",
    ErrorCode.NOT_PINNED: "no cluster roster is pinned on this node yet",
    ErrorCode.ROSTER_PINNED: "the roster is already pinned",
    ErrorCode.NOT_A_PARTY: "this node is not a party of the session",
    ErrorCode.UNKNOWN_SESSION: "no such running session",
    ErrorCode.DUPLICATE_SESSION: "this session instance was already started",
    ErrorCode.SESSION_FAILED: "the session has failed and takes no more messages",
    ErrorCode.ENVELOPE_REJECTED: "a relayed envelope was rejected",
    ErrorCode.UNKNOWN_KEY: "no active version of this key on this node",
    ErrorCode.NO_SHARE: "this node holds no share of the key",
    ErrorCode.UNKNOWN_PRESIGNATURE: "no such presignature for this key",
    ErrorCode.PRESIGNATURE_USED: "the presignature was already consumed or revoked",
    ErrorCode.STALE_PRESIGNATURE: "the presignature is for another key version",
    ErrorCode.STALE_PLAN: "the re-share plan is not for this node's key version",
    ErrorCode.PLAN_IN_FLIGHT: "another re-share or refresh of this key version is in flight",
    ErrorCode.NO_PENDING_VERSION: "this node holds no such pending (unconfirmed) key version",
    ErrorCode.CONFIRMATION_REJECTED: "a storage confirmation of a key version is invalid",
    ErrorCode.CONFIRMATION_CONFLICT: "this node confirmed another version of this key epoch",
    ErrorCode.QUARANTINED: "a party of the request is quarantined by this node",
    ErrorCode.NO_GENESIS: "no genesis policy hash is pinned on this node",
    ErrorCode.NO_POLICY: "no policy version is in force on this node",
    ErrorCode.GOVERNANCE_REFUSED: "the governance document is not accepted",
    ErrorCode.POLICY_DENIED: "the node's policy does not allow this request",
    ErrorCode.TRANSACTION_INVALID: "the transaction to sign does not decode",
    ErrorCode.UNSUPPORTED_TRANSACTION: "the node signs no transaction of this kind",
    ErrorCode.INTENT_MISMATCH: "the claimed intent differs from the transaction the node decoded",
    ErrorCode.SENDER_MISMATCH: "the transaction claims another wallet or sender",
    ErrorCode.RECEIPTS_MISSING: "too few valid velocity receipts for a velocity-limited intent",
    ErrorCode.REQUEST_REUSED: "the request id was already used for another transaction",
    ErrorCode.CANCEL_REFUSED: "the transaction is no cancellation of one this node signed",
    ErrorCode.ALLOWANCE_REFUSED: "a token allowance goes only to the policy's disperse contract",
    ErrorCode.INTERNAL_TRANSFER_REFUSED: (
        "an internal transfer goes only to another address of the same wallet"
    ),
    ErrorCode.RAW_SIGNING_REFUSED: "this key signs transactions only, never raw bytes",
    ErrorCode.WALLET_BOUND: "the policy wallet is already bound to a key",
    ErrorCode.PLAN_UNAUTHORISED: "the re-share or refresh lacks quorum authorisation",
    ErrorCode.UNKNOWN_CHAIN: "the chain or token is not in the chain registry",
    ErrorCode.CHAIN_UNAVAILABLE: "no RPC URL of the chain answered",
    ErrorCode.CHAIN_MISMATCH: "the RPC node serves another chain than configured",
    ErrorCode.CHAIN_REJECTED: "the chain refused or reverted the transaction",
    ErrorCode.FEE_ABOVE_CEILING: "the fee per gas is above the chain's ceiling",
    ErrorCode.NONCE_CONFLICT: "the sender's nonce was used outside Tessera",
    ErrorCode.ADDRESS_REFUSED: "the payout's destination address is refused",
    ErrorCode.FORBIDDEN: "the API key lacks the scope this route needs",
    ErrorCode.RATE_LIMITED: "the API key is over its request rate",
    ErrorCode.IDEMPOTENCY_CONFLICT: "the Idempotency-Key was used with another request",
    ErrorCode.NOT_CANCELLABLE: "the withdrawal is past the point where it can be cancelled",
    ErrorCode.BUSY: "the node is at its session limit",
    ErrorCode.HSM: "the node's HSM could not complete the operation",
    ErrorCode.CORRUPT: "the node's stored state is inconsistent",
    ErrorCode.INTERNAL: "an unexpected error; the operation was not completed",
}


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text` cut to `limit` characters (marked), so a detail never grows with the input."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_detail(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """What a pydantic validation said, by field path and message — never the input value
    (pydantic's errors carry it under ``input``, which is dropped here), so a refusal cannot
    echo a huge or unserialisable body (NaN, Infinity)."""
    parts = []
    for error in list(errors)[:limit]:
        where = ".".join(str(step) for step in error.get("loc", ())) or "body"
        parts.append(f"{where}: {clip(str(error.get('msg', 'invalid')), 120)}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return clip("; ".join(parts))


class Problem(BaseModel):
    """The wire form of a refusal (RFC 9457 members plus Tessera's `code`, `culprit`,
    `check` and `node`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    code: ErrorCode
    detail: Annotated[str, Field(max_length=MAX_DETAIL_CHARS)]
    culprit: int | None = None
    check: str | None = None
    node: int | None = None
    # A policy refusal names the rule that decided (when one did) and the policy hash the node
    # decided under, so an operator sees at once which version and rule refused.
    rule: str | None = None
    policy_hash: str | None = None
    # The signer API's request id (the `X-Request-Id` it answered with), for support tickets.
    request_id: str | None = None

    @classmethod
    def of(
        cls,
        code: ErrorCode,
        detail: str,
        *,
        culprit: int | None = None,
        check: str | None = None,
        node: int | None = None,
        rule: str | None = None,
        policy_hash: str | None = None,
        request_id: str | None = None,
    ) -> Problem:
        return cls(
            type=f"urn:tessera:problem:{code.value.lower().replace('_', '-')}",
            title=TITLE[code],
            status=STATUS[code],
            code=code,
            detail=clip(detail),
            culprit=culprit,
            check=check,
            node=node,
            rule=rule,
            policy_hash=policy_hash,
            request_id=request_id,
        )
