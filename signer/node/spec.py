"""`SessionSpec`: what the coordinator asks a node to run, the one way a session is described.

The coordinator builds its session requests with it (`to_json` is the `POST /v1/sessions`
body) and the node turns a validated body back into one (`from_start`), so the two sides never
hand-write the same dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from policies.governance import GovernanceSignature
from signer.node.api import SessionProtocol, SessionStart
from signer.node.errors import NodeError
from signer.problems import ErrorCode, validation_detail


@dataclass(frozen=True)
class SessionSpec:
    """What the coordinator asks a node to run.  Validated at the door, before anything is
    recorded (`signer.node.api.SessionStart`); the protocol validates the rest (and every party
    checks, in round 1, that the others run on the same inputs)."""

    protocol: SessionProtocol
    request: bytes
    parties: tuple[int, ...]
    threshold: int
    key_id: bytes
    path: tuple[int, ...] = ()
    aux_id: bytes = b""
    plan_old: bytes = b""  # codec.encode_key_public of the version being re-shared
    dealers: tuple[int, ...] = ()
    new_parties: tuple[int, ...] = ()
    wallet: str = ""  # the policy wallet of the key ("": a raw key)
    authorization: tuple[GovernanceSignature, ...] = ()  # officers' signatures on a plan

    @classmethod
    def from_start(cls, start: SessionStart) -> SessionSpec:
        """The spec of a validated `POST /v1/sessions` body (`signer.node.api.SessionStart`:
        the door's checks — protocol, id lengths, party and path bounds — are all there)."""
        return cls(
            protocol=start.protocol,
            request=bytes.fromhex(start.request),
            parties=tuple(start.parties),
            threshold=start.threshold,
            key_id=bytes.fromhex(start.key_id),
            path=tuple(start.path),
            aux_id=bytes.fromhex(start.aux_id),
            plan_old=bytes.fromhex(start.plan_old),
            dealers=tuple(start.dealers),
            new_parties=tuple(start.new_parties),
            wallet=start.wallet,
            authorization=tuple(start.authorization),
        )

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SessionSpec:
        """`from_start` of a JSON document; a refusal is `VALIDATION` naming the field."""
        try:
            start = SessionStart.model_validate(doc)
        except ValidationError as exc:
            raise NodeError(ErrorCode.VALIDATION, validation_detail(exc.errors())) from exc
        return cls.from_start(start)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "request": self.request.hex(),
            "parties": list(self.parties),
            "threshold": self.threshold,
            "key_id": self.key_id.hex(),
            "path": list(self.path),
            "aux_id": self.aux_id.hex(),
            "plan_old": self.plan_old.hex(),
            "dealers": list(self.dealers),
            "new_parties": list(self.new_parties),
            "wallet": self.wallet,
            "authorization": [s.model_dump(mode="json") for s in self.authorization],
        }
