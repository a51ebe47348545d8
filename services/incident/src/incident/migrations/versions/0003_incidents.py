"""Incidents: records, timeline, routing, runbooks, actions, regulatory clocks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables are added here as the incident module lands."""


def downgrade() -> None:
    """Nothing to drop yet."""
