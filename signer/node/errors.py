"""`NodeError`: a request the node refuses, with its code from `signer.problems.ErrorCode`."""

from __future__ import annotations

from signer.errors import TesseraError
from signer.problems import ErrorCode


class NodeError(TesseraError):
    """A request the node refuses; `code` is stable for clients (`signer.problems.ErrorCode`),
    `culprit` and `check` say whom and what, when known; a policy refusal also names its
    `rule` and `policy_hash`.  Crosses HTTP as a `Problem`."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        culprit: int | None = None,
        check: str | None = None,
        rule: str | None = None,
        policy_hash: str | None = None,
    ) -> None:
        self.code = code
        self.detail = detail
        self.culprit = culprit
        self.check = check
        self.rule = rule  # a policy refusal: the rule that decided, when one did
        self.policy_hash = policy_hash  # ...and the policy version it decided under
        super().__init__(f"{code.value}: {detail}")
