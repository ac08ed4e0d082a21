"""The policy document: what officers sign and every node evaluates.

A document is read from YAML or JSON (strictly, by `policies.structured`), validated into
immutable pydantic models, and hashed as canonical JSON (RFC 8785) of
`PolicyDocument.canonical_object()`.  Validation names the JSON path and the offending value of
every problem (`PolicySchemaError`).  The format is documented in docs/policies.md; the choices
that matter for safety:

* amounts are quoted decimal strings, never floats (a YAML/JSON float is an error), exact
  (`Decimal`, no rounding anywhere: `AMOUNT_CONTEXT` traps any inexact operation), non-negative,
  at most 10^30 and with no more decimal places than the asset has;
* addresses must be in their EIP-55 checksummed form: an all-lowercase address carries no checksum,
  so a typo in it could not be caught — it is refused like a wrong checksum;
* collections whose order carries no meaning (officers, members, wallets, entries, limits, match
  lists) are sorted in the canonical object, so two files meaning the same thing hash the same;
  rule order is meaningful (first match wins) and is kept.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_utils.address import to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WrapSerializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from policies.canonical import canonical_hash_hex, canonical_json
from policies.errors import PolicySchemaError, UnknownOfficerError
from policies.structured import read_structured_file

FORMAT = "tessera.policy/1"
MAX_SAFE_INT = 2**53 - 1
MAX_AMOUNT = Decimal(10) ** 30
MAX_ASSET_DECIMALS = 36
# A year and a bit: longer windows, delays and time locks are far more likely typos than intent.
MAX_DURATION_SECONDS = 400 * 86400

# Every amount computation runs in this context: 200 significant digits hold any sum of amounts
# bounded by 10^30 with 36 decimals many times over, and the traps turn any rounding into an
# exception instead of a silently wrong limit check.
AMOUNT_CONTEXT = Context(
    prec=200,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, Inexact, Rounded, Overflow, DivisionByZero],
)

_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_INITIATOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})+")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _bad(reason: str) -> PydanticCustomError:
    # The reason goes through the context so braces in it are not read as a template.
    return PydanticCustomError("policy", "{reason}", {"reason": reason})


# --- amounts -----------------------------------------------------------------------------------


def parse_amount(value: object) -> Decimal:
    """An exact, non-negative amount from a decimal string (or a `Decimal`); `ValueError` with
    the reason otherwise.  Floats and integers are refused: amounts are written as strings."""
    if isinstance(value, bool):
        raise ValueError("amounts are quoted decimal strings, not booleans")
    if isinstance(value, float):
        raise ValueError(
            "floats are not allowed (binary floating point is inexact); "
            'write the amount as a quoted decimal string, e.g. "1.5"'
        )
    if isinstance(value, int):
        raise ValueError(f'amounts are quoted decimal strings: write "{value}"')
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("amount is not a finite decimal")
        if value.is_signed() and value != 0:
            raise ValueError("amount is negative")
        # copy_abs, not abs(): abs() rounds to the thread's context precision (28 digits).
        amount = value.copy_abs()
    elif isinstance(value, str):
        if not _DECIMAL_RE.fullmatch(value):
            if value.startswith("-"):
                raise ValueError("amount is negative")
            if "e" in value.lower() and _DECIMAL_RE.fullmatch(value.lower().split("e")[0]):
                raise ValueError("exponent notation is not allowed; write all the digits")
            raise ValueError('not a decimal string (digits with an optional ".fraction")')
        amount = Decimal(value)
    else:
        raise ValueError(f"amounts are decimal strings, not {type(value).__name__}")
    if amount > MAX_AMOUNT:
        raise ValueError("absurd amount: above 10^30")
    if fraction_digits(amount) > MAX_ASSET_DECIMALS:
        raise ValueError(f"more than {MAX_ASSET_DECIMALS} decimal places")
    return amount


def fraction_digits(amount: Decimal) -> int:
    """How many decimal places `amount` really has (trailing zeros do not count)."""
    exponent = amount.normalize(AMOUNT_CONTEXT).as_tuple().exponent
    if not isinstance(exponent, int):  # "n", "N" or "F": NaN or infinity
        raise ValueError("amount is not a finite decimal")
    return max(0, -exponent)


def amount_str(amount: Decimal) -> str:
    """The canonical text of an amount: plain digits, no exponent, no trailing zeros."""
    return format(amount.normalize(AMOUNT_CONTEXT), "f")


def _amount_field(value: object) -> Decimal:
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise _bad(str(exc)) from exc


Amount = Annotated[
    Decimal, PlainValidator(_amount_field), PlainSerializer(amount_str, return_type=str)
]


# --- timestamps --------------------------------------------------------------------------------


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from RFC 3339 text with an explicit offset (or an aware datetime)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        if "T" not in value:
            raise ValueError('timestamps are RFC 3339 date-times, e.g. "2026-01-31T12:00:00Z"')
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not an RFC 3339 date-time: {exc}") from exc
    else:
        raise ValueError(f"timestamps are quoted RFC 3339 strings, not {type(value).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError('timestamp has no UTC offset; add "Z" or "+hh:mm"')
    return moment.astimezone(UTC)


def timestamp_str(moment: datetime) -> str:
    """Canonical text of a timestamp: UTC, ``Z``, microseconds only when non-zero."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def _timestamp_field(value: object) -> datetime:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _bad(str(exc)) from exc


