"""Pushing the officers' policy chain and freeze orders straight to key-share nodes.

`tessera policy push --node URL …` posts the governance bundle of the local store
(`policies.bundle`) to each node's ``POST /v1/governance``, which needs no coordinator token:
the node checks every signature itself.  So a coordinator that withholds a freeze or a new
version cannot stop it reaching the nodes.  Each node answers for itself; one refusing or down
does not stop the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from policies.bundle import GovernanceBundle, bundle_of
from policies.store import PolicyStore

#: A node answers a bundle in well under a second; a long timeout only hides a dead node.
PUSH_TIMEOUT_SECONDS = 30.0


def governance_bundle(store: PolicyStore) -> GovernanceBundle:
    """Everything the nodes need from `store`: the activated chain and the applied orders."""
    return bundle_of(store.chain(), store.applied_freeze_orders())


@dataclass(frozen=True)
class PushResult:
    """What one node said: its policy status after the push, or why it refused."""

    node: str
    accepted: bool
    status: dict[str, Any] | None = None
    results: tuple[dict[str, Any], ...] = ()
    code: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"node": self.node, "accepted": self.accepted}
        if self.accepted:
            doc["status"] = self.status
            doc["results"] = list(self.results)
        else:
            doc["error"] = {"code": self.code, "detail": self.detail}
        return doc


def _refusal(node: str, response: httpx.Response) -> PushResult:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        detail = body.get("detail")
        return PushResult(node, False, code=body["code"], detail=str(detail)[:500])
    return PushResult(node, False, code=f"HTTP_{response.status_code}", detail="not a problem body")


def push_to(
    node: str, bundle: GovernanceBundle, *, timeout: float = PUSH_TIMEOUT_SECONDS
) -> PushResult:
    url = node.rstrip("/") + "/v1/governance"
    try:
        response = httpx.post(url, json=bundle.model_dump(mode="json"), timeout=timeout)
    except httpx.HTTPError as exc:
        return PushResult(node, False, code="UNREACHABLE", detail=f"{type(exc).__name__}: {exc}")
    if response.status_code >= 400:
        return _refusal(node, response)
    try:
        body = response.json()
        return PushResult(
            node, True, status=dict(body["status"]), results=tuple(body.get("results", ()))
        )
    except (ValueError, KeyError, TypeError):
        return PushResult(node, False, code="BAD_REPLY", detail="not a governance reply")


def push(store_path: Path, nodes: Sequence[str]) -> list[PushResult]:
    store = PolicyStore(store_path)
    try:
        bundle = governance_bundle(store)
    finally:
        store.close()
    return [push_to(node, bundle) for node in nodes]
