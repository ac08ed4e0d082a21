"""The policy the node enforces: its policy chain, freeze orders, key-to-wallet bindings, the
requests it signed, the approvals it used and its audit log (`signer.node.policy_tables`).

Keys made before this revision have no binding: they are neither wallet keys nor raw keys, and
the node signs nothing with them (a wallet must be created again under a policy; see
docs/policies.md, "Enforcement in the nodes").

Revision ID: node_0002
Revises: node_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "node_0002"
down_revision: str | None = "node_0001"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = (
    "approvals_used",
    "audit_log",
    "freeze_orders",
    "key_bindings",
    "policy_versions",
    "signed_requests",
)


def upgrade() -> None:
    op.create_table(
        "approvals_used",
        sa.Column("nonce", sa.String(), nullable=False),
        sa.Column("officer", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_approvals_used_request_id", "approvals_used", ["request_id"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("payload", sa.String(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "freeze_orders",
        sa.Column("wallet", sa.String(), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("policy_hash", sa.String(), nullable=False),
        sa.Column("order_json", sa.String(), nullable=False),
        sa.Column("signatures", sa.String(), nullable=False),
        sa.Column("signed_by", sa.String(), nullable=False),
        sa.Column("applied_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("wallet", "counter"),
    )
    op.create_table(
        "key_bindings",
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("wallet", sa.String(), nullable=True),
        sa.Column("policy_hash", sa.String(), nullable=True),
        sa.Column("bound_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("wallet"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy_hash", sa.String(), nullable=False),
        sa.Column("document", sa.String(), nullable=False),
        sa.Column("signatures", sa.String(), nullable=False),
        sa.Column("signed_by", sa.String(), nullable=False),
        sa.Column("activated_at_us", sa.Integer(), nullable=False),
        sa.Column("effective_at_us", sa.Integer(), nullable=False),
        sa.Column("loosening", sa.String(), nullable=False),
        sa.Column("cancel_signatures", sa.String(), nullable=False),
        sa.Column("cancelled_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("policy_hash"),
    )
    op.create_table(
        "signed_requests",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("intent_digest", sa.String(), nullable=False),
        sa.Column("payload_hash", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("signed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )


def downgrade() -> None:
    # The tables hold only what this revision added; node_0001 code never reads them.
    op.drop_index("ix_approvals_used_request_id", table_name="approvals_used")
    for table in TABLES:
        op.drop_table(table)
