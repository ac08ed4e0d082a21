"""The coordinator's typed errors: what a caller (the CLI, a service) can catch and report."""

from __future__ import annotations

from signer.errors import TesseraError
from signer.problems import ErrorCode


class SigningFailed(TesseraError):
    """No signer set could produce a verified signature; `attempts` says what happened and
    `code` is the most telling reason: the last node refusal's code, `SESSION_FAILED` if only
    sessions failed, `BUSY` if no set of nodes was available at all."""

    def __init__(
        self,
        attempts: list[str],
        code: ErrorCode = ErrorCode.BUSY,
        *,
        refusal: Exception | None = None,
    ) -> None:
        self.attempts = attempts
        self.code = code
        # A node's refusal of the request itself (its policy said no): its problem names the
        # node, the rule and the policy hash (`coordinator.client.NodeRefused`).
        self.refusal = refusal
        super().__init__("no signer set produced a signature: " + "; ".join(attempts))


class InconsistentReports(TesseraError):
    """Parties of one session reported different public outputs."""

    code = ErrorCode.SESSION_FAILED


class SignRequestInvalid(TesseraError):
    """A signing request no node would accept (refused before any presignature is taken)."""

    code = ErrorCode.VALIDATION

    def __init__(self, detail: str, code: ErrorCode = ErrorCode.VALIDATION) -> None:
        self.code = code
        super().__init__(detail)


class ReshareUnconfirmed(TesseraError):
    """A re-share or refresh ran but its new version is not active on every node.

    `confirmed` False: some members of the new committee gave no storage confirmation
    (`failed` says why); the wallet stays on the old version, which every node still holds.
    `confirmed` True: the set is complete and the wallet moved to the new version, but the
    nodes in `failed` have not received it yet.  Either way `Coordinator.confirm_pending`
    retries; nothing is lost meanwhile."""

    code = ErrorCode.NO_PENDING_VERSION

    def __init__(self, key_id: str, epoch: int, *, confirmed: bool, failed: dict[int, str]) -> None:
        self.key_id = key_id
        self.epoch = epoch
        self.confirmed = confirmed
        self.failed = failed
        nodes = sorted(failed)
        reasons = "; ".join(f"node {j}: {failed[j]}" for j in nodes)
        if confirmed:
            what = (
                f"epoch {epoch} of key {key_id[:16]} is confirmed and the wallet is on it, but "
                f"nodes {nodes} have not activated it yet"
            )
        else:
            what = (
                f"epoch {epoch} of key {key_id[:16]} is not confirmed: no storage confirmation "
                f"from nodes {nodes}; the wallet stays on epoch {epoch - 1}, which every node "
                "still holds"
            )
        super().__init__(f"{what} ({reasons}); retry with confirm_pending")


class SetQuarantined(TesseraError):
    """The coordinator will not run a session among these parties: its quarantine mirror holds
    an entry for one of them (or the set) that no operator has cleared."""

    code = ErrorCode.QUARANTINED
