"""Competence register; approvals record the training that made the approver eligible.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "competence_record",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("person", sa.String, nullable=False, index=True),
        sa.Column("role", sa.String, nullable=False, index=True),
        sa.Column(
            "system_id", sa.String, sa.ForeignKey("ai_system.id"), nullable=False, index=True
        ),
        sa.Column("course", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("trained_at", TZ, nullable=False),
        sa.Column("valid_until", TZ, nullable=False),
        sa.Column("recorded_by", sa.String, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("revoked_by", sa.String, nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
    )
    with op.batch_alter_table("approval") as batch:
        batch.add_column(sa.Column("competence_record_id", sa.String, nullable=True))
        batch.add_column(sa.Column("flags", sa.JSON, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("approval") as batch:
        batch.drop_column("flags")
        batch.drop_column("competence_record_id")
    op.drop_table("competence_record")
