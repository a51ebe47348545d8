"""Rollouts, their devices, per-device inference KPIs, maintenance calendars.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _counters() -> list[sa.Column[Any]]:
    return [
        sa.Column("inferences", sa.Integer, nullable=False),
        sa.Column("rejects", sa.Integer, nullable=False),
        sa.Column("manual", sa.Integer, nullable=False),
        sa.Column("confidence_sum", sa.Float, nullable=False),
        sa.Column("confidence_n", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("model", sa.String, nullable=False, index=True),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("release_id", sa.String, sa.ForeignKey("release.id"), nullable=False),
        sa.Column("selector", sa.JSON, nullable=False),
        sa.Column("stages", sa.JSON, nullable=False),
        sa.Column("device_timeout_seconds", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("state", sa.String, nullable=False, index=True),
        sa.Column("resume_state", sa.String, nullable=True),
        sa.Column("stage_index", sa.Integer, nullable=False),
        sa.Column("stage_started_at", TZ, nullable=True),
        sa.Column("evaluation", sa.JSON, nullable=True),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("abort_reason", sa.Text, nullable=True),
        sa.Column("incident_id", sa.String, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "rollout_device",
        sa.Column("rollout_id", sa.String, sa.ForeignKey("rollout.id"), primary_key=True),
        sa.Column("device_id", sa.String, sa.ForeignKey("device.id"), primary_key=True, index=True),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("previous_release_id", sa.String, sa.ForeignKey("release.id"), nullable=True),
        sa.Column("assigned_at", TZ, nullable=True),
        sa.Column("late_since", TZ, nullable=True),
        sa.Column("reported_at", TZ, nullable=True),
        sa.Column("last_report", sa.Text, nullable=True),
        sa.Column("selftest_failed", sa.Boolean, nullable=False),
        sa.Column("rollback_error", sa.Text, nullable=True),
        *_counters(),
    )
    op.create_table(
        "device_kpi",
        sa.Column("device_id", sa.String, sa.ForeignKey("device.id"), primary_key=True),
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("version", sa.String, primary_key=True),
        *_counters(),
        sa.Column("first_at", TZ, nullable=False),
        sa.Column("last_at", TZ, nullable=False),
    )
    op.create_table(
        "maintenance_calendar",
        sa.Column("plant", sa.String, primary_key=True),
        sa.Column("line", sa.String, primary_key=True),
        sa.Column("windows", sa.JSON, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String, nullable=False),
    )


def downgrade() -> None:
    for table in ("maintenance_calendar", "device_kpi", "rollout_device", "rollout"):
        op.drop_table(table)
