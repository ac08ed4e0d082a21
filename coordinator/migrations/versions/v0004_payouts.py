"""Payouts on chain and the nonces of their sending addresses (coordinator/payouts.py,
coordinator/nonces.py).

Revision ID: coordinator_0004
Revises: coordinator_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "coordinator_0004"
down_revision: str | None = "coordinator_0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "nonce_accounts",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("next_nonce", sa.Integer(), nullable=False),
        sa.Column("synced_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "address"),
    )
    op.create_table(
        "payouts",
        sa.Column("payout_id", sa.String(), nullable=False),
        sa.Column("wallet", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(), nullable=False),
        sa.Column("asset", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=False),
        sa.Column("amount", sa.String(), nullable=False),
        sa.Column("fee_level", sa.String(), nullable=False),
        sa.Column("initiator", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("nonce", sa.Integer(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("tx_hash", sa.String(), nullable=True),
        sa.Column("block_number", sa.Integer(), nullable=True),
        sa.Column("block_hash", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("approvals", sa.String(), nullable=False),
        sa.Column("replaced", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("payout_id"),
        sa.UniqueConstraint("chain_id", "sender", "nonce", name="uq_payouts_nonce"),
    )
    op.create_index("ix_payouts_state", "payouts", ["state"])
    op.create_index("ix_payouts_tx_hash", "payouts", ["tx_hash"])


def downgrade() -> None:
    op.drop_index("ix_payouts_tx_hash", table_name="payouts")
    op.drop_index("ix_payouts_state", table_name="payouts")
    op.drop_table("payouts")
    op.drop_table("nonce_accounts")
