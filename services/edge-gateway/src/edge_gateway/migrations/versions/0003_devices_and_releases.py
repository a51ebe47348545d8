"""Devices, distributed releases, desired state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "device",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("plant", sa.String, nullable=False),
        sa.Column("line", sa.String, nullable=False, index=True),
        sa.Column("station", sa.String, nullable=False),
        sa.Column("hardware", sa.String, nullable=False),
        sa.Column("execution_providers", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("public_nkey", sa.String, nullable=False, unique=True),
        sa.Column("last_state", sa.String, nullable=True),
        sa.Column("last_detail", sa.Text, nullable=True),
        sa.Column("last_seen", TZ, nullable=True),
        sa.Column("active_model", sa.String, nullable=True),
        sa.Column("active_version", sa.String, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )
    op.create_table(
        "release",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("model", sa.String, nullable=False, index=True),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("security_version", sa.Integer, nullable=False),
        sa.Column("artefact_digest", sa.String, nullable=False),
        sa.Column("manifest_digest", sa.String, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("metadata_version", sa.Integer, nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("revoked_reason", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("model", "version"),
    )
    op.create_table(
        "desired_state",
        sa.Column("device_id", sa.String, sa.ForeignKey("device.id"), primary_key=True),
        sa.Column("release_id", sa.String, sa.ForeignKey("release.id"), nullable=False, index=True),
        sa.Column("rollback", sa.JSON, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String, nullable=False),
    )


def downgrade() -> None:
    for table in ("desired_state", "release", "device"):
        op.drop_table(table)
