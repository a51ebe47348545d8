"""Incidents: records, timeline, routing, runbooks, actions, regulatory clocks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

TABLES = (
    "incident_inbox",
    "maintenance_ticket",
    "incident_freeze",
    "incident_clock",
    "incident_action_approval",
    "incident_action",
    "incident_runbook_step",
    "runbook_version",
    "incident_snooze",
    "incident_assignment",
    "routing_rule",
    "incident_event",
    "incident",
)


def _incident_fk() -> "sa.Column[str]":
    return sa.Column(
        "incident_id", sa.String, sa.ForeignKey("incident.id"), nullable=False, index=True
    )


def upgrade() -> None:
    op.create_table(
        "incident",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("incident_type", sa.String, nullable=False, index=True),
        sa.Column("severity", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False, index=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("dedup_key", sa.String, nullable=False, index=True),
        sa.Column("open_key", sa.String, nullable=True, unique=True),
        sa.Column("line", sa.String, nullable=True, index=True),
        sa.Column("station", sa.String, nullable=True),
        sa.Column("device_id", sa.String, nullable=True, index=True),
        sa.Column("model", sa.String, nullable=True, index=True),
        sa.Column("version", sa.String, nullable=True),
        sa.Column("rollout_id", sa.String, nullable=True),
        sa.Column("external_ref", sa.String, nullable=True, index=True),
        sa.Column("risk_tier", sa.Integer, nullable=True),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("signal_count", sa.Integer, nullable=False),
        sa.Column("opened_at", TZ, nullable=False),
        sa.Column("last_signal_at", TZ, nullable=False),
        sa.Column("acknowledged_at", TZ, nullable=True),
        sa.Column("mitigated_at", TZ, nullable=True),
        sa.Column("closed_at", TZ, nullable=True),
        sa.Column("runbook_id", sa.String, nullable=True),
        sa.Column("runbook_version", sa.Integer, nullable=True),
        sa.Column("serious", sa.Boolean, nullable=True),
        sa.Column("nis2_significant", sa.Boolean, nullable=True),
        sa.Column("aware_at", TZ, nullable=True),
        sa.Column("triage", sa.JSON, nullable=True),
    )
    op.create_table(
        "incident_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _incident_fk(),
        sa.Column("at", TZ, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "routing_rule",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("incident_type", sa.String, nullable=False, index=True),
        sa.Column("queue", sa.String, nullable=False),
        sa.Column("min_severity", sa.String, nullable=False),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("acknowledge_within_minutes", sa.Integer, nullable=False),
        sa.Column("escalation", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String, nullable=False),
        sa.UniqueConstraint("incident_type", "queue"),
    )
    op.create_table(
        "incident_assignment",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _incident_fk(),
        sa.Column("rule_id", sa.String, nullable=True),
        sa.Column("queue", sa.String, nullable=False),
        sa.Column("owner", sa.String, nullable=True),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("assigned_at", TZ, nullable=False),
        sa.Column("escalate_at", TZ, nullable=True, index=True),
    )
    op.create_table(
        "incident_snooze",
        sa.Column("dedup_key", sa.String, primary_key=True),
        sa.Column("until", TZ, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("suppressed", sa.Integer, nullable=False),
        sa.Column("last_suppressed_at", TZ, nullable=True),
    )
    op.create_table(
        "runbook_version",
        sa.Column("runbook_id", sa.String, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("digest", sa.String, nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
    )
    op.create_table(
        "incident_runbook_step",
        sa.Column("incident_id", sa.String, sa.ForeignKey("incident.id"), primary_key=True),
        sa.Column("step_id", sa.String, primary_key=True),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "incident_action",
        sa.Column("id", sa.String, primary_key=True),
        _incident_fk(),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("step_id", sa.String, nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("proposed_by", sa.String, nullable=False),
        sa.Column("proposed_at", TZ, nullable=False),
        sa.Column("required_approvals", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False, index=True),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("result_at", TZ, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
    )
    op.create_table(
        "incident_action_approval",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "action_id",
            sa.String,
            sa.ForeignKey("incident_action.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("approver", sa.String, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.UniqueConstraint("action_id", "approver"),
    )
    op.create_table(
        "incident_clock",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _incident_fk(),
        sa.Column("regime", sa.String, nullable=False),
        sa.Column("report", sa.String, nullable=False),
        sa.Column("due_at", TZ, nullable=False, index=True),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("submitted_at", TZ, nullable=True),
        sa.Column("submitted_by", sa.String, nullable=True),
        sa.Column("reference", sa.String, nullable=True),
    )
    op.create_table(
        "incident_freeze",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _incident_fk(),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("frozen_by", sa.String, nullable=False),
        sa.Column("frozen_at", TZ, nullable=False),
        sa.Column("released_by", sa.String, nullable=True),
        sa.Column("released_at", TZ, nullable=True),
        sa.Column("release_reason", sa.Text, nullable=True),
    )
    op.create_table(
        "maintenance_ticket",
        sa.Column("id", sa.String, primary_key=True),
        _incident_fk(),
        sa.Column("asset", sa.String, nullable=False, index=True),
        sa.Column("level", sa.String, nullable=False),
        sa.Column("level_index", sa.Integer, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("escalate_at", TZ, nullable=True, index=True),
        sa.Column("acknowledged_at", TZ, nullable=True),
        sa.Column("acknowledged_by", sa.String, nullable=True),
        sa.Column("jwe", sa.Text, nullable=True),
        sa.Column("recipient_kid", sa.String, nullable=True),
        sa.Column("delivery", sa.String, nullable=False),
    )

    op.create_table(
        "incident_inbox",
        sa.Column("event_id", sa.String, primary_key=True),
        sa.Column("subject", sa.String, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
    )


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
