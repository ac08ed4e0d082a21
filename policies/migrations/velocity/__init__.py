"""Schema revisions of a velocity ledger (alembic scripts run by `policies.schema`).

`SCHEMA.head` is the revision this code needs; a new revision goes in `versions/` (explicit DDL,
`down_revision` the previous head) and `head` moves with it.
"""

from __future__ import annotations

from policies.schema import Schema

SCHEMA = Schema(
    name="velocity",
    package=__name__,
    baseline="velocity_0001",
    head="velocity_0001",
    command="tessera policy migrate --ledger {path}",
)
