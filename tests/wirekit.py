"""Hand-built wire frames and decode-error assertions, shared by the proof and attack tests.

The builders write the TLV format of signer/encoding.py byte by byte (`tlv`, `frame_list`,
`int_frame`), so a test can put any frame, canonical or not, where a field's value belongs
(`wire`, `wire_items`, `proof_wire`).  `decode_error` / `json_error` decode with a `Wire` class and
assert the exact `Check` and that the location names that message (and, when given, the exact
location).  Tests bind the class once where that keeps call sites short:
``decode_error = functools.partial(wirekit.decode_error, FacProof)``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from signer.encoding import TAG_INT, TAG_LIST, ListOf, Nat, Wire, encode
from signer.errors import Check, EncodingError


def tlv(tag: int, payload: bytes) -> bytes:
    """One frame: type tag, u32 big-endian length, payload."""
    return struct.pack(">BI", tag, len(payload)) + payload


def frame_list(items: Sequence[bytes]) -> bytes:
    """A list frame around already encoded items."""
    return tlv(TAG_LIST, struct.pack(">I", len(items)) + b"".join(items))


def int_frame(sign: int, body: bytes) -> bytes:
    """An integer frame with the given sign byte and magnitude bytes, canonical or not."""
    return tlv(TAG_INT, bytes([sign]) + body)


def wire(name: str, items: Sequence[tuple[str, bytes]]) -> bytes:
    """A message `[name, [[field, value], ...]]` from already encoded field values."""
    return frame_list([encode(name), frame_list([frame_list([encode(k), v]) for k, v in items])])


def wire_items(proof: Wire, **override: Any) -> list[tuple[str, bytes]]:
    """The proof's fields in schema order, encoded; an override that is `bytes` is a raw frame,
    anything else is encoded."""
    items = []
    for name in type(proof).SCHEMA:
        value = override.get(name, getattr(proof, name))
        items.append((name, value if isinstance(value, bytes) else encode(value)))
    return items


def proof_wire(proof: Wire, **override: Any) -> bytes:
    """The proof's message with some field values replaced (see `wire_items`)."""
    return wire(type(proof).WIRE_NAME, wire_items(proof, **override))


def max_int_bits(cls: type[Wire]) -> int:
    """The largest integer field of the schema: the decoder refuses longer integers outright."""
    kinds = [k.item if isinstance(k, ListOf) else k for k in cls.SCHEMA.values()]
    return max([k.max_bits for k in kinds if isinstance(k, Nat)] + [8])


def max_int_bytes(cls: type[Wire]) -> int:
    return (max_int_bits(cls) + 7) // 8


def _rejected(
    cls: type[Wire], decode: Callable[[Any], Wire], value: object, check: Check, where: str | None
) -> EncodingError:
    with pytest.raises(EncodingError) as info:
        decode(value)
    err = info.value
    assert err.check is check, err
    assert err.where.startswith(cls.WIRE_NAME), err
    if where is not None:
        assert err.where == where, err
    return err


def decode_error(
    cls: type[Wire], data: bytes, check: Check, where: str | None = None
) -> EncodingError:
    """`cls.from_bytes(data)` fails with exactly `check` (and at `where`, if given)."""
    return _rejected(cls, cls.from_bytes, data, check, where)


def json_error(
    cls: type[Wire], doc: object, check: Check, where: str | None = None
) -> EncodingError:
    """`cls.from_json(doc)` fails with exactly `check` (and at `where`, if given)."""
    return _rejected(cls, cls.from_json, doc, check, where)
