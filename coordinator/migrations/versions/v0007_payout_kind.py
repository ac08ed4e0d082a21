"""A payout's kind: the ERC-20 allowances a token batch spends are payouts of their own
(coordinator/payouts.py, "Token batches"), each tied to the batch it is for.

Revision ID: coordinator_0007
Revises: coordinator_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "coordinator_0007"
down_revision: str | None = "coordinator_0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # every payout made before is a payout
    op.add_column(
        "payouts",
        sa.Column("kind", sa.String(), nullable=False, server_default="payout"),
    )
    op.add_column("payouts", sa.Column("for_payout", sa.String(), nullable=True))
    op.create_index("ix_payouts_for_payout", "payouts", ["for_payout"])


def downgrade() -> None:
    op.drop_index("ix_payouts_for_payout", table_name="payouts")
    with op.batch_alter_table("payouts") as batch:
        batch.drop_column("for_payout")
        batch.drop_column("kind")
