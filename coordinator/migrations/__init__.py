"""Schema revisions of the coordinator's database (alembic scripts run by `policies.schema`).

`SCHEMA.head` is the revision this code needs; a new revision goes in `versions/` (explicit DDL,
`down_revision` the previous head) and `head` moves with it.
"""

from __future__ import annotations

from policies.schema import Schema

SCHEMA = Schema(
    name="coordinator",
    package=__name__,
    baseline="coordinator_0001",
    head="coordinator_0008",
    command="tessera cluster migrate --db {path}",
)
