"""Schema revisions of the officers' policy store (alembic scripts run by `policies.schema`).

`SCHEMA.head` is the revision this code needs; a new revision goes in `versions/` (explicit DDL,
`down_revision` the previous head) and `head` moves with it.
"""

from __future__ import annotations

from policies.schema import Schema

SCHEMA = Schema(
    name="policy_store",
    package=__name__,
    baseline="policy_store_0001",
    head="policy_store_0001",
    command="tessera policy migrate --store {path}",
)
