"""What a token holds and can do, for `tessera hsm status`: token facts, the objects the user
can see (labels, classes, protection flags — never a key value) and the nodes they belong to.

Functions here run inside a `hsm.session.TokenSession` call (its lock held).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11.exceptions import PKCS11Error

from hsm.identity import supports_eddsa, supports_p256
from hsm.keys import IDENTITY_LABEL_PREFIX, KEK_LABEL_PREFIX, bool_attribute

if TYPE_CHECKING:
    from pkcs11.types import Session, Token


@dataclass(frozen=True, slots=True)
class TokenObjectInfo:
    """One object in the token, as `inventory()` lists it (never a key value)."""

    label: str
    object_class: str
    key_type: str | None
    sensitive: bool | None
    extractable: bool | None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """The token and what it can do, for `tessera hsm status`."""

    label: str
    serial: str
    manufacturer: str
    model: str
    flags: tuple[str, ...]
    aes_gcm: bool
    ed25519: bool
    p256: bool


def read_token_info(token: Token) -> TokenInfo:
    """Label, serial, flags and the mechanisms the node needs."""
    slot = token.slot
    mechanisms = set(slot.get_mechanisms())
    flags = tuple(f.name or str(int(f)) for f in TokenFlag if token.flags & f)
    return TokenInfo(
        label=token.label,
        serial=token.serial.decode("ascii", errors="replace").strip(),
        manufacturer=token.manufacturer_id,
        model=token.model,
        flags=flags,
        aes_gcm=Mechanism.AES_GCM in mechanisms,
        ed25519=supports_eddsa(slot),
        p256=supports_p256(slot),
    )


def read_inventory(session: Session) -> list[TokenObjectInfo]:
    """Every object the logged-in user can see: labels, classes and protection flags."""
    rows: list[TokenObjectInfo] = []
    for obj in list(session.get_objects()):
        object_class = obj.object_class
        class_name = object_class.name if object_class is not None else "UNKNOWN"
        try:
            label = str(obj[Attribute.LABEL])
        except PKCS11Error:
            label = ""
        try:
            key_type: str | None = KeyType(obj[Attribute.KEY_TYPE]).name
        except (PKCS11Error, ValueError):
            key_type = None
        secret = object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
        rows.append(
            TokenObjectInfo(
                label=label,
                object_class=class_name or "UNKNOWN",
                key_type=key_type,
                sensitive=bool_attribute(obj, Attribute.SENSITIVE) if secret else None,
                extractable=bool_attribute(obj, Attribute.EXTRACTABLE) if secret else None,
            )
        )
    return sorted(rows, key=lambda r: (r.label, r.object_class))


def node_ids_of(rows: list[TokenObjectInfo]) -> list[str]:
    """Nodes with a KEK or identity key among `rows` (by our label scheme)."""
    nodes: set[str] = set()
    for row in rows:
        for prefix in (KEK_LABEL_PREFIX, IDENTITY_LABEL_PREFIX):
            if row.label.startswith(prefix) and len(row.label) > len(prefix):
                nodes.add(row.label[len(prefix) :])
    return sorted(nodes)
