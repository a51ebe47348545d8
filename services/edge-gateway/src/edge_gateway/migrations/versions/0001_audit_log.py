"""The service's hash-chained audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

from linegate.audit import create_audit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)


def downgrade() -> None:
    for table in ("audit_head", "audit_checkpoint", "audit_log"):
        op.drop_table(table)
