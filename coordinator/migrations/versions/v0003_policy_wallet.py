"""Wallets name the policy wallet their key is bound to on the nodes (NULL: a raw key, which
signs raw bytes on a `--raw-keys` cluster and no transaction).

Revision ID: coordinator_0003
Revises: coordinator_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "coordinator_0003"
down_revision: str | None = "coordinator_0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Wallets made before this revision were all raw keys: NULL is their truth.
    op.add_column("wallets", sa.Column("policy_wallet", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("policy_wallet")
