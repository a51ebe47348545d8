"""Audit log and OAuth2 clients.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from linegate.audit import create_audit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String, primary_key=True),
        sa.Column("secret_hash", sa.String, nullable=False),
        sa.Column("roles", sa.String, nullable=False),
        sa.Column("tenant", sa.String, nullable=True, index=True),
        sa.Column("device_id", sa.String, nullable=True),
        sa.Column("description", sa.String, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("oauth_client")
    for table in ("audit_head", "audit_checkpoint", "audit_log"):
        op.drop_table(table)
