"""Telemetry ingest, monitor windows, the post-market monitoring log, operator feedback.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables are added here as the telemetry module lands."""


def downgrade() -> None:
    """Nothing to drop yet."""