Timestamp = Annotated[
    datetime, PlainValidator(_timestamp_field), PlainSerializer(timestamp_str, return_type=str)
]


# --- addresses ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def eip55(address: str) -> str:
    """The EIP-55 spelling of a 0x-prefixed 20-byte hex address.  A Keccak per call, and the
    same few addresses (wallets, whitelists) recur in every request: a pure function, cached."""
    return str(to_checksum_address(address))


def check_address(value: object) -> str:
    """`value` if it is an EIP-55 checksummed 20-byte address; `ValueError` naming why not."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("addresses are quoted strings")
    if not isinstance(value, str):
        raise ValueError(f"addresses are strings, not {type(value).__name__}")
    if not _ADDRESS_RE.fullmatch(value):
        raise ValueError("not a 20-byte hex address (0x followed by 40 hex digits)")
    checksummed = eip55(value)
    if value == checksummed:
        return value
    digits = value[2:]
    if digits == digits.lower() or digits == digits.upper():
        raise ValueError(
            "address has no EIP-55 checksum (all one case), so a typo could not be detected; "
            "write it in its EIP-55 mixed-case form"
        )
    raise ValueError("EIP-55 checksum mismatch: the letter case does not match (typo?)")


def _address_field(value: object) -> str:
    try:
        return check_address(value)
    except ValueError as exc:
        raise _bad(str(exc)) from exc


Address = Annotated[str, PlainValidator(_address_field)]


# --- scalar kinds ------------------------------------------------------------------------------


def _text(pattern: re.Pattern[str], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise _bad(f"{what} must be a string, not {type(value).__name__}")
        if not pattern.fullmatch(value):
            raise _bad(f"not a valid {what}")
        return value

    return check


def _label(value: object) -> str:
    if not isinstance(value, str):
        raise _bad(f"labels are strings, not {type(value).__name__}")
    if not 1 <= len(value) <= 200 or _CONTROL_RE.search(value):
        raise _bad("labels are 1–200 characters without control characters")
    return value


def _integer(low: int, high: int, what: str) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"{what} must be an integer, not {type(value).__name__}")
        if not low <= value <= high:
            raise _bad(f"{what} must be between {low} and {high}")
        return value

    return check


def _hex_key(value: object) -> str:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise _bad("public keys are hex strings")
    return value.lower()


Identifier = Annotated[
    str,
    PlainValidator(
        _text(_ID_RE, "id (1–32 characters of a-z 0-9 _ -, starting with a letter or digit)")
    ),
]
AssetSymbol = Annotated[
    str, PlainValidator(_text(_SYMBOL_RE, "asset symbol (1–32 characters of A-Z a-z 0-9 . _ -)"))
]
Initiator = Annotated[
    str, PlainValidator(_text(_INITIATOR_RE, "initiator (1–128 characters of A-Z a-z 0-9 ._@:+-)"))
]
PolicyHash = Annotated[str, PlainValidator(_text(_HASH_RE, "policy hash (64 lowercase hex)"))]
Label = Annotated[str, PlainValidator(_label)]
ChainId = Annotated[int, PlainValidator(_integer(1, MAX_SAFE_INT, "chain id"))]
Count = Annotated[int, PlainValidator(_integer(1, 1000, "count"))]
Seconds = Annotated[int, PlainValidator(_integer(0, MAX_DURATION_SECONDS, "duration in seconds"))]
WindowSeconds = Annotated[int, PlainValidator(_integer(1, MAX_DURATION_SECONDS, "window"))]
Decimals = Annotated[int, PlainValidator(_integer(0, MAX_ASSET_DECIMALS, "decimals"))]
Version = Annotated[int, PlainValidator(_integer(1, MAX_SAFE_INT, "version"))]
WeiPerGas = Annotated[int, PlainValidator(_integer(1, MAX_SAFE_INT, "wei per gas"))]


def _destination(value: object) -> str:
    if not isinstance(value, str):
        raise _bad("destination is a string: any, blacklist or whitelist:<group>")
    if value in ("any", "blacklist"):
        return value
    if value.startswith("whitelist:") and _ID_RE.fullmatch(value.removeprefix("whitelist:")):
        return value
    raise _bad("destination must be any, blacklist or whitelist:<group>")


Destination = Annotated[str, PlainValidator(_destination)]


def _freeze_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _dump_mapping(value: Mapping[str, Any], handler: Callable[[Any], Any]) -> Any:
    return handler(dict(value))


def _empty_mapping() -> Mapping[str, Any]:
    # A factory, not a `MappingProxyType({})` default: pydantic deep-copies a default that is
    # not hashable, and a mappingproxy cannot be copied ("cannot pickle 'mappingproxy'"), so a
    # policy without `groups:` or `whitelists:` could not even be read.
    return MappingProxyType({})


# --- models ------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Officer(_Model):
    """A security officer: signs policy versions, freezes and withdrawal approvals."""

    id: Identifier
    algorithm: Literal["ed25519", "p256"]
    # Raw 32 bytes (Ed25519) or SEC1 compressed 33 bytes (P-256), lowercase hex.
    public_key: Annotated[str, PlainValidator(_hex_key)]


class Governance(_Model):
    quorum: Count
    freeze_quorum: Count
    loosening_timelock_seconds: Seconds = 0


class TokenContract(_Model):
    """Where an asset is an ERC-20 token: its contract on one chain."""

    chain_id: ChainId
    address: Address


class DisperseContract(TokenContract):
    """The batch-payout contract (coordinator/contracts/Disperse.sol) on one chain: the only
    contract through which a node signs one transaction paying many (signer/chains/disperse.py).
    The policy names it because what a call does is the contract's code, not its calldata."""


