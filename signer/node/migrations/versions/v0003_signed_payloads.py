"""A signed request keeps the unsigned transaction it signed, so that the node can tell a fee
replacement of it (a speed-up at the same nonce, signer/chains/replacement.py) from another
transaction under the same request id.

Requests signed before this revision keep NULL: no replacement is signed for them.

Revision ID: node_0003
Revises: node_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "node_0003"
down_revision: str | None = "node_0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("signed_requests", sa.Column("payload", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signed_requests") as batch:
        batch.drop_column("payload")
