"""Baseline: the node schema as the code at commit cad499a created it (before versions).

A file made before versions existed is adopted as this revision: each table is created only if
it is missing (what that code's create_all did on open), so an older file that lacked some of
them gains them; `policies.schema.migrate` first checks the tables it has are these.

Revision ID: node_0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.schema import table_missing

revision = "node_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if table_missing("aux_info"):
        op.create_table(
            "aux_info",
            sa.Column("aux_id", sa.String(), nullable=False),
            sa.Column("parties", sa.String(), nullable=False),
            sa.Column("public", sa.LargeBinary(), nullable=False),
            sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("aux_id"),
        )
        op.create_index("ix_aux_info_state", "aux_info", ["state"], unique=False)
    if table_missing("key_confirmations"):
        op.create_table(
            "key_confirmations",
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("signer", sa.Integer(), nullable=False),
            sa.Column("fingerprint", sa.String(), nullable=False),
            sa.Column("signature", sa.LargeBinary(), nullable=False),
            sa.Column("origin", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("key_id", "epoch", "signer"),
        )
    if table_missing("key_events"):
        op.create_table(
            "key_events",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("action", sa.String(), nullable=False),
            sa.Column("detail", sa.String(), nullable=False),
            sa.Column("at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_key_events_key_id", "key_events", ["key_id"], unique=False)
    if table_missing("key_versions"):
        op.create_table(
            "key_versions",
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("public", sa.LargeBinary(), nullable=False),
            sa.Column("sealed_share", sa.LargeBinary(), nullable=True),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("key_id", "epoch"),
        )
        op.create_index("ix_key_versions_state", "key_versions", ["state"], unique=False)
    if table_missing("presignatures"):
        op.create_table(
            "presignatures",
            sa.Column("presignature_id", sa.String(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("signers", sa.String(), nullable=False),
            sa.Column("path", sa.String(), nullable=False),
            sa.Column("aux_id", sa.String(), nullable=False),
            sa.Column("public", sa.LargeBinary(), nullable=False),
            sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("consumed_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("presignature_id"),
        )
        op.create_index("ix_presignatures_state", "presignatures", ["state"], unique=False)
        op.create_index("ix_presignatures_key_id", "presignatures", ["key_id"], unique=False)
    if table_missing("quarantine"):
        op.create_table(
            "quarantine",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("parties", sa.String(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("cleared_at", sa.Float(), nullable=True),
            sa.Column("cleared_reason", sa.String(), nullable=True),
            sa.Column("protocol", sa.String(), nullable=False),
            sa.Column("session", sa.String(), nullable=False),
            sa.Column("code", sa.String(), nullable=False),
            sa.Column("detail", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if table_missing("session_starts"):
        op.create_table(
            "session_starts",
            sa.Column("instance", sa.String(), nullable=False),
            sa.Column("protocol", sa.String(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("instance"),
        )
    if table_missing("settings"):
        op.create_table(
            "settings",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("value", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )


def downgrade() -> None:
    # Below the baseline there is no schema, only lost rows: restore the backup instead.
    raise NotImplementedError("node_0001 is the baseline; restore a backup instead")