class FeeCeiling(_Model):
    """The most a node signs a transaction of `chain_id` to pay per gas: the EIP-1559 max fee
    per gas, or the legacy gas price (signer/chains/fees.py).  What a transaction pays is the
    gas it uses times that price, and for the calls the nodes sign the gas used is fixed by the
    call, so the price is what a coordinator could inflate to burn the wallet's coin."""

    chain_id: ChainId
    max_fee_per_gas_wei: WeiPerGas


class Asset(_Model):
    decimals: Decimals
    # The chains on which this asset is the chain's native coin (ETH on 1, 31337, …): a node
    # decoding a plain value transfer on one of them reads its amount as this asset.  Which
    # coin an amount means decides every limit, so a chain is native to at most one asset.
    native_chains: tuple[ChainId, ...] = ()
    # The ERC-20 contracts of this asset, one per chain: a node decoding a token transfer reads
    # its amount as this asset only when the transaction calls exactly this contract
    # (signer/chains/erc20.py).  A contract belongs to one asset.
    contracts: tuple[TokenContract, ...] = ()

    def contract_on(self, chain_id: int) -> str | None:
        """This asset's token contract on `chain_id`, if it has one there."""
        return next((c.address for c in self.contracts if c.chain_id == chain_id), None)


class Wallet(_Model):
    id: Identifier
    tier: Literal["hot", "cold"]
    chains: tuple[ChainId, ...] | None = None  # None: any chain
    label: Label | None = None


class WhitelistEntry(_Model):
    address: Address
    chain_id: ChainId
    label: Label
    added_at: Timestamp | None = None
    activation_delay_seconds: Seconds = 0

    def active_from(self) -> datetime | None:
        """When the entry starts to count (None: always; counted from `added_at`)."""
        if self.added_at is None:
            return None
        return self.added_at + timedelta(seconds=self.activation_delay_seconds)


class BlacklistEntry(_Model):
    address: Address
    chain_id: ChainId | None = None  # None: every chain
    label: Label | None = None


class AmountRange(_Model):
    """Inclusive bounds: ``min <= amount <= max``; an absent bound is open."""

    min: Amount | None = None
    max: Amount | None = None

    def contains(self, amount: Decimal) -> bool:
        if self.min is not None and amount < self.min:
            return False
        return self.max is None or amount <= self.max


class RuleMatch(_Model):
    """Criteria of a rule; an omitted criterion matches anything."""

    wallets: tuple[Identifier, ...] | None = None
    tiers: tuple[Literal["hot", "cold"], ...] | None = None
    chains: tuple[ChainId, ...] | None = None
    assets: tuple[AssetSymbol, ...] | None = None
    destination: Destination = "any"
    amount: AmountRange | None = None
    initiators: tuple[Initiator, ...] | None = None


