"""Running one session for the coordinator, and what a failure leads to: blame, presign
identification and the quarantine mirror.

A failed session is classified (`coordinator.failures`): only operational failures are ever
retried with the same party set.  A presign whose output check failed is followed by the
identification session; named culprits enter the quarantine mirror, and a cryptographic failure
that names nobody puts its party set there (attacks.md A03) — in this store, and independently
in every node's own quarantine.

`SessionRunner` holds what every operation module (`coordinator.wallets`, `.pools`,
`.signing`, `.resharing`) shares; `coordinator.engine.Coordinator` combines them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from coordinator.client import NodeClient
from coordinator.driver import SessionDriver, SessionFailed
from coordinator.errors import InconsistentReports, SetQuarantined
from coordinator.failures import FailureKind, classify
from coordinator.health import OPERATIONAL_CODES, NodeHealth
from coordinator.metrics import CoordinatorMetrics
from coordinator.specs import Operation, identify_spec
from coordinator.store import CoordinatorStore
from signer.logs import log_event
from signer.node.api import IdentifyResult, SessionResult
from signer.node.spec import SessionSpec

logger = logging.getLogger("tessera.coordinator")

R = TypeVar("R", bound=BaseModel)


def of_kind(results: Mapping[int, SessionResult], model: type[R]) -> dict[int, R]:
    """Every party's result, each of the kind the session's protocol outputs."""
    typed: dict[int, R] = {i: r for i, r in results.items() if isinstance(r, model)}
    if len(typed) != len(results):
        odd = sorted(set(results) - set(typed))
        raise InconsistentReports(f"parties {odd} reported another kind of result")
    return typed


def same(
    results: Mapping[int, SessionResult], model: type[BaseModel], field_name: str, what: str
) -> str:
    """The value every party reported for `field_name` (a `model` result), or
    InconsistentReports: the coordinator trusts no single node's word."""
    values = {str(getattr(r, field_name)) for r in of_kind(results, model).values()}
    if len(values) != 1:
        raise InconsistentReports(f"parties reported different {what}")
    return values.pop()


class SessionRunner:
    def __init__(
        self,
        clients: Mapping[int, NodeClient],
        threshold: int,
        store: CoordinatorStore,
        traffic: list[dict[str, Any]] | None = None,
        health: NodeHealth | None = None,
    ) -> None:
        self.clients = clients
        self.parties = tuple(sorted(clients))
        self.threshold = threshold
        self.store = store
        self.driver = SessionDriver(clients, traffic)
        # nodes that failed operationally are not chosen until a health check sees them back
        self.health = health if health is not None else NodeHealth(clients)
        self.metrics = CoordinatorMetrics()
        # One event per running pool keeper (`keep_pools`): set when a presignature is drawn,
        # so an idle keeper that has backed off refills at once instead of after its pause.
        self._keeper_wakeups: list[asyncio.Event] = []

    def _wake_keepers(self) -> None:
        for wake in self._keeper_wakeups:
            wake.set()

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _blame(self, operation: Operation, failure: SessionFailed) -> None:
        for reporter, abort in failure.aborts.items():
            for culprit in abort.get("culprits", []):
                self.store.record_blame(
                    operation, reporter, culprit, str(abort.get("code")), str(abort.get("detail"))
                )

    async def _drive(self, spec: SessionSpec) -> dict[int, SessionResult]:
        """`driver.run`, timed into the session-duration histogram."""
        started = time.perf_counter()
        try:
            results = await self.driver.run(spec)
        except SessionFailed:
            self.metrics.session(spec.protocol, "failed", time.perf_counter() - started)
            raise
        self.metrics.session(spec.protocol, "done", time.perf_counter() - started)
        return results

    async def _run(self, operation: Operation, spec: SessionSpec) -> dict[int, SessionResult]:
        blocking = self.store.quarantined(spec.parties)
        if blocking is not None:
            log_event(
                logger,
                "session.refused",
                level=logging.WARNING,
                protocol=spec.protocol,
                request=spec.request,
                parties=spec.parties,
                outcome="quarantined",
                reason=f"mirror entry {blocking.id}",
            )
            raise SetQuarantined(
                f"{operation} among {list(spec.parties)}: in the quarantine mirror (entry "
                f"{blocking.id}, {blocking.operation}: {blocking.reason})"
            )
        try:
            return await self._drive(spec)
        except SessionFailed as failure:
            for index, reason in failure.unavailable.items():
                code = failure.refused.get(index)
                if code is None or code in OPERATIONAL_CODES:
                    self.health.mark_down(index, reason)
            self._blame(operation, failure)
            if classify(failure).kind is FailureKind.IDENTIFICATION:
                await self._identify(failure, spec)
            self._mirror(operation, failure, spec)
            raise

    async def _identify(self, failure: SessionFailed, spec: SessionSpec) -> None:
        """Run presign identification among the failed presign's signers (every one of them
        kept what it needs); each node's verdict goes to `failure.identified` and the blame
        log.  If it cannot complete, the failure stays unattributed."""
        request = classify(failure).identification
        if request is None:
            return
        try:
            results = await self._drive(identify_spec(spec, request))
        except SessionFailed as inner:
            self._blame(Operation.PRESIGN_IDENTIFY, inner)
            failure.identified = {
                i: frozenset(int(c) for c in a.get("culprits", [])) for i, a in inner.aborts.items()
            }
            return
        identified = of_kind(results, IdentifyResult)
        failure.identified = {i: frozenset(r.culprits) for i, r in identified.items()}
        for reporter, result in identified.items():
            for finding in result.findings:
                self.store.record_blame(
                    Operation.PRESIGN_IDENTIFY,
                    reporter,
                    finding.party,
                    finding.check,
                    finding.detail,
                )

    def _mirror(self, operation: Operation, failure: SessionFailed, spec: SessionSpec) -> None:
        """Into the quarantine mirror, never chosen again until an operator says so: named
        culprits, or the whole party set if a cryptographic failure named nobody."""
        verdict = classify(failure)
        key_id = spec.key_id.hex()
        if verdict.kind is FailureKind.ATTRIBUTED:
            for culprit in sorted(verdict.culprits):
                self.store.quarantine("party", (culprit,), key_id, operation, str(failure))
        elif verdict.security_event or verdict.kind is FailureKind.QUARANTINED:
            # (a node's own quarantine is mirrored too, so the set is not offered again)
            self.store.quarantine("signer_set", spec.parties, key_id, operation, str(failure))
