"""What a failed session means for what the coordinator does next (attacks.md A03, T03d).

A cryptographic failure is a security event, never an error to retry: a party that deviates
from the protocol could make sessions succeed or fail as a function of an honest party's secret
(Lindell17 "Broken Record"), so every retry would leak a bit.  Only operational failures —
a node down, a session that stalled, a node refusing for an operational reason — may be
retried with the same party set.  The nodes enforce the same rule on their own (their
quarantine, `signer.node.service`), so a coordinator that ignored this module would only get
refusals.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coordinator.driver import SessionFailed
from signer.errors import Check
from signer.problems import ErrorCode

#: Abort codes found before any secret is used: the party sets' inputs differ (a node on an
#: older key version).  Not a security event, but not worth repeating with the same set
#: either.  The nodes' own rule is the same (`signer.node.service.NOT_SECURITY_EVENTS`).
#: (Abort reports carry `Check` values; StrEnum members compare equal to them.)
CONFIGURATION_CODES: frozenset[str] = frozenset({Check.MISMATCH})

#: A node's refusal (or its halt of a running session) because of its quarantine.
QUARANTINED = ErrorCode.QUARANTINED


class FailureKind(StrEnum):
    UNAVAILABLE = "unavailable"  # a node down, a stall (timeout), an operational refusal
    QUARANTINED = "quarantined"  # a node refused or halted: the set touches its quarantine
    CONFIGURATION = "configuration"  # inputs differ (CONFIGURATION_CODES)
    IDENTIFICATION = "identification"  # presign output check failed, culprit not yet known
    ATTRIBUTED = "attributed"  # a cryptographic failure with named culprits
    UNATTRIBUTED = "unattributed"  # a cryptographic failure that names nobody


@dataclass(frozen=True)
class Verdict:
    kind: FailureKind
    culprits: frozenset[int]
    down: frozenset[int]  # nodes that did not answer, or refused for a reason of their own
    identification: str | None = None  # request id of the identification every signer awaits

    @property
    def retry_same_set(self) -> bool:
        """Only an operational failure may be retried with the same party set."""
        return self.kind is FailureKind.UNAVAILABLE

    @property
    def security_event(self) -> bool:
        return self.kind in (
            FailureKind.IDENTIFICATION,
            FailureKind.ATTRIBUTED,
            FailureKind.UNATTRIBUTED,
        )

    @property
    def exclude(self) -> frozenset[int]:
        """Nodes to leave out of the next party sets: the culprits and the nodes that are down."""
        return self.culprits | self.down


def classify(failure: SessionFailed) -> Verdict:
    """The failure's kind; cryptographic evidence takes precedence over anything operational
    reported in the same session."""
    down = frozenset(i for i in failure.unavailable if failure.refused.get(i) != QUARANTINED)
    culprits = failure.blamed
    if culprits:
        return Verdict(FailureKind.ATTRIBUTED, culprits, down)
    requests = {str(a["identification"]) for a in failure.aborts.values() if "identification" in a}
    if requests and not failure.identified:
        request = next(iter(requests)) if len(requests) == 1 else None
        return Verdict(FailureKind.IDENTIFICATION, frozenset(), down, request)
    codes = {str(a.get("code")) for a in failure.aborts.values()}
    if failure.identified or codes - CONFIGURATION_CODES - {QUARANTINED}:
        return Verdict(FailureKind.UNATTRIBUTED, frozenset(), down)
    if QUARANTINED in codes or QUARANTINED in failure.refused.values():
        return Verdict(FailureKind.QUARANTINED, frozenset(), down)
    if codes:
        return Verdict(FailureKind.CONFIGURATION, frozenset(), down)
    return Verdict(FailureKind.UNAVAILABLE, frozenset(), down)