class ApprovalRequirement(_Model):
    group: Identifier
    k: Count


class Rule(_Model):
    id: Identifier
    description: Label | None = None
    match: RuleMatch = RuleMatch()
    action: Literal["ALLOW", "BLOCK", "REQUIRE_APPROVAL"]
    approvals: ApprovalRequirement | None = None


class VelocityLimit(_Model):
    """At most `max_amount` of `asset` per wallet in any rolling window of `window_seconds`.

    Scope: one wallet (`wallet`) or each wallet of a tier (`tier`) — per wallet, not summed."""

    id: Identifier
    wallet: Identifier | None = None
    tier: Literal["hot", "cold"] | None = None
    asset: AssetSymbol
    window_seconds: WindowSeconds
    max_amount: Amount
    description: Label | None = None
    # How many key-share nodes' velocity receipts a node needs before it signs against this
    # limit; None: every node of the committee.  Fewer receipts means a node may sign without
    # having seen spending that other nodes recorded, so lowering it loosens the limit.
    receipt_quorum: Count | None = None


class PolicyDocument(BaseModel):
    """One version of the policy.  Immutable; its identity is `policy_hash()`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["tessera.policy/1"] = "tessera.policy/1"
    version: Version
    previous: PolicyHash | None = None
    description: Label | None = None
    officers: tuple[Officer, ...] = Field(min_length=1, max_length=100)
    governance: Governance
    groups: Annotated[
        Mapping[Identifier, tuple[Identifier, ...]],
        AfterValidator(_freeze_mapping),
        WrapSerializer(_dump_mapping),
    ] = Field(default_factory=_empty_mapping)
    assets: Annotated[
        Mapping[AssetSymbol, Asset],
        AfterValidator(_freeze_mapping),
        WrapSerializer(_dump_mapping),
    ] = Field(min_length=1)
    wallets: tuple[Wallet, ...] = Field(min_length=1, max_length=10_000)
    whitelists: Annotated[
        Mapping[Identifier, tuple[WhitelistEntry, ...]],
        AfterValidator(_freeze_mapping),
        WrapSerializer(_dump_mapping),
    ] = Field(default_factory=_empty_mapping)
    blacklist: tuple[BlacklistEntry, ...] = Field(default=(), max_length=1_000_000)
    rules: tuple[Rule, ...] = Field(default=(), max_length=10_000)
    velocity_limits: tuple[VelocityLimit, ...] = Field(default=(), max_length=10_000)
    # At most one per chain; none: the nodes sign no batch payout.
    disperse_contracts: tuple[DisperseContract, ...] = Field(default=(), max_length=1_000)
    # At most one per chain; a chain without one: the nodes bound no first fee there (the
    # coordinator's registry still does, docs/chains.md "Fees").
    fee_ceilings: tuple[FeeCeiling, ...] = Field(default=(), max_length=1_000)

    @model_validator(mode="after")
    def _cross_checks(self) -> PolicyDocument:
        problems = _Problems()
        _check_header(self, problems)
        _check_officers(self, problems)
        _check_assets(self, problems)
        _check_wallets(self, problems)
        _check_lists(self, problems)
        _check_rules(self, problems)
        _check_limits(self, problems)
        problems.raise_if_any()
        return self

    # --- identity ---

    def canonical_object(self) -> dict[str, Any]:
        """The JSON-ready object that is hashed: defaults filled in, order-free collections
        sorted, rule order kept."""
        obj: dict[str, Any] = self.model_dump(mode="json")
        obj["officers"] = sorted(obj["officers"], key=lambda o: o["id"])
        obj["groups"] = {name: sorted(members) for name, members in obj["groups"].items()}
        for asset in obj["assets"].values():
            asset["native_chains"] = sorted(asset["native_chains"])
            if asset["contracts"]:
                asset["contracts"] = sorted(asset["contracts"], key=lambda c: c["chain_id"])
            else:
                # Added after the format's first documents: left out while empty, so every
                # document written before it keeps its hash (and its officers' signatures).
                del asset["contracts"]
        obj["wallets"] = sorted(obj["wallets"], key=lambda w: w["id"])
        for wallet in obj["wallets"]:
            if wallet["chains"] is not None:
                wallet["chains"] = sorted(wallet["chains"])
        obj["whitelists"] = {
            name: sorted(entries, key=lambda e: (e["chain_id"], e["address"].lower()))
            for name, entries in obj["whitelists"].items()
        }
        obj["blacklist"] = sorted(
            obj["blacklist"],
            key=lambda e: (e["address"].lower(), -1 if e["chain_id"] is None else e["chain_id"]),
        )
        for rule in obj["rules"]:
            match = rule["match"]
            for key in ("wallets", "tiers", "chains", "assets", "initiators"):
                if match[key] is not None:
                    match[key] = sorted(match[key])
        obj["velocity_limits"] = sorted(obj["velocity_limits"], key=lambda v: v["id"])
        if obj["disperse_contracts"]:
            obj["disperse_contracts"] = sorted(
                obj["disperse_contracts"], key=lambda c: c["chain_id"]
            )
        else:
            # as an asset's contracts: left out while empty, so earlier documents keep their hash
            del obj["disperse_contracts"]
        if obj["fee_ceilings"]:
            obj["fee_ceilings"] = sorted(obj["fee_ceilings"], key=lambda c: c["chain_id"])
        else:
            del obj["fee_ceilings"]  # likewise
        return obj

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON of `canonical_object()`."""
        return canonical_json(self.canonical_object())

    def policy_hash(self) -> str:
        """Hex SHA-256 of the canonical JSON: the identity officers sign and approvals bind."""
        return self._policy_hash

    @cached_property
    def _policy_hash(self) -> str:
        # The document is immutable, so its hash is computed once.
        return canonical_hash_hex(self.canonical_object())

    # --- look-ups (used by the evaluator and governance) ---

    def fee_ceiling_on(self, chain_id: int) -> int | None:
        """The most wei per gas a node signs on `chain_id`, if the policy bounds it."""
        return next(
            (c.max_fee_per_gas_wei for c in self.fee_ceilings if c.chain_id == chain_id), None
        )

    def disperse_contract_on(self, chain_id: int) -> str | None:
        """The batch-payout contract on `chain_id`, if the policy names one."""
        return next((c.address for c in self.disperse_contracts if c.chain_id == chain_id), None)

    def officer(self, officer_id: str) -> Officer:
        """The officer `officer_id`; `UnknownOfficerError` if this version does not list it."""
        for officer in self.officers:
            if officer.id == officer_id:
                return officer
        raise UnknownOfficerError(officer_id, self.version)

    @property
    def officer_ids(self) -> frozenset[str]:
        return frozenset(officer.id for officer in self.officers)

    def wallet(self, wallet_id: str) -> Wallet | None:
        """The wallet `wallet_id`, or None when this version does not know it."""
        return self._wallet_index.get(wallet_id)

    def group_members(self, group: str) -> tuple[str, ...]:
        """Members of an approver group (empty for an unknown group)."""
        return tuple(self.groups.get(group, ()))

    def limits_for(self, wallet_id: str, asset: str) -> tuple[VelocityLimit, ...]:
        """The velocity limits that apply to `asset` leaving wallet `wallet_id`."""
        wallet = self.wallet(wallet_id)
        if wallet is None:
            return ()
        return tuple(
            limit
            for limit in self.velocity_limits
            if limit.asset == asset and (limit.wallet == wallet.id or limit.tier == wallet.tier)
        )

    def blacklist_hits(self, address: str, chain_id: int) -> tuple[BlacklistEntry, ...]:
        """Blacklist entries covering `address` on `chain_id` (case-insensitive address match)."""
        return tuple(
            entry
            for entry in self._blacklist_index.get(address.lower(), ())
            if entry.chain_id is None or entry.chain_id == chain_id
        )

    def whitelist_entries(self, group: str, address: str) -> tuple[WhitelistEntry, ...]:
        """Entries of whitelist `group` for `address`, on any chain."""
        return tuple(self._whitelist_index.get(group, {}).get(address.lower(), ()))

    @cached_property
    def _wallet_index(self) -> dict[str, Wallet]:
        return {wallet.id: wallet for wallet in self.wallets}

    @cached_property
    def _blacklist_index(self) -> dict[str, tuple[BlacklistEntry, ...]]:
        index: dict[str, list[BlacklistEntry]] = {}
        for entry in self.blacklist:
            index.setdefault(entry.address.lower(), []).append(entry)
        return {address: tuple(entries) for address, entries in index.items()}

    @cached_property
    def _whitelist_index(self) -> dict[str, dict[str, tuple[WhitelistEntry, ...]]]:
        out: dict[str, dict[str, tuple[WhitelistEntry, ...]]] = {}
        for group, entries in self.whitelists.items():
            index: dict[str, list[WhitelistEntry]] = {}
            for entry in entries:
                index.setdefault(entry.address.lower(), []).append(entry)
            out[group] = {address: tuple(found) for address, found in index.items()}
        return out


