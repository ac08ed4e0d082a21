"""A payout's legs: a batch paid in one transaction through the disperse contract
(coordinator/payouts.py, `PayoutRequest.legs`).

Revision ID: coordinator_0006
Revises: coordinator_0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "coordinator_0006"
down_revision: str | None = "coordinator_0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # NULL: a payout to one destination (every payout made before batches)
    op.add_column("payouts", sa.Column("legs", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payouts") as batch:
        batch.drop_column("legs")
