"""EVM transaction codec for the threshold signer: build, sign over, attach, check.

The signer hashes MESSAGE BYTES with Keccak-256 (signer/protocol/sign.py), so a transaction is
signed by handing it `signing_payload()`: for EIP-1559, `0x02 ‖ rlp([chain_id, nonce,
max_priority_fee_per_gas, max_fee_per_gas, gas, to, value, data, access_list])`; for a legacy
EIP-155 transaction, `rlp([nonce, gas_price, gas, to, value, data, chain_id, 0, 0])`.  Keccak of
the payload is the hash the signature covers.  `with_signature` (or `attach`, for a
`signer.protocol.sign.Signature`) encodes the broadcastable transaction; `recover_sender`
re-derives its sender from the raw bytes alone (schema-free RLP and eth-keys), independently of
this module's typed encoder.

Encoding uses the `rlp` library with strict sedes, so `decode_signing_payload` is the exact
inverse of `signing_payload` (a key-share node can decode the bytes it is asked to sign and
evaluate its policy on what they really say).  Every field is validated when a transfer is built:
a rejected field raises `InvalidTransaction` naming it, and nothing is encoded.

Only light dependencies (rlp, eth-keys, eth-utils): key-share nodes (`signer.chains.intent`),
the CLI and the engine import this module, and a production install has no EVM.  The
in-process test chain is `coordinator.evm_chain` (the `evm` extra).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, cast

import rlp
from eth_keys.datatypes import PublicKey as EthPublicKey
from eth_keys.datatypes import Signature as EthSignature
from eth_keys.exceptions import BadSignature
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError as EthValidationError
from rlp.sedes import Binary, CountableList, List, big_endian_int, binary

from policies.document import eip55
from signer.curve import Point, Q
from signer.errors import TesseraError
from signer.protocol.sign import Signature

# --- limits --------------------------------------------------------------------------------------
UINT256_LIMIT: Final = 2**256
NONCE_LIMIT: Final = 2**64 - 1  # EIP-2681: a nonce is below 2⁶⁴ − 1
CHAIN_ID_MAX: Final = (2**64 - 1) // 2 - 36  # EIP-2294: v = y + 35 + 2·chain_id fits in 64 bits
# A per-gas fee above 10⁶ gwei is a unit mistake (ether or gwei passed as wei), not a price.
MAX_FEE_PER_GAS: Final = 10**15
# Far above what a transfer or token call needs; catches an amount passed as the gas limit.
MAX_GAS: Final = 50_000_000
MAX_DATA_BYTES: Final = 128 * 1024  # geth's transaction-pool size limit

# Intrinsic gas (EIP-2028 calldata, EIP-2930 access lists, EIP-7623 calldata floor).
TX_BASE_GAS: Final = 21_000
ZERO_BYTE_GAS: Final = 4
NONZERO_BYTE_GAS: Final = 16
ACCESS_LIST_ADDRESS_GAS: Final = 2_400
ACCESS_LIST_KEY_GAS: Final = 1_900
FLOOR_GAS_PER_TOKEN: Final = 10

EIP1559_TYPE: Final = 2
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_ZERO_ADDRESS: Final = "0x" + "0" * 40

# --- RLP layouts ---------------------------------------------------------------------------------
_ADDRESS = Binary.fixed_length(20)
_STORAGE_KEY = Binary.fixed_length(32)
_ACCESS_LIST = CountableList(List([_ADDRESS, CountableList(_STORAGE_KEY)]))
_EIP1559_FIELDS = [big_endian_int] * 5 + [_ADDRESS, big_endian_int, binary, _ACCESS_LIST]
_EIP1559_UNSIGNED = List(_EIP1559_FIELDS)
_EIP1559_SIGNED = List([*_EIP1559_FIELDS, big_endian_int, big_endian_int, big_endian_int])
_LEGACY_FIELDS = [big_endian_int] * 3 + [_ADDRESS, big_endian_int, binary]
_LEGACY_UNSIGNED = List([*_LEGACY_FIELDS, big_endian_int, big_endian_int, big_endian_int])
_LEGACY_SIGNED = _LEGACY_UNSIGNED  # (…, v, r, s) has the same shape as (…, chain_id, 0, 0)

AccessListEntry = tuple[str, tuple[bytes, ...]]  # (EIP-55 address, 32-byte storage keys)


# --- errors --------------------------------------------------------------------------------------
class ChainError(TesseraError):
    """Base class of every error about EVM transactions and chains."""


class InvalidTransaction(ChainError):
    """A transaction field fails validation; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"transaction field {field!r} rejected: {reason}")