# --- cross-field checks ------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, object, str]] = []

    def add(self, path: str, value: object, reason: str) -> None:
        self.items.append((path, value, reason))

    def raise_if_any(self) -> None:
        if self.items:
            path, value, reason = self.items[0]
            error = PolicySchemaError(path, value, reason)
            error.problems = tuple(self.items)
            raise error


def _duplicates(
    problems: _Problems, items: Iterable[object], path_of: Callable[[int], str], what: str
) -> None:
    first: dict[object, int] = {}
    for index, item in enumerate(items):
        if item in first:
            problems.add(path_of(index), item, f"duplicate {what} (first at index {first[item]})")
        else:
            first[item] = index


def _at(prefix: str) -> Callable[[int], str]:
    return lambda index: f"{prefix}[{index}]"


def _check_header(doc: PolicyDocument, problems: _Problems) -> None:
    if doc.version == 1 and doc.previous is not None:
        problems.add("previous", doc.previous, "version 1 (genesis) has no predecessor")
    if doc.version > 1 and doc.previous is None:
        problems.add("previous", None, f"version {doc.version} must name its predecessor's hash")


def _check_public_key(algorithm: str, key_hex: str) -> str | None:
    raw = bytes.fromhex(key_hex)
    if algorithm == "ed25519":
        if len(raw) != 32:
            return f"an Ed25519 public key is 32 bytes, this is {len(raw)}"
        Ed25519PublicKey.from_public_bytes(raw)
        return None
    if len(raw) != 33 or raw[0] not in (2, 3):
        return "a P-256 public key is 33 bytes, SEC1 compressed (02/03 prefix)"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return "not a point on P-256"
    return None


