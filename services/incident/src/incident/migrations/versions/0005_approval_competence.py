"""What the competence register said about each approver of a corrective action.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incident_action_approval") as batch:
        batch.add_column(sa.Column("competence", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incident_action_approval") as batch:
        batch.drop_column("competence")
