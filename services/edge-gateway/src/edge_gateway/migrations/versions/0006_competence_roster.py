"""Override rosters (the registry's competence register) signed into devices' desired state.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "competence_roster",
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("system_id", sa.String, nullable=False),
        sa.Column("nist_tier", sa.Integer, nullable=True),
        sa.Column("override", sa.JSON, nullable=False),
        sa.Column("fetched_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("competence_roster")