def _check_officers(doc: PolicyDocument, problems: _Problems) -> None:
    _duplicates(problems, (o.id for o in doc.officers), lambda i: f"officers[{i}].id", "officer id")
    _duplicates(
        problems,
        (o.public_key for o in doc.officers),
        lambda i: f"officers[{i}].public_key",
        "officer public key",
    )
    for index, officer in enumerate(doc.officers):
        reason = _check_public_key(officer.algorithm, officer.public_key)
        if reason is not None:
            problems.add(f"officers[{index}].public_key", officer.public_key, reason)
    n = len(doc.officers)
    if doc.governance.quorum > n:
        problems.add("governance.quorum", doc.governance.quorum, f"more than the {n} officers")
    if doc.governance.freeze_quorum > doc.governance.quorum:
        problems.add(
            "governance.freeze_quorum",
            doc.governance.freeze_quorum,
            f"the freeze quorum cannot exceed the quorum ({doc.governance.quorum})",
        )
    ids = doc.officer_ids
    for name, members in doc.groups.items():
        if not members:
            problems.add(f"groups.{name}", [], "an approver group needs at least one officer")
        _duplicates(problems, members, _at(f"groups.{name}"), "member")
        for index, member in enumerate(members):
            if member not in ids:
                problems.add(f"groups.{name}[{index}]", member, "not an officer of this version")


def _check_assets(doc: PolicyDocument, problems: _Problems) -> None:
    # A chain with two native assets would make a plain value transfer's amount ambiguous:
    # which limits apply would depend on which asset a node happened to pick.
    native_of: dict[int, str] = {}
    for symbol in sorted(doc.assets):
        # _format_loc quotes a symbol such as "USDC.e", so the path stays unambiguous.
        at = _format_loc(("assets", symbol, "native_chains"))
        chains = doc.assets[symbol].native_chains
        _duplicates(problems, chains, _at(at), "chain")
        for index, chain in enumerate(chains):
            other = native_of.setdefault(chain, symbol)
            if other != symbol:
                problems.add(
                    f"{at}[{index}]",
                    chain,
                    f"chain {chain} already has {other} as its native asset",
                )
    # A token contract must mean one asset, and an asset one contract per chain: which asset a
    # token transfer moves decides every rule and limit it meets.
    contract_of: dict[tuple[int, str], str] = {}
    for symbol in sorted(doc.assets):
        asset = doc.assets[symbol]
        at = _format_loc(("assets", symbol, "contracts"))
        _duplicates(problems, (c.chain_id for c in asset.contracts), _at(at), "chain")
        for index, contract in enumerate(asset.contracts):
            if contract.chain_id in asset.native_chains:
                problems.add(
                    f"{at}[{index}].chain_id",
                    contract.chain_id,
                    f"{symbol} is the native coin of chain {contract.chain_id}, not a token there",
                )
            key = (contract.chain_id, contract.address.lower())
            other = contract_of.setdefault(key, symbol)
            if other != symbol:
                problems.add(
                    f"{at}[{index}].address",
                    contract.address,
                    f"the contract on chain {contract.chain_id} is already {other}'s",
                )
    # A batch contract that were also a token's would make its calls both a batch and a token
    # transfer; one per chain, so which contract a batch must call is never a choice.
    _duplicates(
        problems,
        (c.chain_id for c in doc.disperse_contracts),
        _at("disperse_contracts"),
        "chain",
    )
    _duplicates(problems, (c.chain_id for c in doc.fee_ceilings), _at("fee_ceilings"), "chain")
    for index, contract in enumerate(doc.disperse_contracts):
        token = contract_of.get((contract.chain_id, contract.address.lower()))
        if token is not None:
            problems.add(
                f"disperse_contracts[{index}].address",
                contract.address,
                f"the contract on chain {contract.chain_id} is {token}'s token contract",
            )


