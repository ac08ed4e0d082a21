"""`NodeError`: a request the node refuses, with its code from `signer.problems.ErrorCode`."""

from __future__ import annotations

from signer.errors import TesseraError
from signer.problems import ErrorCode


class NodeError(TesseraError):
    """A request the node refuses; `code` is stable for clients (`signer.problems.ErrorCode`),
    `culprit` and `check` say whom and what, when known.  Crosses HTTP as a `Problem`."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        culprit: int | None = None,
        check: str | None = None,
    ) -> None:
        self.code = code
        self.detail = detail
        self.culprit = culprit
        self.check = check
        super().__init__(f"{code.value}: {detail}")
