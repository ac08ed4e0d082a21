"""Schema revisions of a node's database (alembic scripts run by `policies.schema`).

`SCHEMA.head` is the revision this code needs; a new revision goes in `versions/` (explicit DDL,
`down_revision` the previous head) and `head` moves with it.

Key shares, aux-info secrets and presignature secrets are stored sealed by the node's HSM
(`key_versions.sealed_share`, `aux_info.sealed_secret`, `presignatures.sealed_secret`): a
migration moves those bytes as they are, never unseals them.
"""

from __future__ import annotations

from policies.schema import Schema

SCHEMA = Schema(
    name="node",
    package=__name__,
    baseline="node_0001",
    head="node_0004",
    command="tessera node migrate --db {path}",
)