def _check_wallets(doc: PolicyDocument, problems: _Problems) -> None:
    _duplicates(problems, (w.id for w in doc.wallets), lambda i: f"wallets[{i}].id", "wallet id")
    for index, wallet in enumerate(doc.wallets):
        if wallet.chains is not None:
            if not wallet.chains:
                problems.add(f"wallets[{index}].chains", [], "empty; omit it to allow any chain")
            _duplicates(problems, wallet.chains, _at(f"wallets[{index}].chains"), "chain")


def _check_lists(doc: PolicyDocument, problems: _Problems) -> None:
    for name, entries in doc.whitelists.items():
        _duplicates(
            problems,
            ((e.address.lower(), e.chain_id) for e in entries),
            _at(f"whitelists.{name}"),
            "address and chain",
        )
        for index, entry in enumerate(entries):
            if entry.activation_delay_seconds and entry.added_at is None:
                problems.add(
                    f"whitelists.{name}[{index}].added_at",
                    None,
                    "an activation delay is counted from added_at, which is missing",
                )
    _duplicates(
        problems,
        ((e.address.lower(), e.chain_id) for e in doc.blacklist),
        lambda i: f"blacklist[{i}]",
        "address and chain",
    )


def _check_amount_digits(
    problems: _Problems, path: str, amount: Decimal, assets: Iterable[str], doc: PolicyDocument
) -> None:
    for symbol in assets:
        asset = doc.assets.get(symbol)
        if asset is not None and fraction_digits(amount) > asset.decimals:
            problems.add(
                path,
                amount_str(amount),
                f"more decimal places than {symbol} has ({asset.decimals})",
            )


def _check_match_list(
    problems: _Problems, path: str, values: tuple[Any, ...] | None, known: object | None
) -> None:
    if values is None:
        return
    if not values:
        problems.add(path, [], "empty list matches nothing; omit the criterion to match any")
    _duplicates(problems, values, lambda i: f"{path}[{i}]", "value")
    if isinstance(known, frozenset | Mapping):
        for index, value in enumerate(values):
            if value not in known:
                problems.add(f"{path}[{index}]", value, "not defined in this policy")


def _check_rules(doc: PolicyDocument, problems: _Problems) -> None:
    _duplicates(problems, (r.id for r in doc.rules), lambda i: f"rules[{i}].id", "rule id")
    wallet_ids = frozenset(w.id for w in doc.wallets)
    for index, rule in enumerate(doc.rules):
        at = f"rules[{index}]"
        match = rule.match
        _check_match_list(problems, f"{at}.match.wallets", match.wallets, wallet_ids)
        _check_match_list(problems, f"{at}.match.tiers", match.tiers, None)
        _check_match_list(problems, f"{at}.match.chains", match.chains, None)
        _check_match_list(problems, f"{at}.match.assets", match.assets, doc.assets)
        _check_match_list(problems, f"{at}.match.initiators", match.initiators, None)
        if match.wallets is not None and match.tiers is not None:
            problems.add(f"{at}.match", "wallets+tiers", "match wallets or tiers, not both")
        if match.destination.startswith("whitelist:"):
            group = match.destination.removeprefix("whitelist:")
            if group not in doc.whitelists:
                problems.add(f"{at}.match.destination", match.destination, "no such whitelist")
        if match.destination == "blacklist" and rule.action != "BLOCK":
            problems.add(
                f"{at}.action",
                rule.action,
                "a rule matching blacklisted destinations can only BLOCK "
                "(the blacklist overrides every rule)",
            )
        if match.amount is not None:
            _check_amount_range(doc, problems, f"{at}.match.amount", match.amount, match.assets)
        if rule.action == "REQUIRE_APPROVAL":
            if rule.approvals is None:
                problems.add(
                    f"{at}.approvals", None, "REQUIRE_APPROVAL needs approvals: {group, k}"
                )
            else:
                members = doc.groups.get(rule.approvals.group)
                if members is None:
                    problems.add(
                        f"{at}.approvals.group", rule.approvals.group, "no such approver group"
                    )
                elif rule.approvals.k > len(members):
                    problems.add(
                        f"{at}.approvals.k",
                        rule.approvals.k,
                        f"group {rule.approvals.group} has only {len(members)} members",
                    )
        elif rule.approvals is not None:
            problems.add(
                f"{at}.approvals",
                rule.approvals.model_dump(mode="json"),
                f"only REQUIRE_APPROVAL takes approvals, not {rule.action}",
            )


