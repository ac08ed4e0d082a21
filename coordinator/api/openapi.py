"""The signer API's OpenAPI document, as checked in at docs/openapi.json (a test keeps the
served one equal to it).  `python -m coordinator.api.openapi` rewrites the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from coordinator.api.app import create_app
from coordinator.api.auth import Authenticator, RateLimiter
from coordinator.api.withdrawals import WithdrawalService

DOCUMENT = Path(__file__).parent.parent.parent / "docs" / "openapi.json"


def document() -> dict[str, Any]:
    # The routes are only described, never called: no service behind them is needed.
    app = create_app(
        cast(WithdrawalService, None), cast(Authenticator, None), cast(RateLimiter, None)
    )
    return app.openapi()


def text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(text())
