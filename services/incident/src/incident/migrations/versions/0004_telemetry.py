"""Telemetry ingest, monitor windows, the post-market monitoring log, operator feedback.

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
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "postmarket_event",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=True),
        sa.Column("incident_id", sa.String(128), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("version", sa.String(100), nullable=True),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("station", sa.String(64), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_postmarket_incident", "postmarket_event", ["incident_id", "id"])
    op.create_index("ix_postmarket_model_version", "postmarket_event", ["model", "version", "id"])
    op.create_index("ix_postmarket_device", "postmarket_event", ["device_id", "id"])
    op.create_index("ix_postmarket_line", "postmarket_event", ["line", "id"])
    op.create_index("ix_postmarket_occurred", "postmarket_event", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("postmarket_event")
