"""Deposit addresses, the deposits seen on chain, and the watcher's cursor and scanned block
hashes (coordinator/deposits.py).

Revision ID: coordinator_0005
Revises: coordinator_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "coordinator_0005"
down_revision: str | None = "coordinator_0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "deposit_addresses",
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("wallet", sa.String(), nullable=False),
        sa.Column("child", sa.Integer(), nullable=False),
        sa.Column("customer_ref", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_index(
        "uq_deposit_addresses_customer",
        "deposit_addresses",
        ["wallet", "customer_ref"],
        unique=True,
    )
    op.create_index(
        "uq_deposit_addresses_child", "deposit_addresses", ["wallet", "child"], unique=True
    )
    op.create_table(
        "deposits",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("asset", sa.String(), nullable=False),
        sa.Column("units", sa.String(), nullable=False),
        sa.Column("amount", sa.String(), nullable=False),
        sa.Column("block_number", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("credited_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("chain_id", "tx_hash", "log_index"),
    )
    op.create_index("ix_deposits_address", "deposits", ["address"])
    op.create_index("ix_deposits_state", "deposits", ["state"])
    op.create_table(
        "scanned_blocks",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "number"),
    )
    op.create_table(
        "deposit_cursors",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("next_block", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id"),
    )


def downgrade() -> None:
    op.drop_table("deposit_cursors")
    op.drop_table("scanned_blocks")
    op.drop_index("ix_deposits_state", table_name="deposits")
    op.drop_index("ix_deposits_address", table_name="deposits")
    op.drop_table("deposits")
    op.drop_index("uq_deposit_addresses_child", table_name="deposit_addresses")
    op.drop_index("uq_deposit_addresses_customer", table_name="deposit_addresses")
    op.drop_table("deposit_addresses")
