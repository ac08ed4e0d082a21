"""From the payload a node is asked to sign to the policy's `TransactionIntent`.

`decode_transaction` is the codec's strict `decode_signing_payload` with its errors turned into
`TransactionRefused` (TRANSACTION_INVALID, check "encoding"); `intent_of` adds the movement the
calldata kind reads and the request's own fields, validated by `policies.intent.parse_intent`
exactly as a request file would be; `compare_claim` refuses when the intent the coordinator
claims is not the one the node decoded — the node signs what the bytes say, nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from policies.document import PolicyDocument, amount_str
from policies.errors import IntentSchemaError
from policies.intent import TransactionIntent, parse_intent
from signer.chains.calldata import movement_of
from signer.chains.errors import TransactionRefused
from signer.chains.evm import (
    InvalidTransaction,
    MalformedTransaction,
    Transfer,
    decode_signing_payload,
)
from signer.chains.movement import Movement
from signer.problems import ErrorCode

# The fields whose values a mismatch detail may show: they are what the node decoded from the
# payload.  Request id, wallet and initiator are only named, so a detail cannot carry whatever
# text a caller put in them.
_SHOWN = ("chain_id", "asset", "destination", "amount")


@dataclass(frozen=True)
class DecodedTransaction:
    """A payload as the node reads it: the transfer, what it moves, the intent the policy is
    evaluated on, and `payload_hash` (SHA-256 of the payload) to bind logs and receipts to the
    exact bytes."""

    transfer: Transfer
    movement: Movement
    intent: TransactionIntent
    payload_hash: bytes


def decode_transaction(payload: bytes) -> Transfer:
    """The transfer whose signing payload is exactly `payload`, or `TransactionRefused`."""
    try:
        return decode_signing_payload(payload)
    except MalformedTransaction as exc:
        raise TransactionRefused(
            ErrorCode.TRANSACTION_INVALID, "encoding", f"{exc.what}: {exc.reason}"
        ) from exc
    except InvalidTransaction as exc:
        # It decodes, but a field is one the codec would never have built (zero address, gas
        # below the intrinsic cost, …): as malformed as bad RLP for a node.
        raise TransactionRefused(
            ErrorCode.TRANSACTION_INVALID, "encoding", f"field {exc.field}: {exc.reason}"
        ) from exc


def intent_of(
    payload: bytes, policy: PolicyDocument, *, wallet: str, request_id: str, initiator: str
) -> DecodedTransaction:
    """Decode `payload` and build the intent `policy` is evaluated on."""
    transfer = decode_transaction(payload)
    movement = movement_of(transfer, policy)
    fields = {
        "request_id": request_id,
        "wallet": wallet,
        "chain_id": transfer.chain_id,
        "asset": movement.asset,
        "destination": movement.destination,
        "amount": movement.amount,
        "initiator": initiator,
    }
    if movement.legs is not None:
        fields["legs"] = [
            {"destination": destination, "amount": amount} for destination, amount in movement.legs
        ]
    try:
        intent = parse_intent(fields, source="decoded transaction")
    except IntentSchemaError as exc:
        # Path and reason only: the schema error's message would quote the offending value.
        problems = "; ".join(f"{path}: {reason}" for path, _value, reason in exc.problems)
        raise TransactionRefused(ErrorCode.VALIDATION, "intent", problems) from exc
    return DecodedTransaction(
        transfer=transfer,
        movement=movement,
        intent=intent,
        payload_hash=hashlib.sha256(payload).digest(),
    )


def compare_claim(decoded: TransactionIntent, claimed: TransactionIntent) -> None:
    """Refuse (INTENT_MISMATCH) unless `claimed` is the intent the node decoded."""
    differing = [
        name
        for name in TransactionIntent.model_fields
        if getattr(decoded, name) != getattr(claimed, name)
    ]
    if not differing:
        return
    shown = [
        f"{name} decoded {_text(getattr(decoded, name))} vs claimed {_text(getattr(claimed, name))}"
        for name in differing
        if name in _SHOWN
    ]
    detail = "differs in " + ", ".join(differing)
    if shown:
        detail += ": " + "; ".join(shown)
    raise TransactionRefused(ErrorCode.INTENT_MISMATCH, "intent", detail)


def _text(value: object) -> str:
    # Amounts in canonical decimal text, so "1.50" and "1.5" never look like a difference.
    return amount_str(value) if isinstance(value, Decimal) else str(value)