class InvalidSignature(InvalidTransaction):
    """A signature component that cannot be attached (r, s, y_parity, recovery_id, digest)."""


class MalformedTransaction(ChainError):
    """Bytes that do not decode to a canonical transaction of the expected kind."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what} does not decode: {reason}")


# --- field validation ----------------------------------------------------------------------------
def integer_field(field: str, value: object, low: int, high: int) -> int:
    """An int (not bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTransaction(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidTransaction(field, f"{value} outside [{low}, {high}]")
    return value


def _checksummed(raw: bytes) -> ChecksumAddress:
    """A decoded 20-byte address in its EIP-55 spelling (`policies.document.eip55`: cached)."""
    return cast(ChecksumAddress, eip55("0x" + raw.hex()))


def checksum_address(field: str, value: object) -> ChecksumAddress:
    """A 0x-prefixed, 20-byte address in its exact EIP-55 checksummed spelling."""
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        raise InvalidTransaction(field, f"{value!r} is not a 0x-prefixed 20-byte hex address")
    expected = eip55(value)
    if value != expected:
        raise InvalidTransaction(field, f"{value} fails its EIP-55 checksum (expected {expected})")
    return cast(ChecksumAddress, value)


def _destination(value: object) -> ChecksumAddress:
    address = checksum_address("to", value)
    if address == _ZERO_ADDRESS:
        raise InvalidTransaction("to", "the zero address burns what is sent to it")
    return address


def _data(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidTransaction("data", f"must be bytes, got {type(value).__name__}")
    if len(value) > MAX_DATA_BYTES:
        raise InvalidTransaction("data", f"{len(value)} bytes, limit {MAX_DATA_BYTES}")
    return value


def _access_list(value: object) -> tuple[AccessListEntry, ...]:
    if not isinstance(value, tuple):
        raise InvalidTransaction("access_list", f"must be a tuple, got {type(value).__name__}")
    for i, entry in enumerate(value):
        where = f"access_list[{i}]"
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise InvalidTransaction(where, "must be an (address, storage keys) pair")
        checksum_address(f"{where}.address", entry[0])
        keys = entry[1]
        if not isinstance(keys, tuple):
            raise InvalidTransaction(f"{where}.storage_keys", "must be a tuple of 32-byte keys")
        for j, key in enumerate(keys):
            if not (isinstance(key, bytes) and len(key) == 32):
                raise InvalidTransaction(f"{where}.storage_keys[{j}]", "must be 32 bytes")
    return cast(tuple[AccessListEntry, ...], value)


def intrinsic_gas(data: bytes, access_list: Sequence[AccessListEntry] = ()) -> int:
    """The least gas limit a call with this data and access list needs since Prague: the larger
    of the EIP-2028/2930 intrinsic cost and the EIP-7623 calldata floor (on older forks only
    the first applies, so the bound is safe everywhere)."""
    zeros = data.count(0)
    nonzeros = len(data) - zeros
    standard = (
        TX_BASE_GAS
        + ZERO_BYTE_GAS * zeros
        + NONZERO_BYTE_GAS * nonzeros
        + sum(ACCESS_LIST_ADDRESS_GAS + ACCESS_LIST_KEY_GAS * len(k) for _, k in access_list)
    )
    floor = TX_BASE_GAS + FLOOR_GAS_PER_TOKEN * (zeros + 4 * nonzeros)
    return max(standard, floor)


def _gas(value: object, data: bytes, access_list: Sequence[AccessListEntry]) -> int:
    gas = integer_field("gas", value, 0, MAX_GAS)
    needed = intrinsic_gas(data, access_list)
    if gas < needed:
        raise InvalidTransaction("gas", f"{gas} is below the intrinsic cost {needed}")
    return gas


def _common(tx: Eip1559Transfer | LegacyTransfer) -> None:
    integer_field("chain_id", tx.chain_id, 1, CHAIN_ID_MAX)
    integer_field("nonce", tx.nonce, 0, NONCE_LIMIT - 1)
    _destination(tx.to)
    integer_field("value", tx.value, 0, UINT256_LIMIT - 1)
    _data(tx.data)


def _signature_parts(r: object, s: object, y_parity: object) -> tuple[int, int, int]:
    """EIP-2 bounds: 1 ≤ r < q, 1 ≤ s ≤ q/2 (low-s), parity 0 or 1."""
    checked = []
    for field, value, low, high in (
        ("r", r, 1, Q - 1),
        ("s", s, 1, Q - 1),
        ("y_parity", y_parity, 0, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSignature(field, f"must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise InvalidSignature(field, f"{value} outside [{low}, {high}]")
        checked.append(value)
    if checked[1] > Q // 2:
        raise InvalidSignature("s", "high s: EIP-2 accepts only s ≤ q/2; normalise to q − s")
    return checked[0], checked[1], checked[2]


def _encode(fields: Sequence[Any], sedes: Any) -> bytes:
    return bytes(rlp.encode(fields, sedes=sedes))


def _attach(tx: Eip1559Transfer | LegacyTransfer, signature: Signature) -> bytes:
    """Check the signature covers this payload and comes from its key, then encode."""
    if signature.digest != keccak(tx.signing_payload()):
        raise InvalidSignature("digest", "the signature is over another message than this payload")
    if signature.recovery_id not in (0, 1):
        raise InvalidSignature(
            "recovery_id",
            f"{signature.recovery_id}: x(R) ≥ q has no Ethereum encoding; sign again",
        )
    raw = tx.with_signature(signature.r, signature.s, signature.recovery_id)
    expected = address_of(signature.public_key)
    if recover_sender(raw) != expected:
        raise InvalidSignature("recovery_id", f"the signed transaction does not recover {expected}")
    return raw


# --- transactions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Eip1559Transfer:
    """An EIP-1559 (type 2) call or transfer to an existing address (no contract creation)."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    to: str
    value: int
    data: bytes = b""
    access_list: tuple[AccessListEntry, ...] = ()

    def __post_init__(self) -> None:
        _common(self)
        integer_field("max_fee_per_gas", self.max_fee_per_gas, 0, MAX_FEE_PER_GAS)
        integer_field("max_priority_fee_per_gas", self.max_priority_fee_per_gas, 0, MAX_FEE_PER_GAS)
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            raise InvalidTransaction(
                "max_priority_fee_per_gas",
                f"{self.max_priority_fee_per_gas} exceeds max_fee_per_gas {self.max_fee_per_gas}",
            )
        _access_list(self.access_list)
        _gas(self.gas, self.data, self.access_list)

    def _fields(self) -> list[Any]:
        return [
            self.chain_id,
            self.nonce,
            self.max_priority_fee_per_gas,
            self.max_fee_per_gas,
            self.gas,
            bytes.fromhex(self.to[2:]),
            self.value,
            self.data,
            [[bytes.fromhex(a[2:]), list(keys)] for a, keys in self.access_list],
        ]

    def signing_payload(self) -> bytes:
        """`0x02 ‖ rlp(unsigned fields)`: the message bytes the signer hashes with Keccak-256."""
        return bytes([EIP1559_TYPE]) + _encode(self._fields(), _EIP1559_UNSIGNED)

    def with_signature(self, r: int, s: int, y_parity: int) -> bytes:
        """The raw signed transaction `0x02 ‖ rlp(fields ‖ y_parity, r, s)`."""
        r, s, y_parity = _signature_parts(r, s, y_parity)
        fields = [*self._fields(), y_parity, r, s]
        return bytes([EIP1559_TYPE]) + _encode(fields, _EIP1559_SIGNED)

    def attach(self, signature: Signature) -> bytes:
        """`with_signature` for a threshold signature, after checking it is over this payload
        and that the result recovers to the signing key's address."""
        return _attach(self, signature)


@dataclass(frozen=True)
class LegacyTransfer:
    """A legacy, EIP-155 replay-protected call or transfer to an existing address."""

    chain_id: int
    nonce: int
    gas_price: int
    gas: int
    to: str
    value: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _common(self)
        integer_field("gas_price", self.gas_price, 0, MAX_FEE_PER_GAS)
        _gas(self.gas, self.data, ())

    def _fields(self) -> list[Any]:
        return [
            self.nonce,
            self.gas_price,
            self.gas,
            bytes.fromhex(self.to[2:]),
            self.value,
            self.data,
        ]

    def signing_payload(self) -> bytes:
        """`rlp(nonce, gas_price, gas, to, value, data, chain_id, 0, 0)` (EIP-155)."""
        return _encode([*self._fields(), self.chain_id, 0, 0], _LEGACY_UNSIGNED)

    def with_signature(self, r: int, s: int, y_parity: int) -> bytes:
        """The raw signed transaction with v = y_parity + 35 + 2·chain_id."""
        r, s, y_parity = _signature_parts(r, s, y_parity)
        v = y_parity + 35 + 2 * self.chain_id
        return _encode([*self._fields(), v, r, s], _LEGACY_SIGNED)

    def attach(self, signature: Signature) -> bytes:
        """`with_signature` for a threshold signature (see `Eip1559Transfer.attach`)."""
        return _attach(self, signature)


Transfer = Eip1559Transfer | LegacyTransfer


def _decode(data: bytes, sedes: Any, what: str) -> tuple[Any, ...]:
    try:
        fields = rlp.decode(data, sedes=sedes, strict=True)
    except rlp.exceptions.RLPException as exc:
        raise MalformedTransaction(what, str(exc)) from exc
    if _encode(fields, sedes) != data:  # canonical form only: one encoding per value
        raise MalformedTransaction(what, "not the canonical RLP encoding")
    return cast(tuple[Any, ...], fields)


def decode_signing_payload(payload: bytes) -> Transfer:
    """The transfer whose `signing_payload()` is exactly `payload` (strict inverse)."""
    if not isinstance(payload, bytes) or not payload:
        raise MalformedTransaction("signing payload", "must be non-empty bytes")
    if payload[0] == EIP1559_TYPE:
        f = _decode(payload[1:], _EIP1559_UNSIGNED, "EIP-1559 signing payload")
        access = tuple((_checksummed(a), tuple(keys)) for a, keys in f[8])
        return Eip1559Transfer(
            chain_id=f[0],
            nonce=f[1],
            max_priority_fee_per_gas=f[2],
            max_fee_per_gas=f[3],
            gas=f[4],
            to=_checksummed(f[5]),
            value=f[6],
            data=f[7],
            access_list=access,
        )
    if payload[0] >= 0xC0:  # an RLP list: legacy
        f = _decode(payload, _LEGACY_UNSIGNED, "legacy signing payload")
        if f[7] != 0 or f[8] != 0:
            raise MalformedTransaction("legacy signing payload", "EIP-155 r and s slots not 0")
        return LegacyTransfer(
            chain_id=f[6],
            nonce=f[0],
            gas_price=f[1],
            gas=f[2],
            to=_checksummed(f[3]),
            value=f[4],
            data=f[5],
        )
    raise MalformedTransaction("signing payload", f"unsupported type byte {payload[0]:#04x}")


def chain_id_of(raw_signed_tx: bytes) -> int | None:
    """The chain id a raw signed transaction commits to; None for an unprotected
    (pre-EIP-155) legacy transaction.  Reads any typed transaction's first field."""
    if not isinstance(raw_signed_tx, bytes) or not raw_signed_tx:
        raise MalformedTransaction("signed transaction", "must be non-empty bytes")
    try:
        if raw_signed_tx[0] >= 0xC0:
            v = big_endian_int.deserialize(rlp.decode(raw_signed_tx, strict=True)[6])
            if v in (27, 28):
                return None
            if v < 35:
                raise MalformedTransaction("signed transaction", f"legacy v = {v}")
            return cast(int, (v - 35) // 2)
        if raw_signed_tx[0] <= 0x7F:
            return cast(int, big_endian_int.deserialize(rlp.decode(raw_signed_tx[1:])[0]))
    except (rlp.exceptions.RLPException, IndexError, TypeError) as exc:
        raise MalformedTransaction("signed transaction", str(exc)) from exc
    raise MalformedTransaction("signed transaction", f"type byte {raw_signed_tx[0]:#04x}")


def transaction_hash(raw_signed_tx: bytes) -> bytes:
    """The hash the chain knows the transaction by: keccak of the raw signed bytes."""
    return keccak(raw_signed_tx)


def address_of(public_key: Point) -> ChecksumAddress:
    """The EIP-55 checksummed Ethereum address of a secp256k1 public key."""
    return _address_of_encoding(public_key.to_bytes())


@lru_cache(maxsize=1024)
def _address_of_encoding(compressed: bytes) -> ChecksumAddress:
    # Asked on every signature (the sender check, on the nodes and the coordinator) for the
    # same few keys: decompression and Keccak once per key, not per request.
    return EthPublicKey.from_compressed_bytes(compressed).to_checksum_address()


def _signed_fields(raw_signed_tx: bytes) -> tuple[bytes, int, int, int]:
    """(signing hash, y parity, r, s) of a raw signed transaction, read with schema-free RLP:
    the unsigned fields are re-encoded exactly as they came, so the hash is the one the chain
    computes whatever this module's builder would have said about them."""
    if not isinstance(raw_signed_tx, bytes) or not raw_signed_tx:
        raise MalformedTransaction("signed transaction", "must be non-empty bytes")
    try:
        if raw_signed_tx[0] == EIP1559_TYPE:
            items = rlp.decode(raw_signed_tx[1:], strict=True)
            if not isinstance(items, list) or len(items) != 12:
                raise MalformedTransaction("signed transaction", "EIP-1559 needs 12 fields")
            y, r, s = (big_endian_int.deserialize(item) for item in items[9:])
            digest = keccak(bytes([EIP1559_TYPE]) + rlp.encode(items[:9]))
            return digest, y, r, s
        if raw_signed_tx[0] >= 0xC0:
            items = rlp.decode(raw_signed_tx, strict=True)
            if not isinstance(items, list) or len(items) != 9:
                raise MalformedTransaction("signed transaction", "legacy needs 9 fields")
            v, r, s = (big_endian_int.deserialize(item) for item in items[6:])
            if v in (27, 28):  # unprotected (pre-EIP-155): the chain id is not signed
                return keccak(rlp.encode(items[:6])), v - 27, r, s
            if v < 35:
                raise MalformedTransaction("signed transaction", f"legacy v = {v}")
            chain_id = (v - 35) // 2
            unsigned = [*items[:6], big_endian_int.serialize(chain_id), b"", b""]
            return keccak(rlp.encode(unsigned)), (v - 35) % 2, r, s
    except (rlp.exceptions.RLPException, TypeError) as exc:
        raise MalformedTransaction("signed transaction", str(exc)) from exc
    kind = f"unsupported type byte {raw_signed_tx[0]:#04x}"
    raise MalformedTransaction("signed transaction", kind)


def recover_sender(raw_signed_tx: bytes) -> ChecksumAddress:
    """The sender a raw signed transaction recovers to (eth-keys ECDSA recovery)."""
    digest, y, r, s = _signed_fields(raw_signed_tx)
    try:
        public = EthSignature(vrs=(y, r, s)).recover_public_key_from_msg_hash(digest)
    except (BadSignature, EthValidationError, ValueError, TypeError) as exc:
        raise MalformedTransaction("signed transaction", f"no sender recovers: {exc}") from exc
    return public.to_checksum_address()
