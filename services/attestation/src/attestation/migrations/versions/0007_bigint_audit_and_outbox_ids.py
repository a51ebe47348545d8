"""64-bit audit sequence numbers and outbox ids on PostgreSQL (no change on SQLite).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from alembic import op

from linegate.audit import narrow_audit_sequences, widen_audit_sequences
from linegate.outbox import narrow_outbox_ids, widen_outbox_ids

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    widen_audit_sequences(op)
    widen_outbox_ids(op)


def downgrade() -> None:
    narrow_outbox_ids(op)
    narrow_audit_sequences(op)
