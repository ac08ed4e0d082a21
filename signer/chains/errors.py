"""The one error of transaction decoding: `TransactionRefused`, carrying its problem code.

The node turns it into a problem reply as is (`code`, `check`, `detail`), so `detail` must never
echo the payload: it names the failed check and at most a few short values (a selector, a chain
id), and is cut to a bounded length whatever a codec message says.
"""

from __future__ import annotations

from typing import Final

from signer.errors import TesseraError
from signer.problems import ErrorCode

# Well below the problem form's own cut (`signer.problems.MAX_DETAIL_CHARS`): a detail that
# long is already a sign that something echoes input.
MAX_DETAIL: Final = 300


class TransactionRefused(TesseraError):
    """The node will not sign this payload.

    `code` is `TRANSACTION_INVALID` (it does not decode, or says something no withdrawal can
    say), `UNSUPPORTED_TRANSACTION` (well-formed, but of a kind this node does not decode),
    `VALIDATION` (a request field the intent refuses) or `INTENT_MISMATCH` (the coordinator's
    claim differs from what the node decoded); `check` is the short snake_case name of the
    failed check (``"encoding"``, ``"calldata"``, ``"native_asset"``, ``"amount"``, …).
    """

    def __init__(self, code: ErrorCode, check: str, detail: str) -> None:
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 1] + "…"
        self.code = code
        self.check = check
        self.detail = detail
        super().__init__(f"transaction refused ({code.value}, {check}): {detail}")
