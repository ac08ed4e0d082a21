"""The transaction intent: what a withdrawal asks for, in the form the policy speaks.

A key-share node builds the intent from the unsigned transaction it decodes itself (chain id,
destination, asset and amount in the asset's units) plus the request id and initiator the request
carries; the CLI reads it from a request file.  `TransactionIntent.digest()` is the canonical
transaction digest officers' approvals sign: SHA-256 of the RFC 8785 JSON of the intent with a
domain tag, so an approval can never be replayed as a signature over anything else.

A batch payout (one transaction paying many through the policy's disperse contract) is one
intent with `legs`: each leg a destination and an amount, `destination` the disperse contract
and `amount` the sum of the legs.  The legs are part of the digest, so an officer's approval of
a batch is an approval of exactly those legs; an intent without legs digests as it always did.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from policies.canonical import canonical_digest
from policies.document import (
    AMOUNT_CONTEXT,
    Address,
    AssetSymbol,
    ChainId,
    Identifier,
    Initiator,
    amount_str,
    parse_amount,
    schema_error_from,
)
from policies.errors import IntentSchemaError
from policies.structured import read_structured_file

INTENT_DOMAIN = "tessera.intent/1"
#: The most legs in one batch intent (the disperse contract's own bound).
MAX_LEGS: Final = 1000

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def _request_id(value: object) -> str:
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "intent",
            "request ids are 1–128 characters of A-Z a-z 0-9 . _ : -, not starting "
            "with a punctuation mark",
        )
    return value


def _positive_amount(value: object) -> Decimal:
    try:
        amount = parse_amount(value)
    except ValueError as exc:
        raise PydanticCustomError("intent", "{reason}", {"reason": str(exc)}) from exc
    if amount == 0:
        raise PydanticCustomError("intent", "a withdrawal of zero is not a withdrawal")
    return amount


RequestId = Annotated[str, PlainValidator(_request_id)]
PositiveAmount = Annotated[
    Decimal, PlainValidator(_positive_amount), PlainSerializer(amount_str, return_type=str)
]


class Leg(BaseModel):
    """One payment of a batch: `amount` of the batch's asset to `destination`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    destination: Address  # EIP-55 checksummed
    amount: PositiveAmount


class TransactionIntent(BaseModel):
    """One withdrawal: `amount` of `asset` from `wallet` to `destination` on `chain_id` — or a
    batch of `legs` through the disperse contract `destination`, `amount` their sum."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: RequestId
    wallet: Identifier
    chain_id: ChainId
    asset: AssetSymbol
    destination: Address  # EIP-55 checksummed
    amount: PositiveAmount  # exact, in the asset's units (e.g. "1.5" ETH, not wei)
    initiator: Initiator
    legs: tuple[Leg, ...] | None = Field(default=None, min_length=1, max_length=MAX_LEGS)

    @model_validator(mode="after")
    def _total(self) -> TransactionIntent:
        # The amount of a batch is what the limits count: it must be the legs' sum, exactly.
        if self.legs is not None:
            total = Decimal(0)
            for leg in self.legs:
                total = AMOUNT_CONTEXT.add(total, leg.amount)  # traps rounding: exact
            if total != self.amount:
                raise PydanticCustomError(
                    "intent", "the amount of a batch is the sum of its legs' amounts"
                )
        return self

    @property
    def is_batch(self) -> bool:
        return self.legs is not None

    def canonical_object(self) -> dict[str, Any]:
        """The JSON-ready object that is digested (amount in canonical decimal text)."""
        obj: dict[str, Any] = self.model_dump(mode="json")
        if obj["legs"] is None:
            del obj["legs"]  # a single withdrawal digests as before batches existed
        obj["domain"] = INTENT_DOMAIN
        return obj

    def digest(self) -> bytes:
        """The canonical transaction digest (32 bytes) that approvals sign."""
        return canonical_digest(self.canonical_object())

    def digest_hex(self) -> str:
        return self.digest().hex()


def parse_intent(obj: Mapping[str, Any], source: str = "<intent>") -> TransactionIntent:
    """Validate a parsed intent; `IntentSchemaError` names the field and the value."""
    if not isinstance(obj, Mapping):
        raise IntentSchemaError(
            "$", type(obj).__name__, "an intent is a mapping of fields", source=source
        )
    try:
        return TransactionIntent.model_validate(dict(obj))
    except ValidationError as exc:
        raise schema_error_from(exc, source=source, error_type=IntentSchemaError) from None


def load_intent(path: Path) -> TransactionIntent:
    """Read a request file (YAML or JSON) holding one intent."""
    obj = read_structured_file(path, error_type=IntentSchemaError)
    return parse_intent(obj, source=str(path))
