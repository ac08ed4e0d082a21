"""A signed request keeps the address it was signed from, so that a fee replacement or a
cancellation of it (signer/chains/replacement.py) is signed only from that same address: a
"replacement" from another of the wallet's addresses would be a second payout, not a
replacement.

Requests signed before this revision keep NULL: they are neither replaced nor cancelled.

Revision ID: node_0004
Revises: node_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "node_0004"
down_revision: str | None = "node_0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("signed_requests", sa.Column("sender", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signed_requests") as batch:
        batch.drop_column("sender")