def _check_amount_range(
    doc: PolicyDocument,
    problems: _Problems,
    path: str,
    bounds: AmountRange,
    assets: tuple[str, ...] | None,
) -> None:
    if bounds.min is None and bounds.max is None:
        problems.add(path, {}, "give min, max or both; omit amount to match any amount")
        return
    if assets is None:
        problems.add(
            path,
            bounds.model_dump(mode="json"),
            "an amount range needs match.assets: amounts are in an asset's units",
        )
        return
    if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
        problems.add(f"{path}.max", amount_str(bounds.max), "below min")
    for key, value in (("min", bounds.min), ("max", bounds.max)):
        if value is not None:
            _check_amount_digits(problems, f"{path}.{key}", value, assets, doc)


def _check_limits(doc: PolicyDocument, problems: _Problems) -> None:
    _duplicates(
        problems, (v.id for v in doc.velocity_limits), lambda i: f"velocity_limits[{i}].id", "id"
    )
    wallet_ids = frozenset(w.id for w in doc.wallets)
    for index, limit in enumerate(doc.velocity_limits):
        at = f"velocity_limits[{index}]"
        if (limit.wallet is None) == (limit.tier is None):
            problems.add(
                at, limit.id, "a limit applies to one wallet or to a tier: give exactly one"
            )
        if limit.wallet is not None and limit.wallet not in wallet_ids:
            problems.add(f"{at}.wallet", limit.wallet, "no such wallet")
        if limit.asset not in doc.assets:
            problems.add(f"{at}.asset", limit.asset, "not defined in assets")
        _check_amount_digits(problems, f"{at}.max_amount", limit.max_amount, (limit.asset,), doc)


# --- reading files -----------------------------------------------------------------------------


def _format_loc(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (key)"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            path += f".{part}" if path else part
        else:
            path += f"[{json.dumps(part)}]"
    return path or "$"


_FRIENDLY = {
    "extra_forbidden": "unknown field (not part of the format)",
    "missing": "required field is missing",
    "literal_error": None,
    "model_type": "must be a mapping of fields",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
}


def schema_error_from(
    exc: ValidationError, *, source: str, error_type: type[PolicySchemaError] = PolicySchemaError
) -> PolicySchemaError:
    """Turn pydantic's report into our error: first problem in the message, all in `problems`."""
    problems: list[tuple[str, object, str]] = []
    for item in exc.errors(include_url=False):
        path = _format_loc(item["loc"])
        reason = _FRIENDLY.get(item["type"]) or item["msg"].removeprefix("Value error, ")
        value = None if item["type"] == "missing" else item.get("input")
        problems.append((path, value, reason))
    path, value, reason = problems[0]
    error = error_type(path, value, reason, source=source)
    error.problems = tuple(problems)
    return error


def parse_policy(obj: Mapping[str, Any], source: str = "<policy>") -> PolicyDocument:
    """Validate a parsed document; `PolicySchemaError` names the path and value of the problem."""
    if not isinstance(obj, Mapping):
        raise PolicySchemaError(
            "$", type(obj).__name__, "a policy document is a mapping of fields", source=source
        )
    try:
        return PolicyDocument.model_validate(dict(obj))
    except ValidationError as exc:
        raise schema_error_from(exc, source=source) from None
    except PolicySchemaError as exc:
        error = PolicySchemaError(exc.path, exc.value, exc.reason, source=source)
        error.problems = exc.problems
        raise error from None


def load_policy(path: Path) -> PolicyDocument:
    """Read and validate a policy file (YAML or JSON)."""
    return parse_policy(read_structured_file(path), source=str(path))
