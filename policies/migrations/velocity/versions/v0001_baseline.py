"""Baseline: the velocity schema as the code at commit cad499a created it (before versions).

A file made before versions existed is adopted as this revision: each table is created only if
it is missing (what that code's create_all did on open), so an older file that lacked some of
them gains them; `policies.schema.migrate` first checks the tables it has are these.

Revision ID: velocity_0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.schema import table_missing

revision = "velocity_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if table_missing("velocity_ledger"):
        op.create_table(
            "velocity_ledger",
            sa.Column("request_id", sa.String(), nullable=False),
            sa.Column("wallet", sa.String(), nullable=False),
            sa.Column("asset", sa.String(), nullable=False),
            sa.Column("amount", sa.String(), nullable=False),
            sa.Column("at_us", sa.Integer(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("expires_at_us", sa.Integer(), nullable=True),
            sa.Column("closed_at_us", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("request_id"),
        )
        op.create_index("ix_velocity_ledger_asset", "velocity_ledger", ["asset"], unique=False)
        op.create_index("ix_velocity_ledger_at_us", "velocity_ledger", ["at_us"], unique=False)
        op.create_index("ix_velocity_ledger_wallet", "velocity_ledger", ["wallet"], unique=False)


def downgrade() -> None:
    # Below the baseline there is no schema, only lost rows: restore the backup instead.
    raise NotImplementedError("velocity_0001 is the baseline; restore a backup instead")
