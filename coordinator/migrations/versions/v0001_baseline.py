"""Baseline: the coordinator schema as the code at commit cad499a created it (before versions).

A file made before versions existed is adopted as this revision: each table is created only if
it is missing (what that code's create_all did on open), so an older file that lacked some of
them gains them; `policies.schema.migrate` first checks the tables it has are these.

Revision ID: coordinator_0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.schema import table_missing

revision = "coordinator_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if table_missing("aux_sets"):
        op.create_table(
            "aux_sets",
            sa.Column("aux_id", sa.String(), nullable=False),
            sa.Column("parties", sa.String(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("aux_id"),
        )
    if table_missing("blame"):
        op.create_table(
            "blame",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("at", sa.Float(), nullable=False),
            sa.Column("operation", sa.String(), nullable=False),
            sa.Column("reporter", sa.Integer(), nullable=True),
            sa.Column("culprit", sa.Integer(), nullable=False),
            sa.Column("code", sa.String(), nullable=False),
            sa.Column("detail", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if table_missing("pending_versions"):
        op.create_table(
            "pending_versions",
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("key_public", sa.LargeBinary(), nullable=False),
            sa.Column("aux_id", sa.String(), nullable=False),
            sa.Column("threshold", sa.Integer(), nullable=False),
            sa.Column("parties", sa.String(), nullable=False),
            sa.Column("statements", sa.String(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("key_id"),
        )
    if table_missing("presignatures"):
        op.create_table(
            "presignatures",
            sa.Column("presignature_id", sa.String(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("signers", sa.String(), nullable=False),
            sa.Column("path", sa.String(), nullable=False),
            sa.Column("public", sa.LargeBinary(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("presignature_id"),
        )
        op.create_index("ix_presignatures_key_id", "presignatures", ["key_id"], unique=False)
        op.create_index("ix_presignatures_state", "presignatures", ["state"], unique=False)
    if table_missing("suspensions"):
        op.create_table(
            "suspensions",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("parties", sa.String(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("cleared_at", sa.Float(), nullable=True),
            sa.Column("cleared_reason", sa.String(), nullable=True),
            sa.Column("operation", sa.String(), nullable=False),
            sa.Column("reason", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if table_missing("wallets"):
        op.create_table(
            "wallets",
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("threshold", sa.Integer(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("key_public", sa.LargeBinary(), nullable=False),
            sa.Column("aux_id", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("key_id"),
        )
        op.create_index("ix_wallets_name", "wallets", ["name"], unique=True)


def downgrade() -> None:
    # Below the baseline there is no schema, only lost rows: restore the backup instead.
    raise NotImplementedError("coordinator_0001 is the baseline; restore a backup instead")
