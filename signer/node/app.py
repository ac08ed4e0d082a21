"""The node's HTTP API (FastAPI), for the coordinator only: every route but /v1/health needs
the node's bearer token.  Bodies are JSON; binary values are hex.  Errors are
``{"error": CODE, "detail": text}`` with a 4xx/5xx status (`docs/nodes.md` lists the codes).

  GET  /v1/health                        node id, index, whether the roster is pinned
  GET  /v1/card                          the node's self-signed card
  POST /v1/roster                        pin the cluster roster (once)
  POST /v1/sessions                      start a protocol session → first envelopes
  POST /v1/sessions/{session}/envelopes  deliver relayed envelopes → envelopes to relay next
  DELETE /v1/sessions/{session}          forget a session the coordinator gave up on
  POST /v1/sign                          partial signature with a named presignature
  GET  /v1/keys                          active key versions (public data)
  GET  /v1/keys/{key_id}/presignatures   available presignature ids (by signers and path)
  GET  /v1/quarantine                    active quarantine entries (read-only: clearing one
                                         is a local operator action, `tessera node quarantine`)
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hsm.errors import HsmError
from signer.errors import TesseraError
from signer.node.envelope import Envelope, EnvelopeRejected
from signer.node.runtime import NodeRuntime, roster_from_json
from signer.node.service import NodeError, NodeService, SessionSpec
from signer.node.store import StoreError
from signer.problems import ErrorCode
from signer.protocol.sign import HashScheme

_STATUS = {
    "BAD_REQUEST": 400,
    "NOT_A_PARTY": 400,
    "UNAUTHORIZED": 401,
    "NOT_PINNED": 409,
    "UNKNOWN_SESSION": 404,
    "UNKNOWN_PRESIGNATURE": 404,
    "NO_SHARE": 404,
    "PRESIGNATURE_USED": 409,
    "STALE_PRESIGNATURE": 409,
    "STALE_PLAN": 409,
    "QUARANTINED": 409,
    "DUPLICATE_SESSION": 409,
    "ROSTER_PINNED": 409,
    "BUSY": 503,
    "HSM": 503,
    "CORRUPT": 500,
}


class EnvelopeBatch(BaseModel):
    envelopes: list[dict[str, Any]] = Field(max_length=4096)


class SignRequest(BaseModel):
    key_id: str = Field(pattern=r"^[0-9a-f]{2,128}$")
    presignature_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    message: str = Field(pattern=r"^([0-9a-f]{2})+$", max_length=2 * 1024 * 1024)
    scheme: HashScheme


def error(code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=_STATUS.get(code, 400))


def create_app(runtime: NodeRuntime) -> FastAPI:
    app = FastAPI(title=f"Tessera node {runtime.config.node_id}", docs_url=None, redoc_url=None)

    def authorised(authorization: str = Header(default="")) -> None:
        expected = f"Bearer {runtime.api_token}"
        if not secrets.compare_digest(authorization.encode(), expected.encode()):
            raise NodeError(ErrorCode.UNAUTHORIZED, "missing or wrong bearer token")

    def service() -> NodeService:
        runtime.reload_roster()
        if runtime.service is None:
            raise NodeError(ErrorCode.NOT_PINNED, "no cluster roster pinned yet")
        return runtime.service

    @app.exception_handler(NodeError)
    async def node_error(_: Request, exc: NodeError) -> JSONResponse:
        return error(exc.code, exc.detail)

    @app.exception_handler(EnvelopeRejected)
    async def envelope_error(_: Request, exc: EnvelopeRejected) -> JSONResponse:
        return error("BAD_REQUEST", str(exc))

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        return error("ROSTER_PINNED" if "roster" in exc.what else "BAD_REQUEST", str(exc))

    @app.exception_handler(HsmError)
    async def hsm_error(_: Request, exc: HsmError) -> JSONResponse:
        return error("HSM", str(exc))

    @app.exception_handler(TesseraError)
    async def tessera_error(_: Request, exc: TesseraError) -> JSONResponse:
        return error("BAD_REQUEST", str(exc))

    guard = [Depends(authorised)]

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {
            "node_id": runtime.config.node_id,
            "index": runtime.config.index,
            "pinned": runtime.service is not None,
            "sessions": 0 if runtime.service is None else runtime.service.running_sessions,
            "quarantined": len(runtime.store.quarantines()),
        }

    @app.get("/v1/card", dependencies=guard)
    def card() -> dict[str, Any]:
        return runtime.card.to_dict()

    @app.post("/v1/roster", dependencies=guard)
    def pin(body: dict[str, Any]) -> dict[str, Any]:
        runtime.pin(roster_from_json(body))
        return {"pinned": True}

    @app.post("/v1/sessions", dependencies=guard)
    def start(body: dict[str, Any]) -> dict[str, Any]:
        return service().start(SessionSpec.from_json(body)).to_json()

    @app.post("/v1/sessions/{session}/envelopes", dependencies=guard)
    def deliver(session: str, batch: EnvelopeBatch) -> dict[str, Any]:
        try:
            instance = bytes.fromhex(session)
        except ValueError as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, "session id is not hex") from exc
        envelopes = [Envelope.from_dict(doc) for doc in batch.envelopes]
        return service().deliver(instance, envelopes).to_json()

    @app.delete("/v1/sessions/{session}", dependencies=guard)
    def cancel(session: str) -> dict[str, Any]:
        try:
            instance = bytes.fromhex(session)
        except ValueError as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, "session id is not hex") from exc
        return {"cancelled": service().cancel(instance)}

    @app.post("/v1/sign", dependencies=guard)
    def sign(request: SignRequest) -> dict[str, Any]:
        return service().sign(
            bytes.fromhex(request.key_id),
            bytes.fromhex(request.presignature_id),
            bytes.fromhex(request.message),
            request.scheme,
        )

    @app.get("/v1/keys", dependencies=guard)
    def keys() -> list[dict[str, Any]]:
        return [
            {"key_id": row.key_id, "epoch": row.epoch, "key_public": row.public.hex()}
            for row in runtime.store.active_keys()
        ]

    @app.get("/v1/keys/{key_id}/presignatures", dependencies=guard)
    def presignatures(key_id: str, signers: str, path: str = "") -> dict[str, Any]:
        try:
            parties = tuple(int(i) for i in signers.split(","))
            steps = tuple(int(i) for i in path.split("/")) if path else ()
        except ValueError as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, "signers/path malformed") from exc
        return {
            "available": runtime.store.available_presignatures(key_id, parties, steps),
            "counts": runtime.store.presignature_counts(key_id),
        }

    @app.get("/v1/quarantine", dependencies=guard)
    def quarantine() -> list[dict[str, Any]]:
        return [row.to_json() for row in runtime.store.quarantines()]

    return app
