"""Transactional outbox for NATS events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

from linegate.outbox import create_outbox_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_table(op)


def downgrade() -> None:
    op.drop_table("outbox")
