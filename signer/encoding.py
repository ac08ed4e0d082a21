"""Canonical, injective, typed binary encoding (TLV) and a field-schema codec for messages.

Every value is `type tag (1 byte) ‖ length (u32 big-endian) ‖ payload`:
  bytes 0x01 raw · int 0x02 sign byte (00/01) ‖ minimal big-endian magnitude (zero = empty, never
  negative) · point 0x03 33-byte SEC1 · str 0x04 UTF-8 · list 0x05 count (u32) ‖ items.
The encoding is prefix-free and has a strict decoder, hence injective: two different values never
share an encoding, which is what Fiat–Shamir needs against TSSHOCK α-shuffle (attacks.md A04).
The same encoding carries proofs and keys on the wire; decoding checks every length against the
field's bound *before* building an integer (attacks.md A17, DoS).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeAlias

from signer.curve import POINT_BYTES, Point
from signer.errors import Check, EncodingError

TAG_BYTES = 0x01
TAG_INT = 0x02
TAG_POINT = 0x03
TAG_STR = 0x04
TAG_LIST = 0x05

Encodable: TypeAlias = "bytes | int | Point | str | Sequence[Encodable]"

#: Refuse to decode anything larger (a whole proof of the largest kind is ~150 KB).
MAX_ENCODED_BYTES = 4 * 1024 * 1024


def _frame(tag: int, payload: bytes) -> bytes:
    return struct.pack(">BI", tag, len(payload)) + payload


def encode_int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
    return _frame(TAG_INT, (b"\x01" if value < 0 else b"\x00") + body)


def encode(value: Encodable) -> bytes:
    """Canonical encoding of a value (bytes, int, Point, str or a list/tuple of those)."""
    if isinstance(value, bool):
        raise TypeError("bool is not encodable; use an int")
    if isinstance(value, bytes | bytearray):
        return _frame(TAG_BYTES, bytes(value))
    if isinstance(value, int):
        return encode_int(value)
    if isinstance(value, Point):
        return _frame(TAG_POINT, value.to_bytes())
    if isinstance(value, str):
        return _frame(TAG_STR, value.encode())
    if isinstance(value, list | tuple):
        return _frame(TAG_LIST, struct.pack(">I", len(value)) + b"".join(encode(v) for v in value))
    # gmpy2.mpz and other int-likes
    if hasattr(value, "__index__"):
        return encode_int(int(value))
    raise TypeError(f"cannot encode {type(value).__name__}")


#: Deepest nesting of lists the decoder accepts (the outermost list is depth 1).  The deepest
#: legitimate value is 4 levels: a `Wire` message with a `ListOf` field
#: ([name, [[field, [items]]]]) and presign identification's round-1 broadcast inside the
#: round-1 wrapper ([nonce, context, [H, [[j, D, F, proof]]]]); node codec records go to 3 and
#: proofs travel as nested *bytes*, decoded by their own call.  16 leaves room for new formats;
#: anything deeper is an attack on the decoder — ~1000 levels fit in 18 KB (attacks.md A17).
MAX_DEPTH = 16


def _decode_at(
    data: bytes, pos: int, limit: int, where: str, max_int_bytes: int, depth: int
) -> tuple[Encodable, int]:
    """Decode the value whose frame starts at `pos` and must end by `limit`.

    Offsets only: no level copies its payload, only leaves (bytes, integers, points, strings)
    are materialised, so a large payload nested deep costs its size once (attacks.md A17)."""
    if pos + 5 > limit:
        raise EncodingError(where, Check.DECODE, "truncated header")
    tag, length = struct.unpack_from(">BI", data, pos)
    start, end = pos + 5, pos + 5 + length
    if end > limit:
        raise EncodingError(where, Check.DECODE, f"length {length} runs past the end")
    if tag == TAG_BYTES:
        return data[start:end], end
    if tag == TAG_INT:
        if not length or data[start] not in (0, 1):
            raise EncodingError(where, Check.DECODE, "integer without a valid sign byte")
        negative = data[start] == 1
        if length - 1 > max_int_bytes:  # before any integer is built (attacks.md A17)
            raise EncodingError(where, Check.RANGE, f"integer of {length - 1} bytes is too long")
        if length > 1 and data[start + 1] == 0:
            raise EncodingError(where, Check.DECODE, "non-minimal integer (leading zero byte)")
        if negative and length == 1:
            raise EncodingError(where, Check.DECODE, "negative zero")
        magnitude = int.from_bytes(data[start + 1 : end], "big")
        return (-magnitude if negative else magnitude), end
    if tag == TAG_POINT:
        if length != POINT_BYTES:
            raise EncodingError(where, Check.BAD_POINT, f"point of {length} bytes")
        return Point.from_bytes(data[start:end], where), end
    if tag == TAG_STR:
        try:
            return data[start:end].decode(), end
        except UnicodeDecodeError as exc:
            raise EncodingError(where, Check.DECODE, "invalid UTF-8") from exc
    if tag == TAG_LIST:
        if depth >= MAX_DEPTH:  # before looking inside: the recursion stays ≤ MAX_DEPTH deep
            raise EncodingError(where, Check.LENGTH, f"lists nested deeper than {MAX_DEPTH}")
        if length < 4:
            raise EncodingError(where, Check.DECODE, "list without a count")
        (count,) = struct.unpack_from(">I", data, start)
        if count > length:  # every item takes ≥ 5 bytes; cheap bound before looping
            raise EncodingError(where, Check.DECODE, f"list count {count} exceeds its length")
        items: list[Encodable] = []
        inner = start + 4
        for k in range(count):
            item, inner = _decode_at(data, inner, end, f"{where}[{k}]", max_int_bytes, depth + 1)
            items.append(item)
        if inner != end:
            raise EncodingError(where, Check.DECODE, "trailing bytes inside list")
        return items, end
    raise EncodingError(where, Check.DECODE, f"unknown type tag {tag:#04x}")


def decode(
    data: bytes, where: str = "message", max_int_bits: int = 8 * MAX_ENCODED_BYTES
) -> Encodable:
    """Strict inverse of `encode`: rejects trailing bytes and every non-canonical form, any
    integer longer than `max_int_bits` before converting it, and lists nested deeper than
    `MAX_DEPTH` (EncodingError naming `where`, which callers make name the sender)."""
    if not isinstance(data, bytes | bytearray):
        raise EncodingError(where, Check.DECODE, "not bytes")
    if len(data) > MAX_ENCODED_BYTES:
        raise EncodingError(where, Check.LENGTH, f"{len(data)} bytes exceeds {MAX_ENCODED_BYTES}")
    raw = bytes(data)
    value, end = _decode_at(raw, 0, len(raw), where, (max_int_bits + 7) // 8, 0)
    if end != len(raw):
        raise EncodingError(where, Check.DECODE, f"{len(raw) - end} trailing bytes")
    return value


# --- field schema -----------------------------------------------------------------------------

_HEX = re.compile(r"-?0x(0|[1-9a-f][0-9a-f]*)")
_POINT_HEX = re.compile(r"[0-9a-f]{66}")


def _int_from_json(value: object, where: str, max_bits: int) -> int:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise EncodingError(where, Check.DECODE, "expected a canonical hex string like '0x1f'")
    if len(value) > max_bits // 4 + 4:
        raise EncodingError(where, Check.RANGE, f"longer than {max_bits} bits")
    number = int(value, 16)
    if value.startswith("-") and number == 0:
        raise EncodingError(where, Check.DECODE, "negative zero")
    return number


def _int_to_json(value: int) -> str:
    return ("-" if value < 0 else "") + hex(abs(int(value)))


def _check_int(value: object, where: str, max_bits: int, signed: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EncodingError(where, Check.DECODE, "expected an integer")
    if value < 0 and not signed:
        raise EncodingError(where, Check.RANGE, "negative value for a natural number")
    if abs(value).bit_length() > max_bits:
        raise EncodingError(where, Check.RANGE, f"longer than {max_bits} bits")
    return value


@dataclass(frozen=True)
class Nat:
    """A non-negative integer of at most `max_bits` bits (exact ranges are the verifier's job)."""

    max_bits: int
    signed: ClassVar[bool] = False

    def check(self, value: object, where: str) -> Any:
        return _check_int(value, where, self.max_bits, self.signed)

    def to_json(self, value: Any) -> Any:
        return _int_to_json(value)

    def from_json(self, value: object, where: str) -> Any:
        return self.check(_int_from_json(value, where, self.max_bits), where)


@dataclass(frozen=True)
class Int(Nat):
    """A signed integer whose magnitude has at most `max_bits` bits."""

    signed: ClassVar[bool] = True


@dataclass(frozen=True)
class PointField:
    """A non-identity secp256k1 point (SEC1 compressed on the wire)."""

    def check(self, value: object, where: str) -> Any:
        if not isinstance(value, Point):
            raise EncodingError(where, Check.BAD_POINT, "expected a point")
        return value

    def to_json(self, value: Any) -> Any:
        return value.to_bytes().hex()

    def from_json(self, value: object, where: str) -> Any:
        if not isinstance(value, str) or len(value) != 2 * POINT_BYTES:
            raise EncodingError(where, Check.BAD_POINT, "expected 66 hex characters")
        if not _POINT_HEX.fullmatch(value):
            raise EncodingError(where, Check.DECODE, "expected lower-case hex")
        return Point.from_bytes(bytes.fromhex(value), where)


@dataclass(frozen=True)
class ListOf:
    """A list of exactly `length` items of one field kind (empty or short lists never verify)."""

    item: Nat | PointField
    length: int

    def check(self, value: object, where: str) -> Any:
        if not isinstance(value, list | tuple):
            raise EncodingError(where, Check.DECODE, "expected a list")
        if len(value) != self.length:
            raise EncodingError(where, Check.LENGTH, f"{len(value)} items, expected {self.length}")
        return tuple(self.item.check(v, f"{where}[{k}]") for k, v in enumerate(value))

    def to_json(self, value: Any) -> Any:
        return [self.item.to_json(v) for v in value]

    def from_json(self, value: object, where: str) -> Any:
        if not isinstance(value, list):
            raise EncodingError(where, Check.DECODE, "expected a JSON array")
        if len(value) != self.length:
            raise EncodingError(where, Check.LENGTH, f"{len(value)} items, expected {self.length}")
        return tuple(self.item.from_json(v, f"{where}[{k}]") for k, v in enumerate(value))


FieldKind = Nat | PointField | ListOf


class Wire:
    """Mixin for frozen dataclasses with a `SCHEMA` mapping field name → field kind.

    Binary form: encode([[name, value], ...]) in schema order; JSON form: {name: value}.
    Decoding requires exactly the schema's fields, in order, each within its bounds.
    """

    SCHEMA: ClassVar[dict[str, FieldKind]]
    WIRE_NAME: ClassVar[str]

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Self:
        """Construct from decoded fields (override when the constructor differs)."""
        return cls(**values)

    @classmethod
    def _max_int_bits(cls) -> int:
        kinds = [k.item if isinstance(k, ListOf) else k for k in cls.SCHEMA.values()]
        return max([k.max_bits for k in kinds if isinstance(k, Nat)] + [8])

    def to_bytes(self) -> bytes:
        return encode(
            [self.WIRE_NAME, [[name, _as_encodable(getattr(self, name))] for name in self.SCHEMA]]
        )

    def to_json(self) -> dict[str, Any]:
        return {name: kind.to_json(getattr(self, name)) for name, kind in self.SCHEMA.items()}

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        where = cls.WIRE_NAME
        raw = decode(data, where, cls._max_int_bits())
        if not (isinstance(raw, list) and len(raw) == 2 and raw[0] == cls.WIRE_NAME):
            raise EncodingError(where, Check.DECODE, f"not a {cls.WIRE_NAME} message")
        body = raw[1]
        if not isinstance(body, list) or len(body) != len(cls.SCHEMA):
            raise EncodingError(where, Check.FIELD, f"expected fields {list(cls.SCHEMA)}")
        values: dict[str, Any] = {}
        for (name, kind), item in zip(cls.SCHEMA.items(), body, strict=True):
            if not (isinstance(item, list) and len(item) == 2 and item[0] == name):
                raise EncodingError(where, Check.FIELD, f"expected field {name!r}")
            values[name] = kind.check(item[1], f"{where}.{name}")
        return cls._build(values)

    @classmethod
    def from_json(cls, doc: object) -> Self:
        where = cls.WIRE_NAME
        if not isinstance(doc, dict):
            raise EncodingError(where, Check.DECODE, "expected a JSON object")
        missing = [n for n in cls.SCHEMA if n not in doc]
        unknown = [n for n in doc if n not in cls.SCHEMA]
        if missing or unknown:
            raise EncodingError(where, Check.FIELD, f"missing {missing}, unknown {unknown}")
        values = {n: k.from_json(doc[n], f"{where}.{n}") for n, k in cls.SCHEMA.items()}
        return cls._build(values)


def _as_encodable(value: Any) -> Encodable:
    if isinstance(value, tuple | list):
        return [_as_encodable(v) for v in value]
    if isinstance(value, Point | bytes | str):
        return value
    return int(value)
