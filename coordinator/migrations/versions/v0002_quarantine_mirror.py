"""The coordinator's exclusion list is its "quarantine mirror": table suspensions renamed.

A rename in place (SQLite's ALTER TABLE … RENAME): every row, id and cleared entry stays as it
was; the table has no index of its own to rename.

Revision ID: coordinator_0002
Revises: coordinator_0001
"""

from __future__ import annotations

from alembic import op

revision = "coordinator_0002"
down_revision: str | None = "coordinator_0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.rename_table("suspensions", "quarantine_mirror")


def downgrade() -> None:
    op.rename_table("quarantine_mirror", "suspensions")
