"""Baseline: the policy_store schema as the code at commit cad499a created it (before versions).

A file made before versions existed is adopted as this revision: each table is created only if
it is missing (what that code's create_all did on open), so an older file that lacked some of
them gains them; `policies.schema.migrate` first checks the tables it has are these.

Revision ID: policy_store_0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.schema import table_missing

revision = "policy_store_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if table_missing("policy_activations"):
        op.create_table(
            "policy_activations",
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("policy_hash", sa.String(), nullable=False),
            sa.Column("activated_at_us", sa.Integer(), nullable=False),
            sa.Column("effective_at_us", sa.Integer(), nullable=False),
            sa.Column("loosening", sa.String(), nullable=False),
            sa.Column("signed_by", sa.String(), nullable=False),
            sa.Column("cancelled_at_us", sa.Integer(), nullable=True),
            sa.Column("cancelled_by", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("position"),
            sa.UniqueConstraint("policy_hash"),
        )
    if table_missing("policy_audit_log"):
        op.create_table(
            "policy_audit_log",
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("timestamp", sa.String(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("payload", sa.String(), nullable=False),
            sa.Column("prev_hash", sa.String(), nullable=False),
            sa.Column("hash", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("seq"),
        )
    if table_missing("policy_freeze_orders"):
        op.create_table(
            "policy_freeze_orders",
            sa.Column("order_id", sa.String(), nullable=False),
            sa.Column("wallet", sa.String(), nullable=False),
            sa.Column("action", sa.String(), nullable=False),
            sa.Column("counter", sa.Integer(), nullable=False),
            sa.Column("policy_hash", sa.String(), nullable=False),
            sa.Column("order", sa.String(), nullable=False),
            sa.Column("created_at_us", sa.Integer(), nullable=False),
            sa.Column("applied_at_us", sa.Integer(), nullable=True),
            sa.Column("signed_by", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("order_id"),
        )
        op.create_index(
            "ix_policy_freeze_orders_wallet", "policy_freeze_orders", ["wallet"], unique=False
        )
    if table_missing("policy_governance_signatures"):
        op.create_table(
            "policy_governance_signatures",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("purpose", sa.String(), nullable=False),
            sa.Column("subject", sa.String(), nullable=False),
            sa.Column("officer", sa.String(), nullable=False),
            sa.Column("signature", sa.String(), nullable=False),
            sa.Column("signed_at_us", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("purpose", "subject", "officer"),
        )
        op.create_index(
            "ix_policy_governance_signatures_subject",
            "policy_governance_signatures",
            ["subject"],
            unique=False,
        )
    if table_missing("policy_proposals"):
        op.create_table(
            "policy_proposals",
            sa.Column("policy_hash", sa.String(), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("previous", sa.String(), nullable=True),
            sa.Column("document", sa.String(), nullable=False),
            sa.Column("source", sa.String(), nullable=False),
            sa.Column("proposed_at_us", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("policy_hash"),
        )
        op.create_index(
            "ix_policy_proposals_version", "policy_proposals", ["version"], unique=False
        )
    if table_missing("policy_seen_nonces"):
        op.create_table(
            "policy_seen_nonces",
            sa.Column("nonce", sa.String(), nullable=False),
            sa.Column("request_id", sa.String(), nullable=False),
            sa.Column("consumed_at_us", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("nonce"),
        )
    if table_missing("policy_withdrawal_approvals"):
        op.create_table(
            "policy_withdrawal_approvals",
            sa.Column("nonce", sa.String(), nullable=False),
            sa.Column("request_id", sa.String(), nullable=False),
            sa.Column("officer", sa.String(), nullable=False),
            sa.Column("decision", sa.String(), nullable=False),
            sa.Column("approval", sa.String(), nullable=False),
            sa.Column("recorded_at_us", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("nonce"),
        )
        op.create_index(
            "ix_policy_withdrawal_approvals_request_id",
            "policy_withdrawal_approvals",
            ["request_id"],
            unique=False,
        )
    if table_missing("policy_withdrawal_requests"):
        op.create_table(
            "policy_withdrawal_requests",
            sa.Column("request_id", sa.String(), nullable=False),
            sa.Column("intent", sa.String(), nullable=False),
            sa.Column("intent_digest", sa.String(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("created_at_us", sa.Integer(), nullable=False),
            sa.Column("updated_at_us", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("request_id"),
        )


def downgrade() -> None:
    # Below the baseline there is no schema, only lost rows: restore the backup instead.
    raise NotImplementedError("policy_store_0001 is the baseline; restore a backup instead")
