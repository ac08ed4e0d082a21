"""Canonical JSON (RFC 8785, JCS) for everything the policy engine hashes or signs.

The subset we accept is the one our documents need: objects with string keys, arrays, strings,
booleans, null and integers within ±(2^53 − 1) (I-JSON, RFC 7493 §2.2).  Floats are refused:
amounts are decimal strings, so no value ever depends on binary floating point.  Keys are sorted
by their UTF-16 code units (RFC 8785 §3.2.3); strings are escaped as ECMAScript's
JSON.stringify does (RFC 8785 §3.2.2.2), which `json.dumps(ensure_ascii=False)` matches for
well-formed strings; lone surrogates are refused because they have no UTF-8 form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from policies.errors import CanonicalizationError

MAX_SAFE_INTEGER = 2**53 - 1


def _check_string(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(path, "string contains a lone surrogate") from exc


def _normalise(value: Any, path: str) -> Any:
    # bool before int: bool is a subclass of int in Python.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalizationError(path, f"integer {value} outside ±(2^53 − 1)")
        return value
    if isinstance(value, float):
        raise CanonicalizationError(path, "floats are not allowed; use a decimal string")
    if isinstance(value, str):
        _check_string(value, path)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            if not isinstance(key, str):
                raise CanonicalizationError(path, f"object key {key!r} is not a string")
            _check_string(key, f"{path}.{key}")
            out[key] = _normalise(value[key], f"{path}.{key}")
        return dict(sorted(out.items(), key=lambda item: item[0].encode("utf-16-be")))
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_normalise(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise CanonicalizationError(path, f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 serialisation of ``value`` as UTF-8 bytes."""
    normalised = _normalise(value, "$")
    # sort_keys=False: _normalise already ordered keys by UTF-16 code units, which differs from
    # Python's code-point order for characters outside the BMP.
    text = json.dumps(normalised, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def canonical_digest(value: Any) -> bytes:
    """SHA-256 of the canonical JSON of ``value`` (32 bytes)."""
    return hashlib.sha256(canonical_json(value)).digest()


def canonical_hash_hex(value: Any) -> str:
    """``canonical_digest`` as lowercase hex: the form policy hashes take in documents and logs."""
    return canonical_digest(value).hex()
